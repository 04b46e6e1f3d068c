"""A publication as the hub carries it, encoded once per wire format. No Django."""
from __future__ import annotations

from typing import Any

import msgpack
import orjson


class Pub:
    __slots__ = ("channel", "offset", "epoch", "ts", "sender", "data", "_json", "_msgpack")

    def __init__(self, channel: str, offset: int, epoch: str, ts: int, sender: str | None, data: Any) -> None:
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.ts = ts
        self.sender = sender
        self.data = data
        self._json: bytes | None = None
        self._msgpack: bytes | None = None

    def as_push(self) -> dict[str, Any]:
        return {"push": "pub", "channel": self.channel, "offset": self.offset, "epoch": self.epoch,
                "ts": self.ts, "from": self.sender, "data": self.data}

    def as_item(self) -> dict[str, Any]:
        """The shape inside subscribe/history results (same fields, no `push`)."""
        return {"channel": self.channel, "offset": self.offset, "epoch": self.epoch, "ts": self.ts,
                "from": self.sender, "data": self.data}

    def frame(self, binary: bool) -> bytes:
        # Encoded once per format however many subscribers receive it.
        if binary:
            if self._msgpack is None:
                self._msgpack = msgpack.packb(self.as_push(), use_bin_type=True)
            return self._msgpack
        if self._json is None:
            self._json = orjson.dumps(self.as_push())
        return self._json

    def __repr__(self) -> str:
        return f"Pub({self.channel}#{self.offset})"
