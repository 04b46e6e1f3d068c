"""Audit rows: append-only in code and read-only (but readable) in the Django admin."""
from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from core import audit
from core.models import AuditLog


def test_record_inserts_a_row() -> None:
    actor = f"a{uuid.uuid4().hex[:10]}"
    audit.record(actor, "test.action", "chat:r1", role="admin", tenant="t1", rid="rid-1", n=3)
    row = AuditLog.objects.get(actor=actor)
    assert (row.action, row.target, row.actor_role, row.tenant, row.request_id, row.detail) == (
        "test.action", "chat:r1", "admin", "t1", "rid-1", {"n": 3})
    assert row.at is not None


def test_rows_are_append_only() -> None:
    actor = f"a{uuid.uuid4().hex[:10]}"
    audit.record(actor, "test.append_only", "x")
    row = AuditLog.objects.get(actor=actor)
    row.action = "tampered"
    with pytest.raises(RuntimeError, match="append-only"):
        row.save()
    with pytest.raises(RuntimeError, match="append-only"):
        row.delete()
    assert AuditLog.objects.get(pk=row.pk).action == "test.append_only"


def test_database_refuses_bulk_update_and_delete() -> None:
    from django.db import DatabaseError, transaction

    actor = f"a{uuid.uuid4().hex[:10]}"
    audit.record(actor, "test.trigger", "x")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(actor=actor).update(action="tampered")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(actor=actor)._raw_delete(AuditLog.objects.db)
    assert AuditLog.objects.get(actor=actor).action == "test.trigger"


def test_admin_changelist_renders_read_only() -> None:
    name = f"admin{uuid.uuid4().hex[:10]}"
    user = get_user_model().objects.create_superuser(name, f"{name}@example.com", "pw-not-used-0123456789")
    actor = f"a{uuid.uuid4().hex[:10]}"
    audit.record(actor, "gdpr.export", f"user:{actor}", role="operator")
    row = AuditLog.objects.get(actor=actor)
    client = Client()
    client.force_login(user)
    resp = client.get("/admin/core/auditlog/", {"q": actor})
    assert resp.status_code == 200
    assert actor in resp.content.decode() and "gdpr.export" in resp.content.decode()
    detail = client.get(f"/admin/core/auditlog/{row.pk}/change/")
    assert detail.status_code == 200  # viewable...
    assert b'name="_save"' not in detail.content  # ...but not editable
    assert client.get("/admin/core/auditlog/add/").status_code == 403
    assert client.get(f"/admin/core/auditlog/{row.pk}/delete/").status_code == 403
    # Anonymous users are sent to the login page.
    assert Client().get("/admin/core/auditlog/").status_code == 302
