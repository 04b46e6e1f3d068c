"""Durable streams in the database: offsets, publications, idempotency keys, reads.

Two write paths share the SQL here:
- the group-commit Writer (one thread per process) for socket and HTTP publishes: every batch
  is one transaction, offsets assigned with one upsert per channel set, rows by COPY on Postgres;
- `append` for domain code inside its own transaction (a job state change and its publication
  commit together).
Offsets come from `hub_stream.top`, bumped under the row lock in the committing transaction, so
several processes publishing to one channel get distinct, gap-free offsets.

Domain code opens its transaction with `store.atomic()`: appends made inside are collected and get
their offsets (and, on Postgres, their rows) in ONE statement just before commit, the channels
bumped in sorted order. A transaction so holds the hot `hub_stream` rows (every provider's `user:`
channel) only for its last statement and the commit, always in the same order: no deadlocks, no
waits behind slow work. An append outside such a scope (inside a plain `transaction.atomic()`)
bumps its channel at once.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from core import tracing
from core.errors import INTERNAL, HubError, unavailable
from hub.pubs import Pub
from hub.subscriber import Completion

log = logging.getLogger("hub.store")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_epoch() -> str:
    return secrets.token_hex(4)


def _is_pg() -> bool:
    return connection.vendor == "postgresql"


def assign_offsets(cursor: Any, counts: dict[str, int]) -> dict[str, tuple[int, str]]:
    """Bump each channel's top by its count; returns channel -> (new top, epoch). Sorted: no deadlocks."""
    names = sorted(counts)
    values = ", ".join(["(%s, %s, %s, %s)"] * len(names))
    params: list[Any] = []
    created = now_ms()
    for name in names:
        params += [name, counts[name], new_epoch(), created]
    cursor.execute(
        f"INSERT INTO hub_stream (name, top, epoch, created_at) VALUES {values} "
        "ON CONFLICT (name) DO UPDATE SET top = hub_stream.top + excluded.top "
        "RETURNING name, top, epoch", params)
    return {row[0]: (int(row[1]), row[2]) for row in cursor.fetchall()}


