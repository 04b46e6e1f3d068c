"""hub.sink: how a connection writes frames and knows its backlog (what the slow-consumer cut-off reads):
straight to daphne's transport, or through a writer task on any other ASGI server."""
from __future__ import annotations

import asyncio
import functools
from typing import Any

from hub.pubs import ws_frame
from hub.sink import DaphneSink, QueueSink, make_sink


def test_the_queue_sink_counts_its_backlog_and_closes_after_the_frames_queued() -> None:
    async def scenario() -> None:
        sent: list[dict[str, Any]] = []
        gate = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            await gate.wait()
            sent.append(message)

        sink = make_sink(send)
        assert isinstance(sink, QueueSink)
        sink.write(b'{"a":1}', False)
        sink.write(b"\x81\x00", True)
        assert sink.pending() == 9 and sink.open
        sink.close(4009)
        sink.write(b"late", False)  # after close: dropped
        assert not sink.open
        gate.set()
        await asyncio.wait_for(sink.task, 5)
        assert sent == [{"type": "websocket.send", "text": '{"a":1}'}, {"type": "websocket.send", "bytes": b"\x81\x00"},
                        {"type": "websocket.close", "code": 4009}]
        assert sink.pending() == 0

    asyncio.run(scenario())


class Transport:
    TLS = False
    connected = True
    disconnecting = False

    def __init__(self) -> None:
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0
        self.written: list[bytes] = []
        self.socket = self

    def send(self, frame: bytes) -> int:  # the kernel takes half
        self.written.append(frame[: len(frame) // 2])
        return len(frame) // 2

    def write(self, data: bytes) -> None:  # Twisted queues the rest
        self.written.append(data)
        self._tempDataLen += len(data)


class Proto:
    STATE_OPEN = 1
    state = 1
    send_queue: list[Any] = []
    _perMessageCompress = None

    def __init__(self) -> None:
        self.transport = Transport()

    def handle_reply(self, message: dict[str, Any]) -> None:
        raise AssertionError("not used by the direct path")

    def sendMessage(self, payload: bytes, binary: bool) -> None:  # autobahn's name
        raise AssertionError("not used when nothing is queued")


def test_daphne_frames_go_straight_to_the_socket_and_the_rest_is_backlog() -> None:
    proto = Proto()
    sink = make_sink(functools.partial(Proto.handle_reply, proto))
    assert isinstance(sink, DaphneSink) and sink.open
    frame = ws_frame(b"x" * 100, False)
    sink.write(b"x" * 100, False)
    assert b"".join(proto.transport.written) == frame
    assert sink.pending() == len(frame) - len(frame) // 2
