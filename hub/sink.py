"""How a connection writes frames and knows how much it has queued (slow-consumer detection).

On daphne the ASGI `send` is `partial(server.handle_reply, protocol)` and never suspends; we
write straight to the autobahn protocol (no per-frame coroutine, bytes as they are) and read the
Twisted transport's unsent byte count. Any other ASGI server gets a queued writer task.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from hub.pubs import ws_frame

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Sink:
    def write(self, payload: bytes, binary: bool) -> None:
        raise NotImplementedError

    def write_frame(self, frame: bytes, payload: bytes, binary: bool) -> None:
        """`frame` is `payload` already framed (hub.pubs.ws_frame); sinks that can, write it as is."""
        self.write(payload, binary)

    def pending(self) -> int:
        raise NotImplementedError

    def close(self, code: int) -> None:
        raise NotImplementedError

    @property
    def open(self) -> bool:
        raise NotImplementedError


class DaphneSink(Sink):
    """Frames go straight to the Twisted transport: autobahn's sendMessage costs more than the
    write itself (per-frame log formatting, stats), and refuses outgoing messages above the
    incoming size limit, which a large history reply may legitimately be."""

    __slots__ = ("proto", "transport", "_open_state")

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.transport = proto.transport
        self._open_state = proto.STATE_OPEN

    @property
    def open(self) -> bool:
        return bool(self.proto.state == self._open_state)

    def write(self, payload: bytes, binary: bool) -> None:
        self.write_frame(ws_frame(payload, binary), payload, binary)

    def write_frame(self, frame: bytes, payload: bytes, binary: bool) -> None:
        proto = self.proto
        if proto.state != self._open_state:
            return
        # Direct only when autobahn has nothing queued and no compression was negotiated.
        if proto.send_queue or proto._perMessageCompress is not None:
            proto.sendMessage(payload, binary)
            return
        t = self.transport
        if t.TLS or t._tempDataLen or len(t.dataBuffer) > t.offset or not t.connected or t.disconnecting:
            t.write(frame)
            return
        # Nothing queued in Twisted: send now. Twisted's write would register the socket for
        # writing and write on the next reactor turn (two epoll_ctl calls and a turn per frame).
        try:
            sent = t.socket.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            t.write(frame)  # let Twisted see the error and close the connection its own way
            return
        if sent < len(frame):
            t.write(frame[sent:])

    def pending(self) -> int:
        t = self.transport
        try:
            return len(t.dataBuffer) - t.offset + t._tempDataLen
        except AttributeError:
            return 0

    def close(self, code: int) -> None:
        if self.proto.state == self._open_state:
            # sendCloseFrame: autobahn's sendClose() refuses the protocol codes 1009 and 1012.
            try:
                self.proto.sendCloseFrame(code=code, isReply=False)
            except OSError:
                return  # the socket is already gone
        if self.pending() > settings.HUB_MAX_QUEUE_BYTES:
            # A reader this far behind (the slow-consumer cut-off) will not get to the close frame:
            # drop it. Any other close waits HUB_CLOSE_TIMEOUT_S for the answer (autobahn's timer),
            # so a slow but live reader still gets every frame before the close and its code.
            from twisted.internet import reactor

            reactor.callLater(2, _abort, self.transport)  # type: ignore[attr-defined,arg-type]


def _abort(transport: Any) -> None:
    try:
        transport.abortConnection()
    except Exception:  # noqa: BLE001 - already gone
        pass


class QueueSink(Sink):
    """Generic ASGI: one writer task per connection, bytes accounted while queued."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.queue: asyncio.Queue[tuple[bytes | None, bool, int]] = asyncio.Queue()
        self.bytes = 0
        self._open = True
        self.task = asyncio.get_running_loop().create_task(self._run())

    @property
    def open(self) -> bool:
        return self._open

    def write(self, payload: bytes, binary: bool) -> None:
        if self._open:
            self.bytes += len(payload)
            self.queue.put_nowait((payload, binary, 0))

    def pending(self) -> int:
        return self.bytes

    def close(self, code: int) -> None:
        if self._open:
            self._open = False
            self.queue.put_nowait((None, False, code))

    async def _run(self) -> None:
        try:
            while True:
                payload, binary, code = await self.queue.get()
                if payload is None:
                    await self.send({"type": "websocket.close", "code": code})
                    return
                self.bytes -= len(payload)
                if binary:
                    await self.send({"type": "websocket.send", "bytes": payload})
                else:
                    await self.send({"type": "websocket.send", "text": payload.decode()})
        except Exception:  # noqa: BLE001 - the peer went away
            self._open = False


def make_sink(send: Send) -> Sink:
    if isinstance(send, functools.partial) and send.args:
        proto = send.args[0]
        if hasattr(proto, "sendMessage") and hasattr(proto, "transport"):
            return DaphneSink(proto)
    return QueueSink(send)
