"""The hub's share of a data-subject request: the publications a person sent and received.

- Publications U sent, and everything on U's private `user:U` channel, become tombstones: data
  NULL, sender "erased" (server rows keep sender NULL). Offsets are unchanged, so a subscriber
  recovering with `since` still receives every offset, with data null.
- Server publications elsewhere (job and call events, other users' notifications) that name U:
  those U authored (U in an actor field such as provider/by/author/caller) become tombstones; in
  the others U's id is replaced by the pseudonym.
- Every token of U issued up to now is revoked in every tenant, so U's open sockets close with
  4001 on every process; running hubs drop the erased content from their caches.
Domain apps call `erase_places` for the publications about their records (jobs, bookings).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction

from core import privacy
from hub import revocation, store
from hub.channels import tenant_of, unqualify

log = logging.getLogger("hub.privacy")
ERASED = privacy.ERASED
# What a server publication about a job or booking says of its place, and of the job, in U's words.
PLACE_KEYS = frozenset({"lat", "lng", "area", "distance_m", "title", "description"})
ACTOR_KEYS = ("provider", "by", "author", "caller", "from", "user", "owner", "customer", "sender")
BATCH = 5000


def _mentions(value: Any, user: str) -> bool:
    if isinstance(value, str):
        return value == user
    if isinstance(value, dict):
        return any(_mentions(v, user) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, user) for v in value)
    return False


def _replace(value: Any, user: str, pseudonym: str) -> Any:
    if isinstance(value, str):
        return pseudonym if value == user else value
    if isinstance(value, dict):
        return {k: _replace(v, user, pseudonym) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, user, pseudonym) for v in value]
    return value


def like_needle(value: str) -> str:
    """A LIKE pattern matching `value` as a JSON string anywhere in a JSON text column."""
    text = orjson.dumps(value).decode()
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def user_channels_like(user: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching U's `user:` stream in every tenant: streams are stored
    as `<tenant>/user:U` (hub.channels.qualify), and an erasure or export knows the user id only."""
    return "%/" + f"user:{user}".replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def export(user: str) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute('SELECT channel, "offset", ts, data FROM hub_publication WHERE sender = %s '
                       'ORDER BY ts, channel, "offset"', [user])
        sent = cursor.fetchall()
        cursor.execute("SELECT channel, \"offset\", ts, data FROM hub_publication WHERE channel LIKE %s ESCAPE '\\' "
                       'ORDER BY channel, "offset"', [user_channels_like(user)])
        private = cursor.fetchall()
    # Stored names are tenant-qualified: shown as the tenant and the channel as clients name it.
    return {
        "messages": [{"tenant": tenant_of(ch), "channel": unqualify(ch), "offset": int(off), "ts": int(ts),
                      "data": orjson.loads(d) if d is not None else None} for ch, off, ts, d in sent],
        "user_stream": [{"tenant": tenant_of(ch), "offset": int(off), "ts": int(ts),
                         "data": orjson.loads(d) if d is not None else None}
                        for ch, off, ts, d in private],
    }


