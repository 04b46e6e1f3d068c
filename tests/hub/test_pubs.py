"""hub.pubs: a publication encoded once per wire format, framed once, sized without an extra encode."""
from __future__ import annotations

import json

import msgpack
import orjson
import pytest

from hub.centrifuge import proto
from hub.pubs import Pub, ws_frame


@pytest.mark.parametrize(("size", "header"), [(0, 2), (125, 2), (126, 4), (65_535, 4), (65_536, 10)])
def test_frames_carry_the_payload_length_as_rfc_6455_says(size: int, header: int) -> None:
    frame = ws_frame(b"x" * size, False)
    assert len(frame) == size + header and frame[0] == 0x81
    assert ws_frame(b"", True)[0] == 0x82


def test_one_publication_in_every_format() -> None:
    pub = Pub("acme/chat:r", 7, "ep", 1_700_000_000_000, "al", {"text": "hé", "n": [1, 2.5, None]})
    want = {"push": "pub", "channel": "chat:r", "offset": 7, "epoch": "ep", "ts": 1_700_000_000_000,
            "from": "al", "data": {"text": "hé", "n": [1, 2.5, None]}}
    assert orjson.loads(pub.frame(0)) == want and msgpack.unpackb(pub.frame(1)) == want
    assert pub.wire(0) == ws_frame(pub.frame(0), False) and pub.wire(0) is pub.wire(0)  # built once
    assert pub.wire(1) == ws_frame(pub.frame(1), True)
    cjson = json.loads(pub.frame(2))
    assert cjson == {"push": {"channel": "chat:r", "pub": {"data": want["data"], "offset": 7,
                                                           "info": {"user": "al", "client": ""}}}}
    reply = proto.decode("Reply", proto.split(pub.frame(3))[0])
    assert orjson.loads(reply["push"]["pub"]["data"]) == want["data"] and reply["push"]["channel"] == "chat:r"
    assert pub.as_item() == {k: v for k, v in want.items() if k != "push"}
    assert pub.data_json() == orjson.dumps(want["data"]) and pub.size() == len(pub.frame(0))


def test_a_publication_from_another_process_decodes_its_data_only_when_asked() -> None:
    sent = Pub("acme/chat:r", 3, "ep", 5, None, {"a": [1, "b"]})
    got = Pub.from_json_frame("acme/chat:r", 3, "ep", 5, None, sent.frame(0))
    assert got.frame(0) is not None and got.size() == len(sent.frame(0))
    assert got.data_json() == b'{"a":[1,"b"]}' and got.data == {"a": [1, "b"]}
    assert msgpack.unpackb(got.frame(1)) == msgpack.unpackb(sent.frame(1))
