"""Claiming due outbox rows and recording what became of them (the database side of the worker).

Claim: rows pending and due are taken in one statement that pushes their `next_at` a lease ahead
and counts the attempt (Postgres: FOR UPDATE SKIP LOCKED, so processes never take the same row;
SQLite: its single writer serialises the claim). A process that dies holding rows leaves them due
again when the lease ends: a push is attempted until it is sent, expires or is given up.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from notify.models import DeadLetter, Device, Outbox, OutboxState
from notify.providers.base import Push, Target


@dataclass
class Job:
    id: int
    tenant: str
    user: str
    device: str
    platform: str
    kind: str
    attempts: int
    target: Target
    push: Push
    created_at: float


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def claim(now: float, limit: int, ids: list[int] | None = None) -> list[Job]:
    """Take up to `limit` due rows (or exactly `ids`, when due) for `lease` seconds."""
    table = Outbox._meta.db_table
    adapt = connection.ops.adapt_datetimefield_value
    lease = adapt(_dt(now + settings.NOTIFY_LEASE_S))
    pg = connection.vendor == "postgresql"
    params: list[Any] = [OutboxState.PENDING, adapt(_dt(now))]
    where = "state = %s AND next_at <= %s"
    if ids is not None:
        where += f" AND id IN ({', '.join(['%s'] * len(ids))})"
        params += ids
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET next_at = %s, attempts = attempts + 1 WHERE id IN ("
            f"SELECT id FROM {table} WHERE {where} ORDER BY next_at LIMIT %s"
            f"{' FOR UPDATE SKIP LOCKED' if pg else ''}) "
            "RETURNING id, tenant, \"user\", device_id, kind, payload, collapse_key, urgent, expires_at, "
            "attempts, created_at",
            [lease, *params, limit])
        rows = cursor.fetchall()
    if not rows:
        return []
    devices = {d.id: d for d in Device.objects.filter(id__in={r[3] for r in rows})}
    jobs: list[Job] = []
    for (rid, tenant, user, device_id, kind, payload, collapse, urgent, expires, attempts, created) in rows:
        d = devices.get(device_id)
        if d is None:
            continue  # removed meanwhile: its rows go with it (cascade)
        if isinstance(payload, str):
            import orjson

            payload = orjson.loads(payload)
        expires_at = _ts(expires)
        jobs.append(Job(int(rid), tenant, user, device_id, d.platform, kind, int(attempts),
                        Target(d.platform, d.token, dict(d.keys or {}), d.app),
                        Push(kind, payload.get("title", ""), payload.get("body", ""),
                             {k: str(v) for k, v in (payload.get("data") or {}).items()}, collapse,
                             expires_at, bool(urgent)),
                        _ts(created)))
    return jobs


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp() if value.tzinfo else value.replace(tzinfo=UTC).timestamp()
    # SQLite returns the stored text through raw SQL.
    parsed = datetime.fromisoformat(str(value))
    return parsed.timestamp() if parsed.tzinfo else parsed.replace(tzinfo=UTC).timestamp()


@dataclass
class Done:
    """What became of one claimed job: a final state, or a retry time."""

    job: Job
    state: str  # an OutboxState, or "retry"
    reason: str = ""
    retry_at: float = 0.0
    remove_device: bool = False


def record(done: list[Done], now: float) -> None:
    """Write the outcomes of a batch in a few statements (sent rows in one)."""
    if not done:
        return
    at = _dt(now)
    by_state: dict[str, list[int]] = {}
    for d in done:
        if d.state not in ("retry", OutboxState.DEAD):
            by_state.setdefault(d.state, []).append(d.job.id)
    with transaction.atomic():
        for state, ids in by_state.items():
            # Only rows still pending: a row cancelled or replaced meanwhile keeps that state.
            Outbox.objects.filter(id__in=ids, state=OutboxState.PENDING).update(state=state, done_at=at)
        for d in done:
            if d.state == "retry":
                Outbox.objects.filter(id=d.job.id, state=OutboxState.PENDING).update(
                    next_at=_dt(d.retry_at), last_error=d.reason[:200])
            elif d.state == OutboxState.DEAD:
                if Outbox.objects.filter(id=d.job.id, state=OutboxState.PENDING).update(
                        state=OutboxState.DEAD, done_at=at, last_error=d.reason[:200]):
                    DeadLetter.objects.create(outbox_id=d.job.id, tenant=d.job.tenant, user=d.job.user,
                                              device_id=d.job.device, platform=d.job.platform, kind=d.job.kind,
                                              collapse_key=d.job.push.collapse_key, attempts=d.job.attempts,
                                              reason=d.reason[:200])
        gone = [d.job.device for d in done if d.remove_device]
        if gone:
            Device.objects.filter(id__in=gone).delete()  # its other rows go with it
