"""Transcripts: written after each request (redacted), exported, erased and purged.

Rows are written by one background thread per process in batches (one INSERT per batch), so 200
concurrent streams do not queue 200 single-row transactions on the thread pool. `record()` returns
an awaitable that resolves once the row is committed.

Every text field goes through `redact.redact` before it is queued: prompt, context and answer.
Keys never reach this module: providers and the relay hand over names, counts and error kinds only.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from ai_assist.models import Transcript
from ai_assist.redact import redact

log = logging.getLogger("ai_assist.transcripts")

_BATCH = 500


@dataclass
class _Item:
    row: Transcript
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[bool] | None


def build(*, assist: str, user: str, tenant: str, room: str, prompt: str, context: list[dict[str, Any]],
          answer: str, provider: str, model: str, attempts: int, fallbacks: list[dict[str, Any]],
          tokens_in: int, tokens_out: int, latency_ms: int, first_token_ms: int | None, outcome: str,
          error_code: str = "", finish: str = "") -> Transcript:
    return Transcript(
        id=assist, user=user, tenant=tenant, room=room or "", prompt=redact(prompt),
        context=[{"from": m.get("from"), "text": redact(str(m.get("text", "")))} for m in context],
        answer=redact(answer), provider=provider, model=model, attempts=attempts, fallbacks=fallbacks,
        tokens_in=tokens_in, tokens_out=tokens_out, latency_ms=latency_ms, first_token_ms=first_token_ms,
        outcome=outcome, error_code=error_code, finish=finish, created_at=timezone.now())


class _Writer:
    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="ai-transcripts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            items = [self.queue.get()]
            while len(items) < _BATCH:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            ok = self._write([i.row for i in items])
            for item in items:
                if item.loop is not None and item.future is not None and not item.loop.is_closed():
                    item.loop.call_soon_threadsafe(_resolve, item.future, ok)

    @staticmethod
    def _write(rows: list[Transcript]) -> bool:
        for attempt in range(3):
            try:
                close_old_connections()
                with transaction.atomic():
                    Transcript.objects.bulk_create(rows, ignore_conflicts=True)
                return True
            except Exception as exc:  # noqa: BLE001 - a transcript must never take the relay down
                log.warning("transcript write failed (%s), attempt %d", type(exc).__name__, attempt + 1)
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    pass
        return False


def _resolve(fut: asyncio.Future[bool], ok: bool) -> None:
    if not fut.done():
        fut.set_result(ok)


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _get_writer() -> _Writer:
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = _Writer()
        return _writer


def record(row: Transcript) -> asyncio.Future[bool]:
    """Queue a row; the future (on the running loop) resolves True once committed, False if it failed."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()
    _get_writer().queue.put(_Item(row, loop, fut))
    return fut


# --- retention, export, erasure ---------------------------------------------------------------

def purge(days: int) -> int:
    """Delete transcripts older than `days` days; returns how many."""
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = Transcript.objects.filter(created_at__lt=cutoff).delete()
    return int(deleted)


def _user_id(user: Any) -> str:
    # Accepts a user id string or any object with `.user`/`.id`/`.pk` (a Caller, a Django user).
    if isinstance(user, str):
        return user
    for attr in ("user", "id", "pk"):
        value = getattr(user, attr, None)
        if value is not None:
            return str(value)
    return str(user)


def export_user_transcripts(user: Any) -> list[dict[str, object]]:
    """Every transcript of one user, oldest first, as plain dicts (for a data-subject export)."""
    return [t.as_dict() for t in Transcript.objects.filter(user=_user_id(user)).order_by("created_at", "id")]


def erase_user_transcripts(user: Any) -> int:
    """Delete every transcript of one user; returns how many."""
    deleted, _ = Transcript.objects.filter(user=_user_id(user)).delete()
    return int(deleted)
