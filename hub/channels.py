"""Channel namespaces and their permission hooks. Domain apps register theirs (chat, job, call).

A hook is `fn(caller, ident) -> bool`, sync (run in a worker thread, may use the ORM) or async.
The hub never knows what a room or a job is; it asks the namespace.
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
    if ns.admin_read and caller.role == "admin":
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
