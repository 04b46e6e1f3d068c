"""Domain budgets: how much one user may set in motion for other people (docs/operations.md).

Two kinds, both per user within a tenant and shared by every hub process:

- rates (bids, call invites, match.find per minute): core.ratelimit's GCRA, in Redis when
  REDIS_URL is set. `per_minute` refuses with `rate_limited` and `retry_after_ms` before the
  caller changes anything.
- counts of open things (bookings, custom jobs): counted in the database inside the transaction
  that would add one, under a per-user lock, so two concurrent creates cannot both pass a cap of
  one. `admit_open` takes the users' locks, counts, and refuses with `conflict` (a batch adding
  several counts its own additions on top).

A limit of 0 (or less) switches a budget off.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

from django.db import connection
from django.db.models import QuerySet

from core import ratelimit
from core.errors import HubError, conflict
from core.ratelimit import Limit


async def aper_minute(name: str, tenant: str, user: str, limit: float, what: str, cost: int = 1) -> None:
    """per_minute for async callers (the event loop's Redis client)."""
    await ratelimit.enforce([Limit(f"dom:{name}:{tenant}:{user}", limit, cost)],
                            f"too many {what}: at most {limit:g} a minute")


def per_minute(name: str, tenant: str, user: str, limit: float, what: str, cost: int = 1) -> None:
    """Spend `cost` of the user's `name` budget of `limit` a minute (bursts of a minute's worth)."""
    ratelimit.enforce_sync([Limit(f"dom:{name}:{tenant}:{user}", limit, cost)],
                           f"too many {what}: at most {limit:g} a minute")


def lock_user(scope: str, tenant: str, user: str) -> None:
    """Serialise one user's `scope` changes until the transaction ends (call inside one).

    Postgres: a transaction-scoped advisory lock on a 64-bit hash of the key; read-committed
    statements after it see whatever the previous holder committed. SQLite transactions begin
    IMMEDIATE (core.settings), so writers are serialised already.
    """
    assert connection.in_atomic_block, "lock_user outside a transaction would be released at once"
    if connection.vendor != "postgresql":
        return
    digest = hashlib.blake2b(f"{scope}\0{tenant}\0{user}".encode(), digest_size=8).digest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])


def admit_open(scope: str, tenant: str, entries: list[tuple[str, bool]], open_rows: Callable[[str], QuerySet],
               limit: int, what: str) -> list[HubError | None]:
    """Inside the transaction that adds one open `what` per entry, before adding them: entries are
    (owner, whether the entry holds a place once added), in order. Locks the owners (sorted, so that
    two transactions never deadlock) until commit, counts what each holds, and refuses (`conflict`)
    each entry that would pass `limit`, counting the earlier admitted entries that hold a place.
    Returns None for an admitted entry, its refusal otherwise (a limit of 0: every entry admitted)."""
    if limit <= 0:
        return [None] * len(entries)
    held = {}
    for user in sorted({user for user, _holds in entries}):
        lock_user(scope, tenant, user)
        held[user] = int(open_rows(user)[:limit].count())
    out: list[HubError | None] = []
    for user, holds in entries:
        if held[user] >= limit:
            out.append(conflict(f"you already have {held[user]} open {what}, the most allowed; wait for one to close"))
            continue
        if holds:
            held[user] += 1
        out.append(None)
    return out
