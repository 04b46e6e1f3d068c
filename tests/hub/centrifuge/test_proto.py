"""hub.centrifuge.proto: varints, messages and framing of the Centrifuge Protobuf protocol, and the
publish fast path of decode_command agreeing with the generic decoder."""
from __future__ import annotations

import pytest

from hub.centrifuge import proto


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32 - 1, 2**63])
def test_varints_round_trip(n: int) -> None:
    raw = proto.varint(n)
    assert proto.read_varint(raw + b"\x07", 0) == (n, len(raw))
    assert proto.read_varint(proto.varint(-1), 0)[0] == 2**64 - 1  # negative ints: ten bytes, as protobuf


def test_malformed_varints_and_frames_are_refused() -> None:
    with pytest.raises(proto.ProtoError, match="truncated"):
        proto.read_varint(b"\x80\x80", 0)
    with pytest.raises(proto.ProtoError, match="too long"):
        proto.read_varint(b"\xff" * 11, 0)
    with pytest.raises(proto.ProtoError, match="truncated"):
        proto.split(proto.delimited(b"abc")[:-1])


def test_messages_round_trip_and_frames_split() -> None:
    reply = {"id": 7, "history": {"publications": [{"data": b'{"a":1}', "offset": 5, "info": {"user": "al"}}],
                                  "epoch": "e1", "offset": 9}}
    raw = proto.encode("Reply", reply)
    back = proto.decode("Reply", raw)
    assert back["id"] == 7 and back["history"]["epoch"] == "e1" and back["history"]["offset"] == 9
    (pub,) = back["history"]["publications"]
    assert (pub["data"], pub["offset"], pub["info"]["user"]) == (b'{"a":1}', 5, "al")
    assert proto.split(proto.delimited(raw) + proto.delimited(b"") + proto.delimited(raw)) == [raw, b"", raw]


def test_the_publish_fast_path_reads_what_the_generic_decoder_reads() -> None:
    for cid in (1, 200, 70_000):
        for channel in ("chat:r", "chat:" + "x" * 150):
            raw = proto.encode("Command", {"id": cid, "publish": {"channel": channel, "data": b'{"t":"' + b"y" * 200
                                                                  + b'"}'}})
            assert proto.decode_command(raw) == proto.decode("Command", raw)
    other = proto.encode("Command", {"id": 3, "subscribe": {"channel": "chat:r", "recover": True, "offset": 4}})
    assert proto.decode_command(other) == proto.decode("Command", other)
