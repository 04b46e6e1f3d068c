"""Transcripts: written after each request (redacted), exported, erased and purged.

Rows are written by one background thread per process in batches (one INSERT per batch), so 200
concurrent streams do not queue 200 single-row transactions on the thread pool. `record()` returns
an awaitable that resolves once the row is durable; the relay sends the final push only then.

Durable means committed to the database or, when the database refuses the batch (after a few
tries), appended and fsynced to this process's spill file in AI_TRANSCRIPT_SPILL_DIR. The writer
inserts its own spilled rows after its next successful batch; files of processes that died are
inserted by `recover_spilled()` (at start-up, and by a periodic sweep). A process holds an
exclusive flock on its spill file while it lives, so a file is only ever replayed by one process at
a time, and inserts ignore rows already there (the assist id is the key): nothing is written twice.

Every text field goes through `redact.redact` before it is queued: prompt, context and answer.
Keys never reach this module: providers and the relay hand over names, counts and error kinds only.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import queue
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from ai_assist import config
from ai_assist.models import Transcript
from ai_assist.redact import redact
from hub.tasks import every, on_start

log = logging.getLogger("ai_assist.transcripts")

_BATCH = 500
_FIELDS = [f.attname for f in Transcript._meta.concrete_fields]


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


def _insert(rows: list[Transcript]) -> None:
    with transaction.atomic():
        Transcript.objects.bulk_create(rows, batch_size=_BATCH, ignore_conflicts=True)


def _to_line(row: Transcript) -> bytes:
    data = {name: getattr(row, name) for name in _FIELDS}
    data["created_at"] = row.created_at.isoformat()
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def _from_lines(raw: bytes) -> list[Transcript]:
    rows = []
    for line in raw.split(b"\n"):
        try:
            data = json.loads(line)
            data["created_at"] = datetime.fromisoformat(data["created_at"])
            rows.append(Transcript(**{k: v for k, v in data.items() if k in _FIELDS}))
        except (ValueError, TypeError, KeyError):
            # Empty, or torn by a crash before its fsync returned: that answer's final push never went out.
            continue
    return rows


class _Spill:
    """This process's spill file, created on the first refused batch; flocked while the process lives."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        # Locked under a name recovery does not look at, then renamed: never seen unlocked.
        tmp = self.path.with_suffix(".new")
        self.fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        os.rename(tmp, self.path)
        _fsync_dir(directory)  # the file's name survives a crash too
        self.pending = False

    def append(self, rows: list[Transcript]) -> None:
        data = b"".join(_to_line(r) for r in rows)
        while data:
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)
        self.pending = True

    def replay(self) -> int:
        """Insert what this process spilled (the database took a batch again), then empty the file."""
        rows = _from_lines(_read_all(self.fd))
        _insert(rows)
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.pending = False
        return len(rows)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer:
    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.spill: _Spill | None = None
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

    def _write(self, rows: list[Transcript]) -> bool:
        """True once the rows are durable: committed, or (the database refusing them) spilled to disk."""
        for attempt in range(3):
            try:
                close_old_connections()
                _insert(rows)
                break
            except Exception as exc:  # noqa: BLE001 - a transcript must never take the relay down
                log.warning("transcript write failed (%s), attempt %d", type(exc).__name__, attempt + 1)
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    pass
        else:
            return self._spill_rows(rows)
        if self.spill is not None and self.spill.pending:
            try:
                n = self.spill.replay()
                log.info("%d spilled transcripts written", n)
            except Exception as exc:  # noqa: BLE001 - they stay in the file for the next batch
                log.warning("spilled transcripts not written yet (%s)", type(exc).__name__)
        return True

    def _spill_rows(self, rows: list[Transcript]) -> bool:
        try:
            if self.spill is None:
                self.spill = _Spill(Path(config.get().transcript_spill_dir))
            self.spill.append(rows)
        except OSError as exc:
            log.error("%d transcripts lost: the database and the spill file both refused them (%s)",
                      len(rows), type(exc).__name__)
            return False
        log.warning("%d transcripts spilled to %s until the database takes them", len(rows), self.spill.path.name)
        return True


def recover_spilled() -> int:
    """Insert the spill files of processes that are gone (their flock is free); returns rows read."""
    directory = Path(config.get().transcript_spill_dir)
    own = _writer.spill.path if _writer is not None and _writer.spill is not None else None
    total = 0
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        if path == own:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive and writes its rows itself
            try:
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    continue  # replayed and removed by another process meanwhile
            except FileNotFoundError:
                continue
            rows = _from_lines(_read_all(fd))
            _insert(rows)
            path.unlink()
            total += len(rows)
        finally:
            os.close(fd)
    if total:
        log.info("%d spilled transcripts recovered", total)
    return total


# Before a process serves, and now and then, so a dead process's rows do not wait for a restart.
on_start("ai_assist.transcripts")(recover_spilled)
every(60, "ai_assist.transcripts")(lambda now: recover_spilled())


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
