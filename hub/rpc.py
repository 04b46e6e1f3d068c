"""The rpc registry: domain apps register methods; the socket `rpc` command and HTTP `/api/` serve them.

    # rooms/rpc.py: the declaration sits beside the schema; importing it registers nothing
    from hub.rpc import method, Caller

    @method("rooms.create", roles=("customer", "provider"), params={...json schema...})
    def create_room(caller: Caller, params: dict) -> dict: ...

    # rooms/apps.py, in ready(): the app's whole rpc surface, in one line
    hub.rpc.register(rooms.rpc)

A method function is sync (run in a worker thread, free to use the ORM) or async (run on the
event loop; must not block). It raises core.errors.HubError for refusals.

Sync methods run on the domain pool: HUB_DOMAIN_WORKERS threads per process (one database
connection each), apart from the default executor that serves the socket path (subscribe checks,
recovery reads), so slow domain work never starves those. When every worker is busy a call waits
up to HUB_DOMAIN_WAIT_S (at most HUB_DOMAIN_QUEUE calls wait), then gets `unavailable` with
`retry_after_ms`. A call whose socket closed while it waited is never started (its task is
cancelled). Calls that write one hot row, or gain from sharing a transaction (a tenant's bids),
name a `serial` key: they queue per key on the event loop, SERIAL_WIDTH at a time, and a method
with a `batch` function runs the queued calls of a key together, in one worker call and one
transaction, one batch at a time (a second once more calls wait than a batch takes). A deadlock or
serialization failure (SQLSTATE class 40) re-runs the whole action (or batch) in a fresh
transaction up to HUB_DB_RETRIES times; only a lost connection is "database unavailable".
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from jsonschema import Draft202012Validator

from core import metrics, tracing
from core.errors import BAD_REQUEST, FORBIDDEN, INTERNAL, UNAVAILABLE, HubError, unavailable
from hub import fastschema
from hub.auth import ALL_ROLES
from hub.store import DB_DOWN, EVENT_TENANT, sqlstate

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
    # Mark the caller's socket as in the background (True) or foreground (None over HTTP): a
    # backgrounded app's socket does not count as reaching the user (hub.engine.user_foreground).
    set_background: Callable[[bool], None] | None = None


@dataclass
class Method:
    name: str
    roles: frozenset[str]
    params: dict[str, Any]
    fn: Callable[[Caller, dict[str, Any]], Any]
    summary: str = ""
    result: dict[str, Any] | None = None
    http: bool = True
    # Calls with the same key (e.g. the job they write to) run SERIAL_WIDTH at a time per process; the
    # others wait on the event loop rather than in workers blocked on the same database row. Runs on
    # the loop (must not block), before the wait and again after it; it may raise HubError to refuse
    # a call without taking a worker.
    serial: Callable[[Caller, dict[str, Any]], str | None] | None = None
    # With `serial`: the calls queued on one key run together, up to BATCH_MAX in one worker call
    # (one transaction: a job's bid burst). Gets [(caller, params), ...] and returns one outcome per
    # call, in order: its result, or the HubError refusing it (refusing one refuses only that one).
    batch: Callable[[list[tuple[Caller, dict[str, Any]]]], list[Any]] | None = None
    validator: Draft202012Validator = field(init=False, repr=False)
    # The same schema as a quick test that passes only valid params (hub.fastschema); None: the
    # validator alone.
    quick: Callable[[Any], bool] | None = field(init=False, repr=False)
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.batch is not None and self.serial is None:
            raise ValueError(f"{self.name}: a batch needs a serial key")
        Draft202012Validator.check_schema(self.params)
        self.validator = Draft202012Validator(self.params)
        self.quick = fastschema.quick_check(self.params)
        self.is_async = inspect.iscoroutinefunction(self.fn)


REGISTRY: dict[str, Method] = {}


def method(name: str, roles: tuple[str, ...] | list[str], params: dict[str, Any] | None = None, *,
           summary: str = "", result: dict[str, Any] | None = None, http: bool = True,
           serial: Callable[[Caller, dict[str, Any]], str | None] | None = None,
           batch: Callable[[list[tuple[Caller, dict[str, Any]]]], list[Any]] | None = None
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    unknown = set(roles) - set(ALL_ROLES)
    if unknown:
        raise ValueError(f"{name}: unknown roles {unknown}")
    schema = params if params is not None else {"type": "object", "properties": {}}

    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.rpc_method = Method(name, frozenset(roles), schema, fn,  # type: ignore[attr-defined]
                               summary or (fn.__doc__ or "").strip().split("\n")[0], result, http, serial,
                               batch)
        return fn

    return declare


def declared(module: ModuleType) -> list[Method]:
    """The methods declared (with `@method`) by functions defined in `module`, in source order."""
    return [fn.rpc_method for fn in vars(module).values()
            if callable(fn) and isinstance(getattr(fn, "rpc_method", None), Method)
            and getattr(fn, "__module__", None) == module.__name__]


def register(*modules: ModuleType) -> None:
    """Serve the methods `modules` declare (an app calls this from its AppConfig.ready())."""
    for module in modules:
        for m in declared(module):
            if m.name in REGISTRY and REGISTRY[m.name].fn is not m.fn:
                raise ValueError(f"rpc method {m.name} registered twice")
            REGISTRY[m.name] = m


def check(caller: Caller, name: str, params: Any) -> Method:
    """Role and params check without running: bad_request / forbidden."""
    m = REGISTRY.get(name)
    if m is None:
        raise HubError(BAD_REQUEST, f"unknown method {name!r}")
    if caller.role not in m.roles:
        raise HubError(FORBIDDEN, f"{name} is not allowed for role {caller.role}")
    if not isinstance(params, dict):
        raise HubError(BAD_REQUEST, "params must be an object")
    if _has_nul(params):
        # Postgres text cannot hold U+0000: refused here rather than failing inside the method.
        raise HubError(BAD_REQUEST, f"{name}: strings in params may not contain NUL (U+0000)")
    if m.quick is not None and m.quick(params):
        return m
    error = next(iter(m.validator.iter_errors(params)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "params"
        raise HubError(BAD_REQUEST, f"{name}: {where}: {error.message}"[:300])
    return m


def _has_nul(value: Any) -> bool:
    if type(value) is str:
        return "\x00" in value
    if type(value) is dict:
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if type(value) is list:
        return any(_has_nul(v) for v in value)
    return False


async def call(caller: Caller, name: str, params: Any) -> Any:
    """Run a method for a caller (socket or HTTP); counted in the metrics by method and outcome."""
    label = f"rpc:{name if name in REGISTRY else 'unknown'}"
    # What the method appends to `user:` channels happens in the caller's tenant (hub.store hooks).
    token = EVENT_TENANT.set(caller.tenant)
    try:
        if tracing.ENABLED:
            # The method's name only when it is a registered one: a client cannot mint span names.
            with tracing.span(f"rpc {name if name in REGISTRY else 'unknown'}"):
                result = await _call(caller, name, params)
        else:
            result = await _call(caller, name, params)
    except HubError as exc:
        metrics.command(label, exc.code)
        raise
    finally:
        EVENT_TENANT.reset(token)
    metrics.command(label, "ok")
    return result


async def _call(caller: Caller, name: str, params: Any) -> Any:
    m = check(caller, name, params)
    try:
        if m.is_async:
            return await m.fn(caller, params)
        serial = m.serial
        key = serial(caller, params) if serial is not None else None
        if serial is None or key is None:
            return await run_domain(_attempts, name, m.fn, caller, params)
        if m.batch is not None:
            return await _batched(m, key, caller, params)
        async with _serial(key) as waited:
            if waited:
                # Asked again after the wait: what the calls ahead learnt (a job that closed
                # meanwhile) refuses this one here, without a worker or a transaction.
                serial(caller, params)
            return await run_domain(_attempts, name, m.fn, caller, params)
    except HubError:
        raise
    except DB_DOWN as exc:
        raise _db_error(name, exc) from exc
    except DatabaseError as exc:
        log.exception("rpc %s: database error (SQLSTATE %s)", name, sqlstate(exc))
        raise HubError(INTERNAL, "internal error") from exc
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("rpc %s failed", name)
        raise HubError(INTERNAL, "internal error") from exc


# SQLSTATEs meaning the connection is gone: class 08, or the server shutting down (57P01-57P03).
_LOST = ("08", "57P01", "57P02", "57P03")
_RETRYABLE = "40"  # serialization_failure 40001, deadlock_detected 40P01, ...


def _db_error(name: str, exc: BaseException) -> HubError:
    state = sqlstate(exc)
    kind = getattr(exc, "hub_statement", None) or "?"
    if state is None or state.startswith(_LOST) or isinstance(exc, InterfaceError):
        log.warning("rpc %s: database unavailable: %s (SQLSTATE %s, %s)", name, type(exc).__name__, state, kind)
        return unavailable("the database is unavailable; retry")
    if state.startswith((_RETRYABLE, "53")):  # still colliding after the retries, or out of resources
        log.warning("rpc %s: gave up after retries: SQLSTATE %s on %s", name, state, kind)
        return HubError(UNAVAILABLE, "the hub is busy; retry", retry_after_ms=200)
    log.error("rpc %s: database error SQLSTATE %s on %s: %s", name, state, kind, exc)
    return HubError(INTERNAL, "internal error")


def _tag(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    """Name the statement kind (SELECT, INSERT, ...) on a failing query, for the log."""
    try:
        return execute(sql, params, many, context)
    except DatabaseError as exc:
        if not hasattr(exc, "hub_statement"):
            head = sql.lstrip()[:120]
            kind = "offsets (hub_stream)" if "hub_stream" in head else (head.split(None, 1) or ["?"])[0].upper()
            exc.hub_statement = kind  # type: ignore[attr-defined]
        raise


def _attempts(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run a domain action; a class-40 failure re-runs the whole action in a fresh transaction."""
    retries = settings.HUB_DB_RETRIES
    attempt = 0
    while True:
        try:
            with connection.execute_wrapper(_tag):
                return fn(*args)
        except DB_DOWN as exc:
            state = sqlstate(exc)
            if (state is None or not state.startswith(_RETRYABLE) or attempt >= retries
                    or connection.in_atomic_block):
                raise
            attempt += 1
            log.warning("rpc %s: SQLSTATE %s on %s; re-running (attempt %d of %d)", name, state,
                        getattr(exc, "hub_statement", "?"), attempt + 1, retries + 1)
            time.sleep(random.uniform(0.001, 0.005 * 2 ** attempt))  # desynchronise the colliders


