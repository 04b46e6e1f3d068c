"""Transcripts: written after each request (redacted), exported, erased and purged.

`record(row)` first appends the row to this process's journal file (one write(2), synchronously,
on the caller's thread), then queues it for the database; the relay sends the final push after
`record()` returned, so the row of every answer a user was told about is on disk before the user
hears about it and survives the process being killed (kill -9, OOM, crash) from then on.

The database write is one background thread per process, in batches (one INSERT per batch), so 200
concurrent streams do not queue 200 single-row transactions on the thread pool and the push does
not wait for a commit. A batch the database refuses is retried with backoff until it goes in; the
rows are in the journal meanwhile. Journal lines are dropped once their rows are committed (the
file is emptied when nothing is outstanding, and rotated to a new segment under constant load).

Journal files of processes that are gone are inserted by `recover_journals()` at start-up (and by
a periodic sweep). A process holds an exclusive flock on each of its journal files while it lives,
so only files of dead processes are taken, and every insert ignores ids already there (the assist
id is the primary key): replaying a file twice, or after part of it was written, writes nothing
twice.

Every text field goes through `redact.redact` before it is journaled: prompt, context and answer.
Keys never reach this module: providers and the relay hand over names, counts and error kinds only.
"""
from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import connection
from django.db.models.constants import OnConflict
from django.utils import timezone

from ai_assist import config
from ai_assist.models import Transcript
from ai_assist.redact import redact
from core.privacy import ERASED

log = logging.getLogger("ai_assist.transcripts")

_BATCH = 500
_SEGMENT_ROWS = 10_000  # a journal segment still busy after this many rows is sealed and a new one begun
_RETRY_MAX_S = 30.0
_CONCRETE = list(Transcript._meta.concrete_fields)
_FIELDS = [f.attname for f in _CONCRETE]


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


def _after_erasures(rows: list[Transcript]) -> list[Transcript]:
    """Rows made before their user was erased are dropped, and an erased user's messages in other
    rows' context lose their text (as the erasure did to the rows already stored). A row can reach
    the database after an erasure that ran while it waited: in a journal during a database outage,
    or in a dead process's journal replayed later. One query per batch, on the erasures' audit rows."""
    from core.models import AuditLog

    people = {r.user for r in rows} | {m.get("from") for r in rows for m in r.context
                                       if isinstance(m, dict) and isinstance(m.get("from"), str)}
    # user -> (time of their latest erasure, its pseudonym)
    erased: dict[str, tuple[datetime, str]] = {}
    for target, at, detail in AuditLog.objects.filter(
            action="gdpr.erase", target__in=[f"user:{p}" for p in people]).values_list("target", "at", "detail"):
        user = target.removeprefix("user:")
        if user not in erased or at > erased[user][0]:
            name = detail.get("pseudonym") if isinstance(detail, dict) else None
            erased[user] = (at, name if isinstance(name, str) else ERASED)
    if not erased:
        return rows
    kept = []
    for r in rows:
        if r.user in erased and r.created_at <= erased[r.user][0]:
            continue
        context = []
        for m in r.context:
            who = m.get("from") if isinstance(m, dict) else None
            gone = erased.get(who) if isinstance(who, str) else None
            context.append({**m, "from": gone[1], "text": ""} if gone and r.created_at <= gone[0] else m)
        r.context = context
        kept.append(r)
    return kept


def _insert(rows: list[Transcript]) -> None:
    # One INSERT ... ON CONFLICT DO NOTHING in autocommit: a single round trip (bulk_create would add
    # BEGIN and COMMIT), and ids already there are skipped, so a row is never written twice.
    rows = _after_erasures(rows)
    for start in range(0, len(rows), _BATCH):
        Transcript._base_manager._insert(rows[start:start + _BATCH], fields=_CONCRETE,  # type: ignore[attr-defined]
                                         on_conflict=OnConflict.IGNORE)


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
            # Empty, or torn by a crash mid-write: that answer's final push never went out.
            continue
    return rows


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


@dataclass(eq=False)
class _Segment:
    """One journal file of this process, flocked from creation until it is removed."""

    path: Path
    fd: int
    lines: int = 0
    outstanding: set[str] = field(default_factory=set)  # ids appended here and not committed yet

    @classmethod
    def create(cls, directory: Path) -> _Segment:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        # Locked under a name recovery does not look at, then renamed: never seen unlocked.
        tmp = path.with_suffix(".new")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(tmp, path)
        except OSError:
            os.close(fd)
            raise
        return cls(path, fd)

    def remove(self) -> None:
        try:
            self.path.unlink()
        finally:
            os.close(self.fd)


