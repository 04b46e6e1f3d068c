"""hub.centrifuge.codec: commands in (JSON lines, length-delimited Protobuf), replies and pushes out
(the hand-built publication push is the generic encoder's bytes), hub errors as Centrifuge codes."""
from __future__ import annotations

import base64
import json

import orjson
import pytest
from centrifuge.codecs import _ProtobufCodec

from core.errors import HubError
from hub import codec as v1codec
from hub.centrifuge import codec

COMMANDS = [{"id": 1, "connect": {"token": "t"}}, {"id": 2, "publish": {"channel": "chat:r", "data": {"a": 1}}},
            {"id": 3, "ping": {}}]


def test_json_and_protobuf_frames_parse_to_the_same_commands() -> None:
    text = codec.parse("\n".join(json.dumps(c) for c in COMMANDS), False)
    assert [codec.command_kind(c)[:2] for c in text] == [(1, "connect"), (2, "publish"), (3, "ping")]
    sdk = [{**c} for c in COMMANDS]
    # The SDK's dict shape for Protobuf: bytes fields in base64.
    sdk[1] = {"id": 2, "publish": {"channel": "chat:r", "data": base64.b64encode(b'{"a":1}').decode()}}
    binary = codec.parse(bytes(_ProtobufCodec.encode_commands(sdk)), True)
    assert [codec.command_kind(c)[:2] for c in binary] == [(1, "connect"), (2, "publish"), (3, "ping")]
    _cid, _kind, req = codec.command_kind(binary[1])
    assert codec.load_data(req["data"], True, 2) == {"a": 1} and req["channel"] == "chat:r"
    assert codec.parse(codec.reencode(binary, True), True) == binary  # held while connect runs
    with pytest.raises(v1codec.FrameError):
        codec.parse(b"{}", False)  # a JSON connection sends text
    with pytest.raises(v1codec.FrameError):
        codec.parse("\n".join(["{}"] * (codec.MAX_COMMANDS_PER_FRAME + 1)), False)


@pytest.mark.parametrize("sender", ["alice", None])
def test_the_hand_built_publication_push_is_what_the_encoder_makes(sender: str | None) -> None:
    data = orjson.dumps({"text": "hé", "n": [1, 2]})
    pub: dict[str, object] = {"data": data}  # in field order: data, info, offset
    if sender:
        pub["info"] = {"user": sender, "client": ""}
    pub["offset"] = 300
    assert codec.pub_push("chat:r", 300, sender, data, True) == codec.encode({"push": {"channel": "chat:r",
                                                                                     "pub": pub}}, True)
    assert json.loads(codec.pub_push("chat:r", 300, sender, data, False)) == \
        {"push": {"channel": "chat:r", "pub": {**pub, "data": {"text": "hé", "n": [1, 2]}}}}


def test_error_codes() -> None:
    cases = [("bad_request", "x", None, 107), ("bad_request", "unknown namespace 'x'", None, 102),
             ("bad_request", "unknown method 'x'", None, 104), ("forbidden", "x", None, 103),
             ("conflict", "x", "subscribe", 105), ("conflict", "x", "rpc", 409), ("not_found", "x", None, 404),
             ("rate_limited", "x", None, 111), ("too_large", "x", None, 106), ("unavailable", "x", None, 108),
             ("unauthorized", "token expired", None, 109), ("unauthorized", "x", None, 101),
             ("internal", "x", None, 100)]
    for hub_code, message, kind, expected in cases:
        got = codec.error_of(HubError(hub_code, message), kind)
        assert got["code"] == expected, (hub_code, message)
        assert got.get("temporary", False) == (expected in (100, 108, 111))
