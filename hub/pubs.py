"""A publication as the hub carries it, encoded once per wire format. No Django.

`channel` is the internal, tenant-qualified name (`<tenant>/chat:r`, see hub.channels); every
frame and reply item shows clients the protocol name (`chat:r`).

`wire(fmt)` is the complete server-to-client WebSocket frame (header + payload): built once
per publication and format, written as-is to every subscriber's transport. Formats: 0 protocol
v1 JSON, 1 protocol v1 MessagePack (so a v1 connection's `binary` flag is its format), 2 and 3
the Centrifuge client protocol in JSON and Protobuf (hub.centrifuge).
"""
from __future__ import annotations

import struct
from typing import Any

import msgpack
import orjson

from hub.centrifuge.codec import pub_push

_UNSET: Any = object()


def ws_frame(payload: bytes, binary: bool) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 section 5.2)."""
    b0 = 0x82 if binary else 0x81
    n = len(payload)
    if n < 126:
        return bytes((b0, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


def protocol_name(name: str) -> str:
    """`<tenant>/chat:r` -> `chat:r` (hub.channels.unqualify; repeated here: no Django imports)."""
    return name.partition("/")[2] or name


class Pub:
    __slots__ = ("channel", "offset", "epoch", "ts", "sender", "_data", "_json", "_msgpack", "_wire_json",
                 "_wire_msgpack", "_size", "_other", "trace")

    def __init__(self, channel: str, offset: int, epoch: str, ts: int, sender: str | None, data: Any,
                 json_frame: bytes | None = None) -> None:
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.ts = ts
        self.sender = sender
        self._data = data
        self._json: bytes | None = json_frame
        self._msgpack: bytes | None = None
        self._wire_json: bytes | None = None
        self._wire_msgpack: bytes | None = None
        self._size = 0
        self._other: dict[int, tuple[bytes, bytes]] | None = None  # format -> (payload, wire frame)
        # The SpanContext of the work that published it (core.tracing; None when tracing is off).
        self.trace: Any = None

    @classmethod
    def from_json_frame(cls, channel: str, offset: int, epoch: str, ts: int, sender: str | None,
                        frame: bytes) -> Pub:
        """A publication that arrived from another process as its JSON push frame: data decoded lazily."""
        return cls(channel, offset, epoch, ts, sender, _UNSET, frame)

    @property
    def data(self) -> Any:
        if self._data is _UNSET:
            assert self._json is not None
            self._data = orjson.loads(self._json)["data"]
        return self._data

    def as_push(self) -> dict[str, Any]:
        return {"push": "pub", "channel": protocol_name(self.channel), "offset": self.offset, "epoch": self.epoch,
                "ts": self.ts, "from": self.sender, "data": self.data}

    def as_item(self) -> dict[str, Any]:
        """The shape inside subscribe/history results (same fields, no `push`)."""
        return {"channel": protocol_name(self.channel), "offset": self.offset, "epoch": self.epoch, "ts": self.ts,
                "from": self.sender, "data": self.data}

    def frame(self, binary: int) -> bytes:
        # Encoded once per format however many subscribers receive it.
        if binary > 1:
            return self._centrifuge(binary)[0]
        if binary:
            if self._msgpack is None:
                self._msgpack = msgpack.packb(self.as_push(), use_bin_type=True)
            return self._msgpack
        if self._json is None:
            self._json = orjson.dumps(self.as_push())
        return self._json

    def size(self) -> int:
        """Bytes this publication takes in a frame, fixed at first ask (caches and replies count it):
        whichever encoding was already built, so counting costs no extra encode on the fan-out path."""
        if not self._size:
            frame = self._json if self._json is not None else self._msgpack
            if frame is None and self._other:  # only Centrifuge subscribers: their payload will do
                frame = next(iter(self._other.values()))[0]
            self._size = len(frame if frame is not None else self.frame(False))
        return self._size

    def wire(self, binary: int) -> bytes:
        if binary > 1:
            return self._centrifuge(binary)[1]
        if binary:
            if self._wire_msgpack is None:
                self._wire_msgpack = ws_frame(self.frame(True), True)
            return self._wire_msgpack
        if self._wire_json is None:
            self._wire_json = ws_frame(self.frame(False), False)
        return self._wire_json

    def data_json(self) -> bytes:
        """The data as JSON bytes: cut from the v1 JSON frame when there is one (`data` is its last
        key, and no earlier value can hold an unescaped quote), else encoded."""
        if self._json is not None:
            return self._json[self._json.index(b'"data":') + 7:-1]
        return orjson.dumps(self.data)

    def _centrifuge(self, fmt: int) -> tuple[bytes, bytes]:
        other = self._other
        if other is None:
            other = self._other = {}
        pair = other.get(fmt)
        if pair is None:
            binary = fmt == 3
            payload = pub_push(protocol_name(self.channel), self.offset, self.sender, self.data_json(), binary)
            pair = other[fmt] = (payload, ws_frame(payload, binary))
        return pair

    def __repr__(self) -> str:
        return f"Pub({self.channel}#{self.offset})"