def insert_rows(cursor: Any, rows: list[tuple[str, int, int, str | None, str]]) -> None:
    if _is_pg():
        with cursor.cursor.copy(
                'COPY hub_publication (channel, "offset", ts, sender, data) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
    else:
        cursor.executemany(
            'INSERT INTO hub_publication (channel, "offset", ts, sender, data) VALUES (%s, %s, %s, %s, %s)',
            rows)


def claim_keys(cursor: Any, keyed: list[tuple[str, str]], ts: int) -> dict[tuple[str, str], int | None]:
    """Claim idempotency keys. Returns key -> None for newly claimed, or the first offset if live."""
    cutoff = ts - settings.HUB_IDEMPOTENCY_S * 1000
    values = ", ".join(["(%s, %s, 0, %s)"] * len(keyed))
    params: list[Any] = []
    for ch, key in keyed:
        params += [ch, key, ts]
    # A concurrent claim of the same key in another process waits here for that commit.
    cursor.execute(
        f'INSERT INTO hub_pubkey (channel, key, "offset", created_at) VALUES {values} '
        'ON CONFLICT (channel, key) DO UPDATE SET "offset" = 0, created_at = excluded.created_at '
        "WHERE hub_pubkey.created_at < %s RETURNING channel, key", params + [cutoff])
    claimed = {(r[0], r[1]) for r in cursor.fetchall()}
    out: dict[tuple[str, str], int | None] = {k: None for k in claimed}
    dups = [k for k in keyed if k not in claimed]
    if dups:
        cond = " OR ".join(["(channel = %s AND key = %s)"] * len(dups))
        cursor.execute(f'SELECT channel, key, "offset" FROM hub_pubkey WHERE {cond}',
                       [x for k in dups for x in k])
        for ch, key, off in cursor.fetchall():
            out[(ch, key)] = int(off)
    return out


def sender_key(sender: str | None, key: str) -> str:
    """Idempotency keys belong to their sender: the same key from two members of a channel is two
    keys, so nobody can swallow another's publish by guessing its key. Stored as a digest (48
    characters, within the column's 64) of the sender and the client's key."""
    return hashlib.blake2b(f"{sender or ''}\x00{key}".encode(), digest_size=24).hexdigest()


def set_key_offsets(cursor: Any, offsets: list[tuple[int, str, str]]) -> None:
    cursor.executemany('UPDATE hub_pubkey SET "offset" = %s WHERE channel = %s AND key = %s', offsets)


# --- domain path -----------------------------------------------------------------------------

_after_commit_hooks: list[Callable[[list[Pub]], None]] = []


def on_domain_commit(hook: Callable[[list[Pub]], None]) -> None:
    """The engine (or a broker in a process without one) learns of domain publications here."""
    _after_commit_hooks.append(hook)


# Hooks run INSIDE the committing transaction with the events appended to `user:<id>` channels,
# [(user, data, tenant)] in append order: a domain app (notifications) may write rows that commit,
# or roll back, with the events. Inside `atomic()` they run once, with every live event of the
# transaction, just before the offsets are assigned (one look-up for 50 notified providers, not
# 50); an append outside such a scope runs them with its one event. The tenant is the one the
# event happens in (EVENT_TENANT when it was appended), None when unknown.
UserEvent = tuple[str, Any, str | None]
_user_hooks: list[Callable[[list[UserEvent]], None]] = []
EVENT_TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("hub_event_tenant", default=None)


def on_user_append(hook: Callable[[list[UserEvent]], None]) -> None:
    if hook not in _user_hooks:
        _user_hooks.append(hook)


@contextmanager
def tenant_scope(tenant: str | None) -> Iterator[None]:
    """Appends inside happen in `tenant` (rpc calls set the caller's; sweeps set the record's)."""
    token = EVENT_TENANT.set(tenant)
    try:
        yield
    finally:
        EVENT_TENANT.reset(token)


def _user_event(channel: str, data: Any) -> UserEvent | None:
    """(user, data, tenant) of an append to a `user:` channel, else None; read at append time."""
    # Stored names are tenant-qualified (`<tenant>/user:<id>`, hub.channels): the tenant is the name's.
    tenant, sep, name = channel.partition("/")
    if not sep:
        tenant, name = EVENT_TENANT.get() or "", channel
    if not name.startswith("user:"):
        return None
    return name[5:], data, tenant or None


def _run_user_hooks(events: list[UserEvent]) -> None:
    if events:
        for hook in _user_hooks:
            hook(events)


# Hooks run inside the group commit's transaction for client publications on channels with a
# registered prefix (e.g. "chat:"), with [(channel, sender, sender's tenant or None, data)]. Each
# runs in a savepoint: a hook that fails is logged and undone, and the publications still commit.
_publish_hooks: list[tuple[str, Callable[[list[tuple[str, str | None, str | None, Any]]], None]]] = []
_publish_prefixes: tuple[str, ...] = ()


def on_publish(prefix: str, hook: Callable[[list[tuple[str, str | None, str | None, Any]]], None]) -> None:
    global _publish_prefixes
    if (prefix, hook) not in _publish_hooks:
        _publish_hooks.append((prefix, hook))
        _publish_prefixes = tuple({p for p, _h in _publish_hooks})


def _run_publish_hooks(items: list[tuple[str, str | None, str | None, Any]]) -> None:
    for prefix, hook in _publish_hooks:
        mine = [it for it in items if it[0].startswith(prefix)]
        if not mine:
            continue
        try:
            with transaction.atomic():
                hook(mine)
        except Exception:
            log.exception("publish hook for %s failed; the publications commit without it", prefix)


class _Scope(threading.local):
    # Appends of the open store.atomic() block on this thread (Django connections are per thread):
    # (on_commit marker, publication, its JSON, its user event if on a `user:` channel).
    pending: list[tuple[Callable[[], None], Pub, str, UserEvent | None]] | None = None


_scope = _Scope()


@contextmanager
def atomic() -> Iterator[None]:
    """`transaction.atomic()` for domain code; appends inside get their offsets just before commit.

    Nested inside another block it is a plain savepoint (the outermost scope flushes).
    """
    if _scope.pending is not None or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    _scope.pending = []
    try:
        with transaction.atomic():
            yield
            _flush(_scope.pending)
    finally:
        _scope.pending = None


def _flush(pending: list[tuple[Callable[[], None], Pub, str, UserEvent | None]]) -> None:
    if not pending or connection.needs_rollback:
        return  # nothing to publish, or the block rolls back (transaction.set_rollback)
    # An append inside a savepoint that rolled back lost its on_commit entry: it is not published.
    live = {id(entry[1]) for entry in connection.run_on_commit}
    kept = [entry for entry in pending if id(entry[0]) in live]
    if not kept:
        return
    if _user_hooks:
        _run_user_hooks([event for _h, _p, _b, event in kept if event is not None])
    items = [(pub, body) for _h, pub, body, _e in kept]
    counts: dict[str, int] = {}
    for pub, _body in items:
        counts[pub.channel] = counts.get(pub.channel, 0) + 1
    pubs = [pub for pub, _body in items]
    with _client_cursor() as cursor:
        if _is_pg():
            # The last statement of the outermost block: the transaction commits in the same round
            # trip, so the channels' counter rows are held for one exchange with the server, not
            # two plus a wait for the interpreter lock in between. Django's own commit then finds
            # nothing to do.
            tops = _assign_and_insert(cursor, counts, items, commit=True)
        else:
            tops = assign_offsets(cursor, counts)
        next_off = {ch: top - counts[ch] + 1 for ch, (top, _e) in tops.items()}
        for pub in pubs:
            off = next_off[pub.channel]
            next_off[pub.channel] = off + 1
            pub.offset, pub.epoch = off, tops[pub.channel][1]
        if not _is_pg():
            insert_rows(cursor, [(p.channel, p.offset, p.ts, p.sender, body) for p, body in items])
    transaction.on_commit(lambda: _notify(pubs))


def _client_cursor() -> Any:
    """A cursor that quotes parameters into the statement text: the only kind that may send two
    statements (the insert and its COMMIT) in one query, whatever binding the connection uses."""
    if not _is_pg():
        return connection.cursor()
    from django.db.backends.postgresql.base import Cursor

    connection.ensure_connection()
    raw = Cursor(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


def _assign_and_insert(cursor: Any, counts: dict[str, int], items: list[tuple[Pub, str]], commit: bool = False
                       ) -> dict[str, tuple[int, str]]:
    """Postgres: bump the channels (sorted) and insert the rows in one statement, one round trip;
    with `commit`, COMMIT follows in the same query (if the statement fails, it never runs).

    The channels and the rows travel as two JSON arrays: one fixed statement text whatever their
    number (a placeholder per value made the driver re-parse a new text on every call). A row's
    offset is its channel's new top minus how many of the channel's rows follow it here.
    """
    created = now_ms()
    streams = [[name, counts[name], new_epoch()] for name in sorted(counts)]
    left = dict(counts)
    rows = []
    for pub, body in items:
        left[pub.channel] -= 1
        rows.append([pub.channel, left[pub.channel], pub.ts, pub.sender, body])
    cursor.execute(_ASSIGN_AND_INSERT + ("; COMMIT" if commit else ""),
                   [created, orjson.dumps(streams).decode(), orjson.dumps(rows).decode()])
    return {row[0]: (int(row[1]), row[2]) for row in cursor.fetchall()}


# json_array_elements keeps the array order: the channels' rows are locked sorted, no deadlocks.
_ASSIGN_AND_INSERT = (
    "WITH s AS (INSERT INTO hub_stream (name, top, epoch, created_at) "
    "SELECT n.name, n.n, n.epoch, %s FROM (SELECT e->>0 AS name, (e->>1)::bigint AS n, e->>2 AS epoch "
    "FROM json_array_elements(%s::json) AS e) AS n "
    "ON CONFLICT (name) DO UPDATE SET top = hub_stream.top + excluded.top RETURNING name, top, epoch), "
    'p AS (INSERT INTO hub_publication (channel, "offset", ts, sender, data) '
    "SELECT v.channel, s.top - v.back, v.ts, v.sender, v.data FROM (SELECT e->>0 AS channel, "
    "(e->>1)::bigint AS back, (e->>2)::bigint AS ts, e->>3 AS sender, e->>4 AS data "
    "FROM json_array_elements(%s::json) AS e) AS v JOIN s ON s.name = v.channel) "
    "SELECT name, top, epoch FROM s")


def append(channel: str, data: Any, sender: str | None = None) -> Pub:
    """Append one publication inside the caller's transaction; delivered after it commits.

    Inside `store.atomic()` the offset is assigned at commit: read `pub.offset` after the block.
    """
    body = orjson.dumps(data).decode()
    ts = now_ms()
    pending = _scope.pending
    if pending is not None and connection.in_atomic_block:
        pub = Pub(channel, 0, "", ts, sender, data)
        if tracing.ENABLED:
            pub.trace = tracing.current()  # the fan-out joins the trace of the action that published

        def hook() -> None:
            """A distinct on_commit entry per append: Django drops it with a rolled-back savepoint."""

        transaction.on_commit(hook)
        pending.append((hook, pub, body, _user_event(channel, data) if _user_hooks else None))
        return pub
    with transaction.atomic():
        event = _user_event(channel, data) if _user_hooks else None
        if event is not None:
            _run_user_hooks([event])
        with connection.cursor() as cursor:
            top, epoch = assign_offsets(cursor, {channel: 1})[channel]
            insert_rows(cursor, [(channel, top, ts, sender, body)])
    pub = Pub(channel, top, epoch, ts, sender, data)
    if tracing.ENABLED:
        pub.trace = tracing.current()
    transaction.on_commit(lambda: _notify([pub]))
    return pub


def sqlstate(exc: BaseException | None) -> str | None:
    """The SQLSTATE of a database error (Django wraps psycopg's error as __cause__), or None."""
    while exc is not None:
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str):
            return state
        exc = exc.__cause__
    return None


CONTROL_CHANNEL = "hub:ctl"
_invalidate_hooks: list[Callable[[], None]] = []


def on_invalidate(hook: Callable[[], None]) -> None:
    _invalidate_hooks.append(hook)


def drop_local_caches() -> None:
    """This process's hot caches only (hub.privacy's poll: an erasure heard from the database)."""
    for hook in _invalidate_hooks:
        hook()


def invalidate_caches() -> None:
    """Stored publications were rewritten (erasure): every process drops its hot caches, so recovery
    reads the database. Rare; the caches refill from new traffic."""
    drop_local_caches()
    from core import redis as hubredis

    client = hubredis.sync_client()
    if client is not None:
        try:
            client.publish(hubredis.pubsub_name(CONTROL_CHANNEL), b"drop_caches")
        except Exception:  # logged; a restart also clears the caches
            log.exception("could not tell the hub processes to drop their caches")


def _notify(pubs: list[Pub]) -> None:
    for hook in _after_commit_hooks:
        try:
            hook(pubs)
        except Exception:
            log.exception("after-commit hook failed")


# --- reads -----------------------------------------------------------------------------------

def head(channel: str) -> tuple[int, str]:
    """(newest offset, epoch); creates the stream row so its epoch is fixed from first sight."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT top, epoch FROM hub_stream WHERE name = %s", [channel])
        row = cursor.fetchone()
        if row is None:
            cursor.execute("INSERT INTO hub_stream (name, top, epoch, created_at) VALUES (%s, 0, %s, %s) "
                           "ON CONFLICT (name) DO NOTHING", [channel, new_epoch(), now_ms()])
            cursor.execute("SELECT top, epoch FROM hub_stream WHERE name = %s", [channel])
            row = cursor.fetchone()
    return int(row[0]), row[1]


def read(channel: str, epoch: str, after: int = 0, before: int | None = None, limit: int = 100,
         newest: bool = False) -> list[Pub]:
    """Publications after `after` (and before `before`), in offset order. Tombstones have data null."""
    sql = 'SELECT "offset", ts, sender, data FROM hub_publication WHERE channel = %s AND "offset" > %s'
    params: list[Any] = [channel, after]
    if before is not None:
        sql += ' AND "offset" < %s'
        params.append(before)
    sql += ' ORDER BY "offset" DESC LIMIT %s' if newest else ' ORDER BY "offset" LIMIT %s'
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if newest:
        rows.reverse()
    return [Pub(channel, int(o), epoch, int(ts), s, orjson.loads(d) if d is not None else None)
            for o, ts, s, d in rows]


# Bytes a publication adds to a reply beyond its data (channel, offset, epoch, ts, from, keys).
ITEM_OVERHEAD = 128


def read_bounded(channel: str, epoch: str, after: int, before: int | None, limit: int, max_bytes: int,
                 newest: bool = False) -> tuple[list[Pub], bool]:
    """Like `read`, but at most `max_bytes` of publications (data plus ITEM_OVERHEAD each): returns
    (pubs, cut), `cut` when more were there within `limit`. The database sums the sizes, so rows
    past the budget are never sent to this process."""
    size = "octet_length(data)" if _is_pg() else "length(CAST(data AS BLOB))"
    order = "DESC" if newest else "ASC"
    where = 'channel = %s AND "offset" > %s'
    params: list[Any] = [channel, after]
    if before is not None:
        where += ' AND "offset" < %s'
        params.append(before)
    sql = (
        f'SELECT o, ts, sender, data, run FROM ('
        f' SELECT o, ts, sender, data, size, SUM(size) OVER (ORDER BY o {order} ROWS UNBOUNDED PRECEDING) AS run'
        f' FROM (SELECT "offset" AS o, ts, sender, data, COALESCE({size}, 4) + {ITEM_OVERHEAD} AS size'
        f'       FROM hub_publication WHERE {where} ORDER BY "offset" {order} LIMIT %s) AS page'
        f') AS sized WHERE run - size <= %s ORDER BY o {order}')
    params += [limit, max_bytes]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    cut = bool(rows) and int(rows[-1][4]) > max_bytes  # the first row past the budget, not kept
    if cut:
        rows.pop()
    if newest:
        rows.reverse()
    pubs = [Pub(channel, int(o), epoch, int(ts), s, orjson.loads(d) if d is not None else None)
            for o, ts, s, d, _run in rows]
    return pubs, cut


# COPY goes through the raw psycopg cursor, whose errors Django does not wrap.
DB_DOWN: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, psycopg.OperationalError,
                                            psycopg.InterfaceError)


# --- group commit ----------------------------------------------------------------------------

@dataclass(slots=True)
class Pending:
    channel: str
    data: Any
    body: str
    sender: str | None
    key: str | None
    # Called on the loop when the batch ends (hub.subscriber.Completion), with `tag`: the writer
    # knows nothing of who published (a socket answers its command, HTTP resolves a future).
    done: Completion
    tag: int = 0
    t0: float = 0.0
    ts: int = 0
    result: tuple[Pub, bool] | None = field(default=None)
    # Tracing (core.tracing): the publish command's span, ended with the reply, and the SpanContext
    # the publication carries to the fan-out (the span's, or the HTTP request's).
    span: Any = None
    trace: Any = None


PENDING_RETRY_MS = 250


class Writer:
    """Group commit: one thread drains the queue into one transaction per batch.

    While a batch commits, the next one gathers, so throughput grows with load while a lone
    publish still commits at once. Completions go back to the loop in one callback per batch.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_batch: Callable[[list[Pending]], None]) -> None:
        self.loop = loop
        self.on_batch = on_batch
        self.queue: queue.SimpleQueue[Pending | None] = queue.SimpleQueue()
        self.inflight = 0
        self.inflight_bytes = 0
        self.batch_max = settings.HUB_BATCH_MAX  # read once: settings access is slow on a hot loop
        # Past these, publishes are refused (unavailable, retry_after_ms) instead of piling up in
        # memory while the database falls behind.
        self.max_pending = settings.HUB_MAX_PENDING_PUBLICATIONS
        self.max_pending_bytes = settings.HUB_MAX_PENDING_BYTES
        self.idle = asyncio.Event()
        self.idle.set()
        self.thread = threading.Thread(target=self._run, name=f"hub-writer-{os.getpid()}", daemon=True)
        self.thread.start()

    def submit(self, channel: str, data: Any, body: str, sender: str | None, key: str | None,
               done: Completion, tag: int = 0, span: Any = None, trace: Any = None) -> None:
        """Queue a publication; `done(tag, ...)` is called on the loop after its batch commits (or fails).
        `span`: the publish command's, ended with the reply; `trace`: the SpanContext to carry
        when there is no such span (HTTP, server code)."""
        if self.inflight >= self.max_pending or self.inflight_bytes >= self.max_pending_bytes:
            busy = unavailable("the hub is behind on commits; retry shortly")
            busy.retry_after_ms = PENDING_RETRY_MS
            done(tag, None, busy, time.perf_counter())
            if span is not None:
                tracing.end(span, busy.code)
            return
        if key is not None:
            key = sender_key(sender, key)
        self.inflight += 1
        self.inflight_bytes += len(body)
        self.idle.clear()
        pending = Pending(channel, data, body, sender, key, done, tag, time.perf_counter())
        if tracing.ENABLED:
            pending.span = span
            pending.trace = span.get_span_context() if span is not None else trace
        self.queue.put(pending)

    def stop(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self.queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            error: HubError | None = None
            span = None
            if tracing.ENABLED:
                span = self._trace_batch(batch)  # None when nobody in the batch is traced
            try:
                self._commit(batch)
            except DB_DOWN as exc:
                log.warning("group commit failed, database unavailable: %s", type(exc).__name__)
                error = unavailable("the database is unavailable; the publication was not stored")
                self._reset()
            except DatabaseError:
                log.exception("group commit failed")
                error = HubError(INTERNAL, "the publication was not stored")
                self._reset()
            except Exception:
                log.exception("group commit crashed")
                error = HubError(INTERNAL, "the publication was not stored")
                self._reset()
            if span is not None:
                self._traced(batch, span, error)
            self.loop.call_soon_threadsafe(self._complete, batch, error)
        connection.close()

    @staticmethod
    def _trace_batch(batch: list[Pending]) -> Any:
        """A batch holding traced publishes gets one commit span: child of the first, linked to the
        others. Not made current: its few statements are timed by the span itself, not a span each.
        A batch nobody traced records nothing (the commit histogram in /metrics covers it)."""
        parents = [p.trace for p in batch if p.trace is not None]
        if not parents:
            return None
        return tracing.batch_span("hub.commit", parents, {"hub.batch.size": len(batch),
                                                          "hub.batch.traced": len(parents)})

    @staticmethod
    def _traced(batch: list[Pending], span: Any, error: HubError | None) -> None:
        for p in batch:
            if p.trace is not None and p.result is not None:
                p.result[0].trace = p.trace  # carried on to the fan-out, here and in other processes
        tracing.end(span, error.code if error is not None else None)

    def _reset(self) -> None:
        try:
            connection.close()
        except Exception:  # noqa: BLE001
            pass

    def _commit(self, batch: list[Pending]) -> None:
        ts = now_ms()
        with transaction.atomic(), connection.cursor() as cursor:
            dup_of: dict[int, int] = {}
            first_by_key: dict[tuple[str, str], int] = {}
            keyed: list[tuple[str, str]] = []
            for i, p in enumerate(batch):
                p.ts = ts
                if p.key is not None:
                    k = (p.channel, p.key)
                    if k in first_by_key:
                        dup_of[i] = first_by_key[k]  # the same key twice in one batch
                    else:
                        first_by_key[k] = i
                        keyed.append(k)
            live: dict[tuple[str, str], int | None] = claim_keys(cursor, keyed, ts) if keyed else {}
            counts: dict[str, int] = {}
            fresh: list[int] = []
            for i, p in enumerate(batch):
                if i in dup_of:
                    continue
                if p.key is not None and live.get((p.channel, p.key)) is not None:
                    continue
                counts[p.channel] = counts.get(p.channel, 0) + 1
                fresh.append(i)
            tops = assign_offsets(cursor, counts) if counts else {}
            epochs = {ch: e for ch, (_t, e) in tops.items()}
            next_off = {ch: top - counts[ch] + 1 for ch, (top, _e) in tops.items()}
            rows: list[tuple[str, int, int, str | None, str]] = []
            key_offsets: list[tuple[int, str, str]] = []
            for i in fresh:
                p = batch[i]
                off = next_off[p.channel]
                next_off[p.channel] = off + 1
                rows.append((p.channel, off, ts, p.sender, p.body))
                p.result = (Pub(p.channel, off, epochs[p.channel], ts, p.sender, p.data), False)
                if p.key is not None:
                    key_offsets.append((off, p.channel, p.key))
            if rows:
                insert_rows(cursor, rows)
                if _publish_prefixes:
                    hooked = []
                    for p in (batch[i] for i in fresh):
                        # Hooks see the protocol name and the tenant of the (tenant-qualified) stream.
                        tenant, sep, name = p.channel.partition("/")
                        if not sep:
                            tenant, name = "", p.channel
                        if name.startswith(_publish_prefixes):
                            hooked.append((name, p.sender, tenant or None, p.data))
                    if hooked:
                        _run_publish_hooks(hooked)
            if key_offsets:
                set_key_offsets(cursor, key_offsets)
            need_epoch = [p for p in batch if p.result is None]
            if need_epoch:
                known = dict(epochs)
                for p in need_epoch:
                    if p.channel not in known:
                        cursor.execute("SELECT epoch FROM hub_stream WHERE name = %s", [p.channel])
                        row = cursor.fetchone()
                        known[p.channel] = row[0] if row else ""
            for i, p in enumerate(batch):
                if p.result is not None:
                    continue
                if i in dup_of:
                    continue
                first_off = live.get((p.channel, p.key or ""))
                p.result = (Pub(p.channel, int(first_off or 0), known[p.channel], ts, p.sender, p.data), True)
        for i, j in dup_of.items():
            first = batch[j].result
            assert first is not None
            batch[i].result = (first[0], True)

    def _complete(self, batch: list[Pending], error: HubError | None) -> None:
        self.inflight -= len(batch)
        self.inflight_bytes -= sum(len(p.body) for p in batch)
        if self.inflight <= 0:
            self.inflight = 0
            self.inflight_bytes = 0
            self.idle.set()
        if error is None:
            self.on_batch(batch)
        for p in batch:
            p.done(p.tag, p.result, error, p.t0)
            if p.span is not None:
                tracing.end(p.span, error.code if error is not None else None)


def committed(batch: Iterable[Pending]) -> list[Pub]:
    return [p.result[0] for p in batch if p.result is not None and not p.result[1]]
