"""Work every hub process runs: start-up hooks (before the process accepts connections), periodic
domain sweeps (offer expiry, missed calls) and shut-down hooks (after the drain), all registered by
the apps. Sweeps must be idempotent and safe to run in several processes at once. hub.lifecycle
runs them the same way under every server."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from core import tracing
from hub.rpc import run_sync

if TYPE_CHECKING:
    from hub.engine import Engine

log = logging.getLogger("hub.tasks")
SWEEPS: list[tuple[str, float, Callable[[float], object]]] = []
STARTUP: list[tuple[str, Callable[[], object]]] = []
SHUTDOWN: list[tuple[str, Callable[[], object]]] = []
_started: weakref.WeakSet[Engine] = weakref.WeakSet()  # engines whose sweeps run
LOOPS: list[tuple[str, Callable[[Engine], Awaitable[None]]]] = []


def on_start(name: str, fn: Callable[[], object]) -> None:
    """Register `fn()` (sync, may use the ORM) to run once before the process starts listening,
    so that a process which answers requests has loaded what it serves."""
    STARTUP.append((name, fn))


def run_startup() -> None:
    """Run the start-up hooks in order. A failing hook is logged, not fatal: the process still
    serves, and the app must recover later on its own (e.g. from its sweep)."""
    for name, fn in STARTUP:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception:
            log.exception("start-up hook %s failed", name)
        else:
            log.info("start-up hook %s done in %.2f s", name, time.perf_counter() - t0)
    # The hooks ran on what becomes the event-loop thread: leave no database connection there.
    from django.db import connections

    connections.close_all()


def every(seconds: float, name: str, fn: Callable[[float], object]) -> None:
    """Register `fn(now)` (sync, may use the ORM) to run every `seconds` in each hub process."""
    SWEEPS.append((name, seconds, fn))


def on_stop(name: str, fn: Callable[[], object]) -> None:
    """Register `fn()` (sync, may use the ORM) to run once when the process drains, after the last
    socket closed and the last publication committed (e.g. flush state other processes restart from)."""
    SHUTDOWN.append((name, fn))


def on_loop(name: str, fn: Callable[[Engine], Awaitable[None]]) -> None:
    """Register `fn(engine)`, a coroutine run for the life of each hub process on its event loop
    (a worker that waits on the network, e.g. push delivery). It must stop when engine.draining."""
    LOOPS.append((name, fn))


def run_shutdown() -> None:
    """Run the shut-down hooks in order; a failing hook is logged and the next one still runs."""
    for name, fn in SHUTDOWN:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception:
            log.exception("shut-down hook %s failed", name)
        else:
            log.info("shut-down hook %s done in %.2f s", name, time.perf_counter() - t0)
    from django.db import connections

    connections.close_all()


def start(engine: Engine) -> None:
    """Start the sweeps on the engine's loop, once per engine; they stop when it drains."""
    if engine in _started:
        return
    _started.add(engine)
    for name, seconds, fn in SWEEPS:
        engine.loop.create_task(_loop(engine, name, seconds, fn))
    for name, coro in LOOPS:
        engine.loop.create_task(_forever(engine, name, coro))


async def _forever(engine: Engine, name: str, fn: Callable[[Engine], Awaitable[None]]) -> None:
    while not engine.draining:
        try:
            await fn(engine)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("loop %s failed; restarting in 1 s", name)
            await asyncio.sleep(1)


async def _loop(engine: Engine, name: str, seconds: float, fn: Callable[[float], object]) -> None:
    while not engine.draining:
        try:
            if tracing.ENABLED and tracing.SWEEPS:
                await _traced_sweep(name, fn)
            else:
                await run_sync(fn, time.time())
        except Exception:
            log.exception("sweep %s failed", name)
        await asyncio.sleep(seconds)


async def _traced_sweep(name: str, fn: Callable[[float], object]) -> None:
    """A sweep run as a root span (each run its own trace); what it publishes carries it on."""
    span = tracing.start(f"sweep {name}", use_current=False)
    with tracing.active(span):
        result = await run_sync(fn, time.time())
        if isinstance(result, int):
            span.set_attribute("hub.sweep.count", result)
