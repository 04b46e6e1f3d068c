"""Channel namespaces and their permission hooks. Domain apps register theirs (chat, job, call).

A hook is `fn(caller, ident) -> bool`, sync (run in a worker thread, may use the ORM) or async.
The hub never knows what a room or a job is; it asks the namespace.

Tenants: a client writes `user:alice`, meaning alice of the caller's tenant. Below the connection
every structure (engine states, stored streams and offsets, presence, Redis pub/sub, idempotency
keys) uses the tenant-qualified name `<tenant>/user:alice` (`qualify`), so two tenants' `alice`
never share anything; what goes back to a client shows the protocol name (`unqualify`). Tenant ids
have no `/` and channel names have none either, so the first `/` always separates them.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import BAD_REQUEST, FORBIDDEN, HubError
from hub.codec import CHANNEL_RE
from hub.rpc import Caller, run_sync

Hook = Callable[[Caller, str], Any]


SEP = "/"


def qualify(tenant: str, channel: str) -> str:
    """The internal name of `channel` in `tenant` (what streams, presence and Redis are keyed by)."""
    return f"{tenant}{SEP}{channel}"


def unqualify(name: str) -> str:
    """The protocol name of an internal channel name (what clients see)."""
    return name.partition(SEP)[2] or name


def tenant_of(name: str) -> str:
    """The tenant of an internal channel name ("" when it is not qualified)."""
    tenant, sep, _rest = name.partition(SEP)
    return tenant if sep else ""


def never(caller: Caller, ident: str) -> bool:
    return False


@dataclass(frozen=True)
class Namespace:
    name: str
    can_subscribe: Hook
    can_publish: Hook = never  # client publish; `never` means the server only
    can_signal: Hook = never
    window_s: int | None = None  # recovery window; None: HUB_HISTORY_DAYS
    admin_read: bool = False  # admins may subscribe (audited when not otherwise allowed)
    # With admin_read: whether `ident` exists in the caller's tenant. An admin reads their own
    # tenant's channels only (the stream itself is tenant-qualified, so another tenant's is never
    # reachable; this refuses the subscription outright instead of opening an empty stream).
    in_tenant: Hook | None = None


NAMESPACES: dict[str, Namespace] = {}


def register(ns: Namespace) -> Namespace:
    NAMESPACES[ns.name] = ns
    return ns


def split(channel: str) -> tuple[Namespace, str]:
    m = CHANNEL_RE.match(channel)
    if m is None:
        raise HubError(BAD_REQUEST, "channel must look like namespace:id")
    ns = NAMESPACES.get(m.group(1))
    if ns is None:
        raise HubError(BAD_REQUEST, f"unknown namespace {m.group(1)!r}")
    return ns, m.group(2)


async def ask(hook: Hook, caller: Caller, ident: str) -> bool:
    if inspect.iscoroutinefunction(hook):
        return bool(await hook(caller, ident))
    if hook is never:
        return False
    return bool(await run_sync(hook, caller, ident))


async def check_subscribe(caller: Caller, channel: str) -> tuple[Namespace, bool]:
    """(namespace, via_admin): forbidden unless allowed; via_admin means an audited admin read."""
    ns, ident = split(channel)
    if await ask(ns.can_subscribe, caller, ident):
        return ns, False
    if ns.admin_read and caller.role == "admin" and (ns.in_tenant is None or await ask(ns.in_tenant, caller, ident)):
        return ns, True
    raise HubError(FORBIDDEN, f"not allowed to subscribe to {channel}")


async def check_publish(caller: Caller, channel: str) -> Namespace:
    ns, ident = split(channel)
    if await ask(ns.can_publish, caller, ident):
        return ns
    raise HubError(FORBIDDEN, f"not allowed to publish to {channel}")


async def check_signal(caller: Caller, channel: str) -> Namespace:
    ns, ident = split(channel)
    if await ask(ns.can_signal, caller, ident):
        return ns
    raise HubError(FORBIDDEN, f"not allowed to signal on {channel}")
