"""rooms.admin: staff read jobs, bids and calls without editing them; cancelling jobs goes through the action."""
from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.test import Client

from core.models import AuditLog
from hub.models import Publication
from rooms.models import Bid, Job
from tests.support import uid


def _job(tenant: str, status: str = "open") -> Job:
    return Job.objects.create(tenant=tenant, owner=uid("o"), owner_role="customer", title="Fix the tap",
                              category="plumbing", lat=51.5, lng=-0.1, status=status)


def _staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(f"ops-{uuid.uuid4().hex[:8]}", "ops@example.com", "pw"))
    return client


def test_staff_read_jobs_and_bids_but_never_edit_them() -> None:
    job = _job(uid("t"))
    bid = Bid.objects.create(job=job, provider=uid("p"), provider_role="provider", amount=500, currency="GBP")
    client = _staff()
    assert job.id in client.get("/admin/rooms/job/", {"q": job.id}).content.decode()
    assert client.get(f"/admin/rooms/job/{job.id}/change/").status_code == 200  # a view page
    assert client.get("/admin/rooms/job/add/").status_code == 403
    assert client.post(f"/admin/rooms/job/{job.id}/change/", {"status": "completed"}).status_code == 403
    assert client.post(f"/admin/rooms/job/{job.id}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"/admin/rooms/bid/{bid.id}/change/", {"amount": 1}).status_code == 403
    for page in ("bid", "jobcomment", "jobquery", "call"):
        assert client.get(f"/admin/rooms/{page}/add/").status_code == 403
    job.refresh_from_db()
    bid.refresh_from_db()
    assert (job.status, bid.amount) == ("open", 500)


def test_cancelling_jobs_in_the_admin_is_the_cancel_action() -> None:
    tenant = uid("t")
    live, done = _job(tenant), _job(tenant, status="completed")
    client = _staff()
    resp = client.post("/admin/rooms/job/", {"action": "cancel_jobs", "_selected_action": [live.id, done.id],
                                             "reason": "duplicate posting"}, follow=True)
    assert resp.status_code == 200
    text = resp.content.decode()
    assert "Cancelled 1 job(s)." in text and f"{done.id}: cannot cancel a job that is completed" in text
    live.refresh_from_db()
    done.refresh_from_db()
    assert (live.status, live.cancel_reason, done.status) == ("cancelled", "duplicate posting", "completed")
    # The action's audit row (staff act as an admin of the job's tenant) and publication on the job's stream.
    row = AuditLog.objects.get(action="jobs.cancel", target=f"job:{live.id}")
    assert (row.actor_role, row.tenant, live.cancelled_by) == ("admin", tenant, row.actor)
    pub = Publication.objects.get(channel__endswith=f"/job:{live.id}")
    assert pub.data is not None and '"status":"cancelled"' in pub.data
    # The action's rules hold here too: a reason is required.
    again = _job(tenant)
    resp = client.post("/admin/rooms/job/", {"action": "cancel_jobs", "_selected_action": [again.id],
                                             "reason": ""}, follow=True)
    assert "reason must be a non-empty string" in resp.content.decode()
    again.refresh_from_db()
    assert again.status == "open"
