"""ai_assist.admin: staff list and search every tenant's transcripts; nobody adds, edits or deletes one."""
from __future__ import annotations

import uuid

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from ai_assist.models import Transcript


def _row(user: str, tenant: str, outcome: str) -> Transcript:
    return Transcript.objects.create(id=uuid.uuid4().hex, user=user, tenant=tenant, prompt="p", answer="a",
                                     outcome=outcome, created_at=timezone.now())


def test_staff_list_and_search_transcripts_read_only() -> None:
    tag = uuid.uuid4().hex[:8]
    mine = _row(f"alice-{tag}", f"ta-{tag}", "ok")
    theirs = _row(f"bob-{tag}", f"tb-{tag}", "error")
    staff = User.objects.create_superuser(f"ops-{tag}", "ops@example.com", "pw")
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/ai_assist/transcript/", {"q": tag})
    assert page.status_code == 200
    assert mine.id in page.content.decode() and theirs.id in page.content.decode()  # every tenant
    page = client.get("/admin/ai_assist/transcript/", {"q": f"tb-{tag}", "outcome__exact": "error"})
    assert theirs.id in page.content.decode() and mine.id not in page.content.decode()
    assert client.get(f"/admin/ai_assist/transcript/{mine.id}/change/").status_code == 200  # a view page
    assert client.get("/admin/ai_assist/transcript/add/").status_code == 403
    assert client.post(f"/admin/ai_assist/transcript/{mine.id}/change/", {"answer": "edited"}).status_code == 403
    assert client.post(f"/admin/ai_assist/transcript/{mine.id}/delete/", {"post": "yes"}).status_code == 403
    mine.refresh_from_db()
    assert mine.answer == "a"