def erase(user: str, pseudonym: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE hub_publication SET data = NULL, sender = %s WHERE sender = %s", [ERASED, user])
        sent = cursor.rowcount
        # U's `user:` stream in every tenant.
        cursor.execute("UPDATE hub_publication SET data = NULL WHERE channel LIKE %s ESCAPE '\\' "
                       "AND data IS NOT NULL", [user_channels_like(user)])
        private = cursor.rowcount
        # Server rows naming U: a LIKE on the JSON string narrows, the parsed JSON decides.
        cursor.execute("SELECT channel, \"offset\", data FROM hub_publication "
                       "WHERE sender IS NULL AND data LIKE %s ESCAPE '\\'", [like_needle(user)])
        rows = cursor.fetchall()
        tombstoned = anonymised = 0
        for channel, offset, raw in rows:
            data = orjson.loads(raw)
            if not _mentions(data, user):
                continue
            if isinstance(data, dict) and any(data.get(k) == user for k in ACTOR_KEYS):
                cursor.execute('UPDATE hub_publication SET data = NULL WHERE channel = %s AND "offset" = %s',
                               [channel, offset])
                tombstoned += 1
            else:
                cursor.execute('UPDATE hub_publication SET data = %s WHERE channel = %s AND "offset" = %s',
                               [orjson.dumps(_replace(data, user, pseudonym)).decode(), channel, offset])
                anonymised += 1
    # Every token of U, in every tenant: an erased user's open sockets close, and no token issued
    # before the erasure gets back in.
    revocation.revoke_user(revocation.ALL_TENANTS, user, "operator")
    # Running hubs hold recent publications in memory: make them forget the erased content.
    transaction.on_commit(store.invalidate_caches)
    return {"messages_tombstoned": sent, "private_tombstoned": private, "server_tombstoned": tombstoned,
            "server_anonymised": anonymised}


def erase_places(key: str, ids: set[str]) -> int:
    """Server publications about the records `ids` (data[key] in ids: offers and `job.new` copies on
    providers' `user:` channels, events on `job:` channels) lose their place and the owner's text."""
    changed = 0
    ordered = sorted(ids)
    with connection.cursor() as cursor:
        for i in range(0, len(ordered), 100):
            chunk = ordered[i:i + 100]
            where = " OR ".join(["data LIKE %s ESCAPE '\\'"] * len(chunk))
            cursor.execute(f'SELECT channel, "offset", data FROM hub_publication WHERE sender IS NULL '
                           f"AND data IS NOT NULL AND ({where})", [like_needle(x) for x in chunk])
            for channel, offset, raw in cursor.fetchall():
                data = orjson.loads(raw)
                if not isinstance(data, dict) or data.get(key) not in ids:
                    continue
                kept = {k: v for k, v in data.items() if k not in PLACE_KEYS}
                if kept != data:
                    cursor.execute('UPDATE hub_publication SET data = %s WHERE channel = %s AND "offset" = %s',
                                   [orjson.dumps(kept).decode(), channel, offset])
                    changed += 1
    return changed


def purge_messages(days: int, dry_run: bool) -> dict[str, int]:
    """Publications older than `days` (by ts) and idempotency keys past their window. Stream heads
    stay, so offsets never restart; recovering from a purged offset answers `recovered: false`."""
    cutoff_ms = int((time.time() - days * 86400) * 1000)
    key_cutoff_ms = int((time.time() - max(settings.HUB_IDEMPOTENCY_S, 24 * 3600)) * 1000)
    if dry_run:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM hub_publication WHERE ts < %s", [cutoff_ms])
            pubs = int(cursor.fetchone()[0])
            cursor.execute("SELECT COUNT(*) FROM hub_pubkey WHERE created_at < %s", [key_cutoff_ms])
            return {"messages": pubs, "pubkeys": int(cursor.fetchone()[0])}
    pubs = 0
    while True:  # in batches, so a large purge never holds long locks
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                'DELETE FROM hub_publication WHERE (channel, "offset") IN ('
                'SELECT channel, "offset" FROM hub_publication WHERE ts < %s LIMIT %s)', [cutoff_ms, BATCH])
            n = cursor.rowcount
        pubs += n
        if n < BATCH:
            break
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM hub_pubkey WHERE created_at < %s", [key_cutoff_ms])
        keys = cursor.rowcount
    return {"messages": pubs, "pubkeys": keys}


# --- erasures made where this process could not hear them ---------------------------------------
#
# An erasure tells running hubs at commit (store.invalidate_caches, matching's removal message),
# through Redis. Without Redis (the embedded default: `erase_user` is another process than the
# hub), or with a message lost, they would keep the erased content in their caches and the erased
# provider in their index. So every hub process also reads the erasures' audit rows (`gdpr.erase`)
# newer than the last one it saw, every HUB_REVOCATION_POLL_S, and applies them locally: its hot
# caches are dropped and the listeners (matching: forget the provider) run.

_erased_listeners: list[Callable[[str], None]] = []
_last_erasure: list[int] = []  # the id of the newest erasure row this process has applied


def on_erased(listener: Callable[[str], None]) -> None:
    """`listener(user)` runs in a hub process for each erasure it learns of from the audit log."""
    _erased_listeners.append(listener)


def _newest_erasure() -> int:
    from core.models import AuditLog

    return AuditLog.objects.filter(action="gdpr.erase").order_by("-id").values_list("id", flat=True).first() or 0


def erasures_at_start() -> None:
    # Erasures before this process started are in the database already; nothing of them is in memory.
    _last_erasure[:] = [_newest_erasure()]


def poll_erasures(now: float | None = None) -> int:
    """Apply erasures committed since the last poll to this process; returns how many."""
    from core.models import AuditLog

    if not _last_erasure:
        erasures_at_start()
        return 0
    fresh = list(AuditLog.objects.filter(action="gdpr.erase", id__gt=_last_erasure[0]).order_by("id")
                 .values_list("id", "target"))
    if not fresh:
        return 0
    _last_erasure[:] = [fresh[-1][0]]
    store.drop_local_caches()
    for _id, target in fresh:
        user = target.removeprefix("user:")
        for listener in _erased_listeners:
            try:
                listener(user)
            except Exception:
                log.exception("erasure listener failed")
    return len(fresh)



ENTRY = privacy.Entry(
    "hub", export=export, erase=erase,
    retention=(privacy.Retention("messages", "HUB_RETAIN_MESSAGES_DAYS", purge_messages,
                                 floor_setting="HUB_HISTORY_DAYS"),))
