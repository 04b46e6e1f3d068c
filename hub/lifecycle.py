"""One hub process's life, the same under every server: start once, sweep, drain on SIGTERM.

- `manage.py serve` drives it itself: start-up hooks before it listens, then `ensure_started` on
  its loop and `drain` from its own signal handler.
- Servers that speak the ASGI lifespan protocol (uvicorn, hypercorn) start it from
  `lifespan.startup` and drain from `lifespan.shutdown` (asgi.py).
- Servers without it (daphne, `runserver`) start it on the first HTTP or WebSocket scope; that
  scope waits until the start-up hooks have run.

Starting = the apps' start-up hooks (hub.tasks.on_start, once per process, in a worker thread),
the engine, its sweeps, the metrics sync, and (from the main thread) SIGTERM/SIGINT handlers.
The handlers drain first and then hand the signal to the server's own handler (uvicorn's,
Twisted's, or the default), so the server shuts down the way it always does, only later.

Draining = `/readyz` answers 503, new sockets are refused, other HTTP requests (not probes, metrics
or static files) get 503 `unavailable` (DrainGate), every socket is closed with 1012,
in-flight publications commit (at most HUB_DRAIN_S), the sweeps stop, the shut-down hooks run
(the matcher flushes its provider snapshot), and the process keeps answering for
HUB_DRAIN_GRACE_S more (load balancers see the 503) before the server stops.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from hub.engine import Engine

log = logging.getLogger("hub.lifecycle")

_hooks_lock = threading.Lock()
_hooks_done = False
_ready: set[int] = set()  # id() of loops whose start finished
_starting: dict[int, asyncio.Task[Engine]] = {}
_draining = False
_drain_task: asyncio.Task[None] | None = None
_signals_installed = False


def draining() -> bool:
    """True from the moment the drain begins (readyz answers 503, new sockets are refused)."""
    return _draining


def run_startup_once() -> None:
    """The apps' start-up hooks, once per process (any thread; later calls return at once)."""
    global _hooks_done
    with _hooks_lock:
        if _hooks_done:
            return
        from hub import tasks

        tasks.run_startup()
        _hooks_done = True
        # What start-up loaded (Django, the apps, numba, the matcher) lives as long as the process:
        # out of the cyclic GC's reach (a full collection walking it stalled the loop ~250 ms).
        gc.collect()
        gc.freeze()


def started() -> bool:
    """This loop's start has finished (a cheap check for every scope)."""
    try:
        return id(asyncio.get_running_loop()) in _ready
    except RuntimeError:
        return False


async def ensure_started(install_signals: bool = True) -> Engine:
    """Start this process on the running loop, once; concurrent callers wait for the same start."""
    loop = asyncio.get_running_loop()
    task = _starting.get(id(loop))
    if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
        # First call, or the last start failed (e.g. Redis unreachable): this request tries again.
        task = _starting[id(loop)] = loop.create_task(_start(loop, install_signals))
    return await asyncio.shield(task)


async def _start(loop: asyncio.AbstractEventLoop, install_signals: bool) -> Engine:
    from core import metrics
    from hub import tasks
    from hub.engine import get_engine

    if not _hooks_done:
        # Blocking (ORM, numba): off the loop, in a thread of its own that closes its connections.
        await asyncio.to_thread(run_startup_once)
    engine = await get_engine()
    tasks.start(engine)
    metrics.start(engine)
    if install_signals:
        install_signal_handlers(loop)
    _ready.add(id(loop))
    log.info("hub process %d started (engine %s)", os.getpid(), engine.node)
    return engine


def install_signal_handlers(loop: asyncio.AbstractEventLoop, then: Callable[[int], None] | None = None,
                            first: Callable[[], None] | None = None) -> bool:
    """SIGTERM/SIGINT drain this process (`first()` runs as the drain begins), then `then(signum)`
    runs, or else the handler that was installed before (the server's), or the default action. Only
    from the main thread (where Python delivers signals); elsewhere (runserver's autoreloader)
    nothing is installed."""
    global _signals_installed
    if _signals_installed or threading.current_thread() is not threading.main_thread():
        return False
    _signals_installed = True
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)

        def handler(sig: int, frame: FrameType | None, previous: Any = previous) -> None:
            # Python runs this between two bytecodes of the main thread: hand over to the loop.
            loop.call_soon_threadsafe(_on_signal, sig, previous, then, first)

        signal.signal(signum, handler)
    return True


def _on_signal(signum: int, previous: Any, then: Callable[[int], None] | None,
               first: Callable[[], None] | None = None) -> None:
    global _drain_task
    if _drain_task is not None:
        if signum == signal.SIGINT:  # a second Ctrl-C: stop now
            _hand_over(signum, previous, then)
        return
    log.info("signal %d: draining", signum)
    if first is not None:
        first()

    async def drain_then_hand_over() -> None:
        try:
            await drain()
        finally:
            _hand_over(signum, previous, then)

    asyncio.get_running_loop().create_task(drain_then_hand_over())


def _hand_over(signum: int, previous: Any, then: Callable[[int], None] | None) -> None:
    if then is not None:
        then(signum)
    elif callable(previous):
        previous(signum, None)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or unknown): the default action, as if we had never been here
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


async def drain() -> None:
    """Drain this process once (later calls wait for the same drain); see the module doc."""
    global _drain_task, _draining
    if _drain_task is None:
        _draining = True
        _drain_task = asyncio.get_running_loop().create_task(_drain())
    await asyncio.shield(_drain_task)


async def _drain() -> None:
    from core import metrics
    from hub import tasks
    from hub.engine import current

    engine = current()
    if engine is not None:
        await engine.drain(settings.HUB_DRAIN_S)
    await asyncio.to_thread(tasks.run_shutdown)
    try:
        metrics.sync_engine()  # multiprocess: the last counts reach the shared files
    except Exception:  # metrics must never stop a drain
        log.exception("final metrics sync failed")
    if settings.HUB_DRAIN_GRACE_S > 0:
        await asyncio.sleep(settings.HUB_DRAIN_GRACE_S)
    log.info("drained")


# What a draining process still answers over HTTP: probes, metrics, static files.
ANSWERED_WHILE_DRAINING = ("/healthz", "/readyz", "/metrics", "/static/")
DRAIN_RETRY_MS = 1000


class DrainGate:
    """ASGI layer for HTTP: once the drain begins, requests other than probes, metrics and static
    files get 503 `unavailable` (with Retry-After) instead of work the process could no longer
    finish or announce to the others (its broker is closing). Retried, they reach another process."""

    def __init__(self, app: Callable[[dict[str, Any], Any, Any], Any]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not _draining or scope["type"] != "http" or scope["path"].startswith(ANSWERED_WHILE_DRAINING):
            await self.app(scope, receive, send)
            return
        import orjson

        from core.errors import HubError, unavailable

        err: HubError = unavailable("this hub process is restarting; retry")
        err.retry_after_ms = DRAIN_RETRY_MS
        body = orjson.dumps({"error": err.as_dict()})
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(DRAIN_RETRY_MS // 1000).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
    """The ASGI lifespan protocol (uvicorn, hypercorn): start on startup, drain on shutdown."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "lifespan.startup":
            try:
                await ensure_started()
            except Exception as exc:
                log.exception("start-up failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            try:
                await drain()
            except Exception as exc:
                log.exception("drain failed")
                await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return