# --- the domain pool ------------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Gate] = weakref.WeakKeyDictionary()


class _Gate:
    """Admission to the domain pool on one event loop: a slot per worker, a bounded wait for one."""

    def __init__(self, workers: int, wait_s: float, queue_max: int) -> None:
        self.workers = workers
        self.wait_s = wait_s
        self.queue_max = queue_max
        self.busy = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.service_ms = 5.0  # moving average of a call's run time, for retry_after_ms

    def busy_error(self) -> HubError:
        metrics.command("rpc:saturated", UNAVAILABLE)
        backlog = len(self.waiters) + 1
        wait = int(min(5000, max(50, backlog * self.service_ms / self.workers)))
        return HubError(UNAVAILABLE, "the hub is busy; retry", retry_after_ms=wait)

    async def acquire(self) -> None:
        if self.busy < self.workers and not self.waiters:
            self.busy += 1
            return
        if len(self.waiters) >= self.queue_max or self.wait_s <= 0:
            raise self.busy_error()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self.release()  # granted a slot just as we gave up: pass it on
            else:
                fut.cancel()
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            if isinstance(exc, TimeoutError):
                raise self.busy_error() from None
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self.busy -= 1

    def done(self, t0: float) -> None:
        self.service_ms += ((time.perf_counter() - t0) * 1000 - self.service_ms) * 0.1
        self.release()


