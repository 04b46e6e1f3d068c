"""Token revocation: every token of a user issued up to a moment, or one token by its `jti`.

The record is the `hub_revocation` table; each process keeps the whole of it in memory (a few
dicts: a revocation is rare, a token check frequent), so `credentials.verify` checks a token with
dict look-ups and no query. A process learns a new revocation three ways: its own (applied at
commit), the others' through the Redis control channel (within a broker round trip), and a poll
of the table every HUB_REVOCATION_POLL_S (a management command on the embedded default, or a
message lost while Redis was away). Learning one closes the matching open sockets with 4001.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction

from core import audit
from core.errors import bad_request
from hub import auth
from hub.rpc import Caller, method

log = logging.getLogger("hub.revocation")
CONTROL_PREFIX = b"revoke "
ALL_TENANTS = ""  # an erasure knows the user id only: it revokes the id in every tenant


@dataclass(frozen=True, slots=True)
class Revocation:
    tenant: str
    user: str = ""
    jti: str = ""
    not_before: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "user": self.user, "jti": self.jti, "not_before": self.not_before}


# (tenant, user) -> latest not_before; (tenant, jti) revoked. Written under _lock, read without it.
_users: dict[tuple[str, str], int] = {}
_jtis: set[tuple[str, str]] = set()
_lock = threading.Lock()
_listeners: list[Callable[[Revocation], None]] = []


def on_revoked(listener: Callable[[Revocation], None]) -> None:
    """`listener(revocation)` runs (in any thread) for every revocation this process learns."""
    _listeners.append(listener)


def _not_before(tenant: str, user: str) -> int | None:
    nb = _users.get((tenant, user))
    everywhere = _users.get((ALL_TENANTS, user))
    if everywhere is not None and (nb is None or everywhere > nb):
        return everywhere
    return nb


def is_revoked(tenant: str, user: str, iat: int | None, jti: str | None) -> bool:
    """The hot path: two or three dict look-ups, nothing when no revocation exists."""
    if not _users and not _jtis:
        return False
    if jti is not None and ((tenant, jti) in _jtis or (ALL_TENANTS, jti) in _jtis):
        return True
    nb = _not_before(tenant, user)
    # Issued in or before the revocation's second is refused (iat has whole seconds); a token
    # without `iat` cannot prove it is newer.
    return nb is not None and (iat is None or iat <= nb)


def check(claims: auth.Claims) -> None:
    if is_revoked(claims.tenant, claims.user, claims.iat, claims.jti):
        raise auth.TokenError("token revoked")


def matches(rev: Revocation, tenant: str, user: str, iat: int | None, jti: str | None) -> bool:
    """Whether `rev` covers a token with these claims (to close the sockets holding one)."""
    if rev.tenant not in (ALL_TENANTS, tenant):
        return False
    if rev.jti:
        return jti == rev.jti
    return rev.user == user and (iat is None or iat <= rev.not_before)


def apply(rev: Revocation) -> bool:
    """Add to this process's state; tell the listeners when it is news. Idempotent."""
    with _lock:
        if rev.jti:
            key = (rev.tenant, rev.jti)
            if key in _jtis:
                return False
            _jtis.add(key)
        else:
            ukey = (rev.tenant, rev.user)
            if _users.get(ukey, -1) >= rev.not_before:
                return False
            _users[ukey] = rev.not_before
    for listener in _listeners:
        try:
            listener(rev)
        except Exception:
            log.exception("revocation listener failed")
    return True


def apply_message(msg: bytes) -> None:
    """A control-channel message from another process (or this one)."""
    try:
        body = orjson.loads(msg[len(CONTROL_PREFIX):])
        rev = Revocation(str(body["tenant"]), str(body.get("user", "")), str(body.get("jti", "")),
                         int(body.get("not_before", 0)))
    except Exception:  # noqa: BLE001 - a malformed message must not stop the control listener
        log.warning("bad revocation message")
        return
    apply(rev)


def load(now: float | None = None) -> int:
    """Read the table (start-up and the poll); returns how many entries were news."""
    from hub.models import TokenRevocation

    fresh = 0
    for tenant, user, jti, nb in TokenRevocation.objects.values_list("tenant", "user", "jti", "not_before"):
        fresh += apply(Revocation(tenant, user, jti, nb))
    return fresh