class _Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.current: _Segment | None = None
        self.sealed: list[_Segment] = []

    def append(self, row: Transcript) -> _Segment:
        """Write the row to the current segment (raises OSError when the disk refuses it)."""
        line = _to_line(row)
        with self.lock:
            seg = self.current
            if seg is None or seg.lines >= _SEGMENT_ROWS:
                if seg is not None:
                    self.sealed.append(seg)
                seg = self.current = _Segment.create(self.directory)
            end = os.lseek(seg.fd, 0, os.SEEK_END)
            try:
                data = line
                while data:
                    data = data[os.write(seg.fd, data):]
            except OSError:
                # Cut a partial line off, or the next row would be appended to it and unreadable too.
                try:
                    os.ftruncate(seg.fd, end)
                except OSError:
                    pass
                raise
            seg.lines += 1
            seg.outstanding.add(row.id)
            return seg

    def committed(self, done: list[tuple[_Segment, str]]) -> None:
        """Forget committed rows: empty the current segment, remove sealed ones, once nothing is left."""
        with self.lock:
            for seg, rid in done:
                seg.outstanding.discard(rid)
            cur = self.current
            if cur is not None and cur.lines and not cur.outstanding:
                os.ftruncate(cur.fd, 0)
                cur.lines = 0
            for seg in [s for s in self.sealed if not s.outstanding]:
                self.sealed.remove(seg)
                seg.remove()

    def paths(self) -> set[Path]:
        with self.lock:
            return {s.path for s in self.sealed} | ({self.current.path} if self.current else set())


@dataclass
class _Item:
    row: Transcript
    segment: _Segment | None  # None: the journal refused it, the database is all it has
    loop: asyncio.AbstractEventLoop | None
    future: asyncio.Future[bool] | None


class _Writer:
    def __init__(self, journal: _Journal) -> None:
        self.journal = journal
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
            self._write([i.row for i in items])
            try:
                self.journal.committed([(i.segment, i.row.id) for i in items if i.segment is not None])
            except OSError as exc:  # the rows are in the database; a stale journal only costs a replay
                log.warning("transcript journal not trimmed (%s)", type(exc).__name__)
            for item in items:
                if item.loop is not None and item.future is not None and not item.loop.is_closed():
                    item.loop.call_soon_threadsafe(_resolve, item.future, True)

    @staticmethod
    def _write(rows: list[Transcript]) -> None:
        """Insert the batch, retrying with backoff until the database takes it (the journal has it meanwhile)."""
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                _insert(rows)  # a broken connection fails here and is closed below; no health-check query
                return
            except Exception as exc:  # noqa: BLE001 - a transcript must never take the relay down
                if attempt in (1, 3) or attempt % 20 == 0:
                    log.warning("transcript write failed (%s), attempt %d; retrying", type(exc).__name__, attempt)
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    pass
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)


def journal_dir() -> Path:
    """AI_TRANSCRIPT_JOURNAL_DIR/<database>: a journal is only ever replayed into its own database."""
    db = connection.settings_dict
    key = hashlib.sha256(f"{db.get('ENGINE')}|{db.get('HOST')}|{db.get('PORT')}|{db.get('NAME')}".encode())
    return Path(config.get().transcript_journal_dir) / key.hexdigest()[:16]


def _resolve(fut: asyncio.Future[bool], ok: bool) -> None:
    if not fut.done():
        fut.set_result(ok)


_writer: _Writer | None = None
_writer_lock = threading.Lock()


def _get_writer() -> _Writer:
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = _Writer(_Journal(journal_dir()))
        return _writer


def record(row: Transcript) -> tuple[bool, asyncio.Future[bool]]:
    """Journal the row now, then queue it for the database.

    Returns (journaled, committed): whether the row is on disk already (False only when the journal
    refused it: logged, and the database write is then all there is), and a future on the running
    loop that resolves (True) once the row is committed.
    """
    writer = _get_writer()
    segment: _Segment | None = None
    try:
        segment = writer.journal.append(row)
    except OSError as exc:
        log.error("transcript %s not journaled (%s): it is lost if this process dies before the database "
                  "write", row.id, type(exc).__name__)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()
    writer.queue.put(_Item(row, segment, loop, fut))
    return segment is not None, fut


def recover_journals() -> int:
    """Insert the journal files of processes that are gone (their flock is free); returns rows read."""
    directory = journal_dir()
    own = _writer.journal.paths() if _writer is not None else set()
    total = 0
    paths = sorted(directory.glob("*.jsonl")) + sorted(directory.glob("*.new")) if directory.is_dir() else []
    for path in paths:
        if path in own:
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
                    continue  # recovered and removed by another process meanwhile
            except FileNotFoundError:
                continue
            # (A .new file is one whose process died before naming it: it has no rows.)
            rows = _from_lines(_read_all(fd))
            _insert(rows)
            path.unlink()
            total += len(rows)
        finally:
            os.close(fd)
    if total:
        log.info("%d journaled transcripts recovered", total)
    return total