def _pool() -> tuple[ThreadPoolExecutor, _Gate]:
    global _executor
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = _Gate(settings.HUB_DOMAIN_WORKERS, settings.HUB_DOMAIN_WAIT_S,
                                    settings.HUB_DOMAIN_QUEUE)
        if _executor is None or _executor._max_workers != gate.workers:
            _executor = ThreadPoolExecutor(gate.workers, thread_name_prefix="hub-domain")
    assert _executor is not None
    return _executor, gate


SERIAL_WIDTH = 2  # per key and process: one call committing while the next prepares


def _key_busy() -> HubError:
    """A call that waited too long for its key's turn (or found the key's queue full)."""
    metrics.command("rpc:saturated", UNAVAILABLE)
    return HubError(UNAVAILABLE, "the hub is busy; retry", retry_after_ms=100)

_keys: dict[str, asyncio.Semaphore] = {}


@contextlib.asynccontextmanager
async def _serial(key: str) -> AsyncIterator[bool]:
    """At most SERIAL_WIDTH calls per key at a time in this process; waiting is bounded like the pool's.
    Yields whether the call had to wait for its turn."""
    sem = _keys.get(key)
    if sem is None:
        sem = _keys[key] = asyncio.Semaphore(SERIAL_WIDTH)
    try:
        waited = sem.locked()
        if not waited:
            await sem.acquire()  # free: taken at once, no timer
        else:
            try:
                await asyncio.wait_for(sem.acquire(), settings.HUB_DOMAIN_WAIT_S)
            except TimeoutError:
                raise _key_busy() from None
        try:
            yield waited
        finally:
            sem.release()
    finally:
        if sem._value == SERIAL_WIDTH and not sem._waiters and _keys.get(key) is sem:
            del _keys[key]