def _announce(rev: Revocation) -> None:
    apply(rev)
    from core import redis as hubredis
    from hub.store import CONTROL_CHANNEL

    client = hubredis.sync_client()
    if client is None:
        return
    try:
        client.publish(hubredis.pubsub_name(CONTROL_CHANNEL), CONTROL_PREFIX + orjson.dumps(rev.as_dict()))
    except Exception:  # the poll carries it to the other processes instead
        log.exception("could not announce a revocation; other processes learn it from their poll")


def _store(rev: Revocation, actor: str) -> Revocation:
    from hub.models import TokenRevocation

    TokenRevocation.objects.create(tenant=rev.tenant, user=rev.user, jti=rev.jti, not_before=rev.not_before,
                                   actor=actor)
    # Other processes must never learn of a revocation that rolled back.
    transaction.on_commit(lambda: _announce(rev))
    return rev


def revoke_user(tenant: str, user: str, actor: str = "operator") -> Revocation:
    """Every token of `user` in `tenant` (ALL_TENANTS: in every tenant) issued up to now.
    Call inside the caller's transaction; takes effect at commit."""
    return _store(Revocation(tenant, user=user, not_before=int(time.time())), actor)


def revoke_jti(tenant: str, jti: str, actor: str = "operator") -> Revocation:
    return _store(Revocation(tenant, jti=jti), actor)


def load_at_start() -> None:
    load()


def poll(now: float) -> None:
    load(now)


# A jti row outlives its token by this margin (clock skew between issuers and hubs).
PRUNE_MARGIN_S = 300


def prune(now: float | None = None) -> int:
    """Delete revocation rows that can refuse nothing any more; returns how many went.

    - A user's older rows, once a newer one of the same (tenant, user) exists: the newest
      `not_before` covers everything they did.
    - A `jti` row HUB_TOKEN_MAX_TTL_S (plus a margin) after it was made: a token carrying `iat` lives
      at most that long (hub.auth.Policy), so the token it names has expired. (A token without
      `iat` is bounded only by `exp - now`: one minted to become valid later than that is not
      covered once its row is gone; tokens minted here always carry `iat`.)
    User rows that are the newest of their user stay: they also refuse the user's tokens without
    `iat`, whatever their age. Processes keep what they loaded in memory until they restart.
    """
    from django.db import connection

    from hub.models import TokenRevocation

    table = TokenRevocation._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f'DELETE FROM {table} WHERE jti = %s AND EXISTS (SELECT 1 FROM {table} AS newer WHERE newer.jti = %s '
            f'AND newer.tenant = {table}.tenant AND newer."user" = {table}."user" '
            f"AND newer.not_before > {table}.not_before)", ["", ""])
        gone = cursor.rowcount
    max_ttl = settings.HUB_TOKEN_MAX_TTL_S
    if max_ttl:
        from datetime import UTC, datetime

        cutoff = datetime.fromtimestamp((time.time() if now is None else now) - max_ttl - PRUNE_MARGIN_S, tz=UTC)
        gone += TokenRevocation.objects.exclude(jti="").filter(created_at__lt=cutoff).delete()[0]
    if gone:
        log.info("revocations: %d rows pruned", gone)
    return gone


USER_PARAM = {"type": "string", "pattern": f"^{auth.USER_ID.pattern}$"}
JTI_PARAM = {"type": "string", "pattern": f"^{auth.JTI.pattern}$"}


@method("tokens.revoke", roles=("admin",),
        summary="Revoke tokens in the admin's tenant: every token of `user` issued up to now, or the one "
                "token carrying `jti`. Open sockets holding them close with 4001.",
        params={"type": "object", "additionalProperties": False,
                "properties": {"user": USER_PARAM, "jti": JTI_PARAM}},
        result={"type": "object"})
def revoke_rpc(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    user, jti = params.get("user"), params.get("jti")
    if not user and not jti:
        raise bad_request("give user, jti or both")
    out: dict[str, Any] = {"tenant": caller.tenant}
    # The admin's own tenant only: another tenant's user or token is out of reach by construction.
    with transaction.atomic():
        if user:
            out["user"] = user
            out["not_before"] = revoke_user(caller.tenant, user, caller.user).not_before
        if jti:
            out["jti"] = revoke_jti(caller.tenant, jti, caller.user).jti
        audit.record(caller.user, "tokens.revoke", f"user:{user}" if user else "token",
                     role=caller.role, tenant=caller.tenant, jti=jti or "")
    return out
