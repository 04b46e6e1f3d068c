"""Run the hub on daphne with the protocol's limits, SO_REUSEPORT, and a graceful drain.

    python manage.py serve [--host 127.0.0.1] [--port 8000] [--reuse-port]

SIGTERM: drain (hub.lifecycle: readyz 503, every socket closed with 1012, in-flight commits finished,
the shut-down hooks run), then stop listening and exit. With --reuse-port it stops listening first,
so the other processes on the address take every new connection while it drains.
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.settings import is_loopback


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
        from hub import lifecycle
        from hub.guard import install_daphne_guards

        install_daphne_guards()

        # Before listening: a process must not take requests it cannot serve yet (see hub.tasks).
        # It also moves everything loaded so far out of the cyclic GC's reach (hub.lifecycle).
        lifecycle.run_startup_once()
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
        ports: list[Any] = []  # the listening port, to stop it (daphne keeps no handle on it)
        _patch_adopt(reactor, ports)
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

        def stop_listening() -> None:
            while ports:
                ports.pop().stopListening()

        def stop(signum: int) -> None:
            # Drained (hub.lifecycle): stop listening, let the close frames leave, stop.
            stop_listening()
            reactor.callLater(0.3, reactor.stop)  # type: ignore[arg-type,misc]

        def install() -> None:
            # Clean close frames (1009) instead of dropped TCP; UTF-8 is checked by the JSON parser anyway.
            # Autobahn waits 1 s for the answer to a close frame, counted from when it is queued.
            server.ws_factory.setProtocolOptions(failByDrop=False, utf8validateIncoming=False,
                                                 closeHandshakeTimeout=settings.HUB_CLOSE_TIMEOUT_S)
            # SIGTERM/SIGINT: drain (readyz 503, sockets closed with 1012, commits finished, the
            # shut-down hooks), then stop.
            # With --reuse-port the siblings on the same address take new connections at once: this
            # process stops listening as its drain begins (its readyz is not reachable alone anyway).
            lifecycle.install_signal_handlers(asyncio.get_event_loop(), then=stop,
                                              first=stop_listening if opts["reuse_port"] else None)
            asyncio.ensure_future(lifecycle.ensure_started(install_signals=False))

        reactor.callWhenRunning(install)
        self.stdout.write(f"hub serving on http://{opts['host']}:{opts['port']} (ws at /ws), pid {os.getpid()}")
        self.stdout.flush()
        server.run()


def _patch_adopt(reactor: Any, ports: list[Any]) -> None:
    # Twisted's "fd:" endpoint parser hands the family over as a string ("INET"); map it. The port
    # is kept: daphne's listener Deferreds end with None, not the port.
    original = reactor.adoptStreamPort

    def adopt(fileno: int, family: Any, factory: Any) -> Any:
        if isinstance(family, str):
            family = getattr(socket, "AF_" + family)
        port = original(fileno, family, factory)
        ports.append(port)
        return port

    reactor.adoptStreamPort = adopt
