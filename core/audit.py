"""Audit rows for sensitive actions. Insert-only; never updated or deleted by the application."""
from __future__ import annotations

from typing import Any

from core.logs import request_id
from core.models import AuditLog


def record(actor: str, action: str, target: str = "", *, role: str = "", tenant: str = "",
           rid: str | None = None, **detail: Any) -> None:
    entry(actor, action, target, role=role, tenant=tenant, rid=rid, **detail).save(force_insert=True)


def entry(actor: str, action: str, target: str = "", *, role: str = "", tenant: str = "",
          rid: str | None = None, **detail: Any) -> AuditLog:
    """The row `record` saves, unsaved: `record_all` inserts several in one statement."""
    return AuditLog(actor=actor or "system", actor_role=role, tenant=tenant, action=action, target=target,
                    request_id=rid if rid is not None else request_id.get(), detail=detail)


def record_all(entries: list[AuditLog]) -> None:
    AuditLog.objects.bulk_create(entries)


async def arecord(actor: str, action: str, target: str = "", **kwargs: Any) -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(record, thread_sensitive=False)(actor, action, target, **kwargs)