BATCH_MAX = 64  # calls of one key in one worker call


@dataclass(eq=False)
class _Queued:
    caller: Caller
    params: dict[str, Any]
    done: asyncio.Future[Any]
    taken: bool = False  # in a batch: its answer will come, whatever the wait
    gone: bool = False  # its caller went away: left out of the batch if it has not started yet


@dataclass(eq=False)
class _Batches:
    """One key's queue on one event loop, drained one batch at a time (SERIAL_WIDTH with a backlog)."""

    waiting: collections.deque[_Queued] = field(default_factory=collections.deque)
    running: int = 0


_batches: dict[str, _Batches] = {}
_drainers: set[asyncio.Task[None]] = set()


async def _batched(m: Method, key: str, caller: Caller, params: dict[str, Any]) -> Any:
    """Queue a call on its key; the key's drainers run the queued calls BATCH_MAX at a time. A call
    waits for its turn at most HUB_DOMAIN_WAIT_S (then `unavailable`, having done nothing); a call
    whose caller goes away before its turn never runs."""
    q = _batches.get(key)
    if q is None:
        q = _batches[key] = _Batches()
    if len(q.waiting) >= settings.HUB_DOMAIN_QUEUE:
        raise _key_busy()
    item = _Queued(caller, params, asyncio.get_running_loop().create_future())
    q.waiting.append(item)
    # One batch at a time, which leaves the other workers to other calls; a second once more calls
    # wait than one batch takes (a burst past what one can keep up with).
    if not q.running or (q.running < SERIAL_WIDTH and len(q.waiting) > BATCH_MAX):
        q.running += 1
        task = asyncio.get_running_loop().create_task(_drain(m, key, q))
        _drainers.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(_drainers.discard)
    try:
        await asyncio.wait((item.done,), timeout=settings.HUB_DOMAIN_WAIT_S)
        if not item.done.done():
            if not item.taken:
                q.waiting.remove(item)
                raise _key_busy()
            await asyncio.shield(item.done)
    except asyncio.CancelledError:
        item.gone = True  # the caller went away: never run unless its batch has started
        if not item.taken and item in q.waiting:
            q.waiting.remove(item)
        raise
    return item.done.result()


