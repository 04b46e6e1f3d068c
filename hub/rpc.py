"""The rpc registry: domain apps register methods; the socket `rpc` command and HTTP `/api/` serve them.

    from hub.rpc import method, Caller

    @method("rooms.create", roles=("customer", "provider"), params={...json schema...})
    def create_room(caller: Caller, params: dict) -> dict: ...

A method function is sync (run in a worker thread, free to use the ORM) or async (run on the
event loop; must not block). It raises core.errors.HubError for refusals.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, InterfaceError, OperationalError
from jsonschema import Draft202012Validator

from core import metrics
from core.errors import BAD_REQUEST, FORBIDDEN, INTERNAL, HubError, unavailable
from hub.auth import ALL_ROLES

log = logging.getLogger("hub.rpc")

USERS = ("customer", "serviceman", "provider", "enterprise", "admin")
PROVIDERS = ("serviceman", "provider", "enterprise")


@dataclass
class Caller:
    """Who is calling, over which transport. `push` reaches the caller's socket (None over HTTP)."""

    user: str
    role: str
    tenant: str
    client: str | None = None
    request_id: str = ""
    push: Callable[[dict[str, Any]], None] | None = None
    # Register a callback run when the caller's socket closes (to cancel streams it started).
    on_close: Callable[[Callable[[], None]], None] | None = None


@dataclass
class Method:
    name: str
    roles: frozenset[str]
    params: dict[str, Any]
    fn: Callable[[Caller, dict[str, Any]], Any]
    summary: str = ""
    result: dict[str, Any] | None = None
    http: bool = True
    validator: Draft202012Validator = field(init=False, repr=False)
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.params)
        self.validator = Draft202012Validator(self.params)
        self.is_async = inspect.iscoroutinefunction(self.fn)


REGISTRY: dict[str, Method] = {}


def method(name: str, roles: tuple[str, ...] | list[str], params: dict[str, Any] | None = None, *,
           summary: str = "", result: dict[str, Any] | None = None, http: bool = True
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    unknown = set(roles) - set(ALL_ROLES)
    if unknown:
        raise ValueError(f"{name}: unknown roles {unknown}")
    schema = params if params is not None else {"type": "object", "properties": {}}

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY and REGISTRY[name].fn is not fn:
            raise ValueError(f"rpc method {name} registered twice")
        REGISTRY[name] = Method(name, frozenset(roles), schema, fn,
                                summary or (fn.__doc__ or "").strip().split("\n")[0], result, http)
        return fn

    return register


def check(caller: Caller, name: str, params: Any) -> Method:
    """Role and params check without running: bad_request / forbidden."""
    m = REGISTRY.get(name)
    if m is None:
        raise HubError(BAD_REQUEST, f"unknown method {name!r}")
    if caller.role not in m.roles:
        raise HubError(FORBIDDEN, f"{name} is not allowed for role {caller.role}")
    if not isinstance(params, dict):
        raise HubError(BAD_REQUEST, "params must be an object")
    error = next(iter(m.validator.iter_errors(params)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "params"
        raise HubError(BAD_REQUEST, f"{name}: {where}: {error.message}"[:300])
    return m


async def call(caller: Caller, name: str, params: Any) -> Any:
    """Run a method for a caller (socket or HTTP); counted in the metrics by method and outcome."""
    label = f"rpc:{name if name in REGISTRY else 'unknown'}"
    try:
        result = await _call(caller, name, params)
    except HubError as exc:
        metrics.command(label, exc.code)
        raise
    metrics.command(label, "ok")
    return result


async def _call(caller: Caller, name: str, params: Any) -> Any:
    m = check(caller, name, params)
    try:
        if m.is_async:
            return await m.fn(caller, params)
        return await run_sync(m.fn, caller, params)
    except HubError:
        raise
    except (OperationalError, InterfaceError) as exc:  # a worker's dead connection: dropped, retry works
        log.warning("rpc %s: database unavailable: %s", name, type(exc).__name__)
        raise unavailable("the database is unavailable; retry") from exc
    except DatabaseError as exc:
        log.exception("rpc %s: database error", name)
        raise HubError(INTERNAL, "internal error") from exc
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("rpc %s failed", name)
        raise HubError(INTERNAL, "internal error") from exc


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except (OperationalError, InterfaceError):
        # This worker thread keeps its connection; drop a broken one so the next call reconnects.
        from django.db import connection

        try:
            connection.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may itself fail
            pass
        raise


def run_sync(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    """Run blocking (ORM) code in a worker thread; a dead DB connection is dropped on failure."""
    return sync_to_async(_guarded, thread_sensitive=False)(fn, *args)
