"""Run the hub on daphne with the protocol's limits, SO_REUSEPORT, and a graceful drain.

    python manage.py serve [--host 127.0.0.1] [--port 8000] [--reuse-port]

SIGTERM: stop accepting, close every socket with 1012, finish in-flight commits, exit.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.settings import is_loopback

log = logging.getLogger("hub.serve")


class Command(BaseCommand):
    help = "Serve the hub (HTTP + WebSocket) on daphne."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--reuse-port", action="store_true",
                            help="SO_REUSEPORT: several processes share one address")

    def handle(self, *args: Any, **opts: Any) -> None:
        if settings.USING_DEV_SECRET and not is_loopback(opts["host"]):
            # The development secret is public: a hub reachable from outside must have its own.
            raise CommandError(f"the development secret is refused on a non-loopback address ({opts['host']}); "
                               "set HUB_SECRET")
        # Importing daphne.server installs Twisted's asyncio reactor (unless one already is).
        from daphne.server import Server
        from twisted.internet import reactor

        from asgi import application
        from hub import tasks
        from hub.guard import install_daphne_guards

        install_daphne_guards()

        # Before listening: a process must not take requests it cannot serve yet (see hub.tasks).
        tasks.run_startup()
        # Everything loaded so far (Django, the apps, numba, the matcher) lives as long as the
        # process: move it out of the cyclic GC's reach. A full collection walking it stalled the
        # event loop for ~250 ms, the whole p99 of publish-to-delivery at 2,000 publications/s.
        gc.collect()
        gc.freeze()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if opts["reuse_port"]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((opts["host"], opts["port"]))
        except OSError as exc:
            sock.close()
            raise CommandError(f"cannot listen on {opts['host']}:{opts['port']}: {exc.strerror} "
                               "(another hub running? set PORT or --port)") from exc
        sock.listen(1024)
        sock.setblocking(False)
        # Twisted adopts (dups) the descriptor and closes the original: hand it over for good.
        fd = sock.detach()
        _patch_adopt(reactor)
        server = Server(
            application=application,
            endpoints=[f"fd:fileno={fd}:domain=INET"],
            signal_handlers=False,
            ping_interval=settings.HUB_PING_S,
            ping_timeout=settings.HUB_IDLE_TIMEOUT_S,
            websocket_connect_timeout=10,
            # Autobahn's own cap sits above ours so the hub answers 1009 with a clean close frame.
            websocket_max_message_size=settings.HUB_MAX_FRAME_BYTES * 2,
            websocket_max_frame_size=settings.HUB_MAX_FRAME_BYTES * 2,
            application_close_timeout=5,
            verbosity=0,
        )
        state = {"draining": False}

        def drain() -> None:
            if state["draining"]:
                return
            state["draining"] = True
            log.info("SIGTERM: draining")
            for listener in server.listeners:
                port = getattr(listener, "result", None)
                if port is not None and hasattr(port, "stopListening"):
                    port.stopListening()
            asyncio.ensure_future(_drain_and_stop(reactor))

        def on_signal(signum: int, frame: Any) -> None:
            reactor.callFromThread(drain)

        def install() -> None:
            # Clean close frames (1009) instead of dropped TCP; UTF-8 is checked by the JSON parser anyway.
            server.ws_factory.setProtocolOptions(failByDrop=False, utf8validateIncoming=False)
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            asyncio.ensure_future(_warm_up())

        reactor.callWhenRunning(install)
        self.stdout.write(f"hub serving on http://{opts['host']}:{opts['port']} (ws at /ws), pid {os.getpid()}")
        self.stdout.flush()
        server.run()


def _patch_adopt(reactor: Any) -> None:
    # Twisted's "fd:" endpoint parser hands the family over as a string ("INET"); map it.
    original = reactor.adoptStreamPort

    def adopt(fileno: int, family: Any, factory: Any) -> Any:
        if isinstance(family, str):
            family = getattr(socket, "AF_" + family)
        return original(fileno, family, factory)

    reactor.adoptStreamPort = adopt


async def _warm_up() -> None:
    from hub import tasks
    from hub.engine import get_engine

    engine = await get_engine()
    tasks.start(engine)


async def _drain_and_stop(reactor: Any) -> None:
    from hub.engine import get_engine

    engine = await get_engine()
    await engine.drain(settings.HUB_DRAIN_S)
    await asyncio.sleep(0.3)  # let the close frames leave
    reactor.stop()