def _run_batch(m: Method, batch: list[_Queued]) -> list[Any]:
    """In the worker: the batch's calls whose callers are still there (None for the others)."""
    assert m.batch is not None
    here = [i for i in batch if not i.gone]
    outcomes = iter(m.batch([(i.caller, i.params) for i in here]) if here else ())
    return [next(outcomes) if i in here else None for i in batch]


async def _drain(m: Method, key: str, q: _Batches) -> None:
    assert m.batch is not None and m.serial is not None
    try:
        while q.waiting:
            batch: list[_Queued] = []
            while q.waiting and len(batch) < BATCH_MAX:
                item = q.waiting.popleft()
                try:
                    # Asked again at its turn: what the batches ahead learnt (a job that closed
                    # meanwhile) refuses it here, without a worker or a transaction.
                    m.serial(item.caller, item.params)
                except Exception as exc:  # noqa: BLE001 - a refusal, or a bug answered to its caller
                    item.done.set_exception(exc)
                    continue
                item.taken = True
                batch.append(item)
            if not batch:
                continue
            try:
                outcomes = await run_domain(_attempts, m.name, _run_batch, m, batch)
            except Exception as exc:  # noqa: BLE001 - each caller's _call maps it (database errors)
                outcomes = [exc] * len(batch)
            for i, out in zip(batch, outcomes, strict=True):
                if i.gone:
                    i.done.cancel()  # nobody awaits it
                elif isinstance(out, BaseException):
                    i.done.set_exception(out)
                else:
                    i.done.set_result(out)
    finally:
        q.running -= 1
        if not q.running and not q.waiting and _batches.get(key) is q:
            del _batches[key]


def reset_pool() -> None:
    """Forget the pool (tests that change HUB_DOMAIN_* settings); running work finishes on the old one."""
    global _executor
    _gates.clear()
    _executor = None


async def run_domain(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking domain code on the domain pool (bounded wait for a worker, then unavailable)."""
    executor, gate = _pool()
    await gate.acquire()
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    ctx = contextvars.copy_context()
    done: asyncio.Future[Any] = loop.create_future()

    def work() -> None:
        # One hand-back to the loop per call: the result and the freed slot together. The slot is
        # freed when the thread is done, not when an impatient caller stops waiting; a call whose
        # caller gave up before a thread took it never runs.
        result: Any = None
        error: BaseException | None = None
        if not done.cancelled():
            try:
                result = ctx.run(_guarded, fn, *args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                error = exc
        try:
            loop.call_soon_threadsafe(_settle, done, gate, t0, result, error)
        except RuntimeError:  # the loop has closed (end of a test's asyncio.run)
            pass

    try:
        executor.submit(work)
    except BaseException:
        gate.release()
        raise
    return await done


def _settle(done: asyncio.Future[Any], gate: _Gate, t0: float, result: Any, error: BaseException | None) -> None:
    gate.done(t0)
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except (OperationalError, InterfaceError, *DB_DOWN):
        # This worker thread keeps its connection; drop a broken one so the next call reconnects.
        try:
            usable = connection.connection is not None and connection.is_usable()
        except Exception:  # noqa: BLE001 - a broken connection may fail any way
            usable = False
        if not usable:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - closing a dead connection may itself fail
                pass
        raise


def run_sync(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    """Run blocking (ORM) code in a worker thread of the default executor (the socket path's reads);
    a dead DB connection is dropped on failure."""
    return sync_to_async(_guarded, thread_sensitive=False)(fn, *args)
