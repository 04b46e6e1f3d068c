"""Hostile input on `/connection/websocket`, both encodings: random, truncated and mutated frames.

The decoder alone first (any bytes: only FrameError), then a live hub: sockets that connect
properly and then send broken frames get well-formed replies (never `internal`), or are closed
with a protocol disconnect code; the hub stays up and logs no traceback. Replies are decoded with
the SDK's own Protobuf code (centrifuge-python's generated client_pb2), not the hub's.
Deterministic: HUB_FUZZ_SEED overrides the seed.
"""
from __future__ import annotations

import json
import os
import random
import urllib.request
from typing import Any

import pytest
from centrifuge.codecs import _JsonCodec, _ProtobufCodec
from websockets.sync.client import connect

from hub import codec as v1codec
from hub.centrifuge import codec, proto
from tests.hub.centrifuge.sdk import path
from tests.support import HubServer, mint, uid

SEED = int(os.environ.get("HUB_FUZZ_SEED", "20261130"))
CLOSE_OK = {3501, 1009, 3500, 1000}  # bad request (too many bad frames), too big, no connect first


def valid_commands(rng: random.Random, channel: str, first_id: int) -> list[dict[str, Any]]:
    """Commands in the SDK's own dict shape (data as JSON values; bytes for Protobuf are made later)."""
    pick = [
        {"subscribe": {"channel": channel, "recover": rng.random() < .5, "offset": rng.randint(0, 5),
                       "epoch": rng.choice(["", "x", "abcd"]), "join_leave": True}},
        {"publish": {"channel": channel, "data": {"t": rng.randint(0, 99)}}},
        {"history": {"channel": channel, "limit": rng.randint(-2, 120), "reverse": rng.random() < .5}},
        {"presence": {"channel": channel}},
        {"presence_stats": {"channel": channel}},
        {"unsubscribe": {"channel": channel}},
        {"rpc": {"method": rng.choice(["rooms.list", "no.such", "match.find", ""]), "data": {}}},
        {"refresh": {"token": "nope"}},
        {"send": {"data": {"x": 1}}},
        {"sub_refresh": {"channel": channel}},
        {"ping": {}},
    ]
    return [{"id": first_id + i, **rng.choice(pick)} for i in range(rng.randint(1, 4))]


def encode(cmds: list[dict[str, Any]], binary: bool) -> str | bytes:
    if binary:
        out = []
        for c in cmds:
            c = json.loads(json.dumps(c))
            for req in c.values():
                if isinstance(req, dict) and "data" in req:
                    import base64

                    req["data"] = base64.b64encode(json.dumps(req["data"]).encode()).decode()
            out.append(c)
        return bytes(_ProtobufCodec.encode_commands(out))
    return str(_JsonCodec.encode_commands(cmds))


def mutate(frame: str | bytes, rng: random.Random) -> str | bytes:
    raw = bytearray(frame.encode() if isinstance(frame, str) else frame)
    how = rng.randrange(5)
    if how == 0 and raw:
        del raw[rng.randrange(len(raw)):]  # truncated
    elif how == 1 and raw:
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)  # bytes flipped
    elif how == 2:
        raw = bytearray(rng.randbytes(rng.randint(0, 200)))  # noise
    elif how == 3 and raw:
        raw += raw[: rng.randrange(len(raw))]  # a tail of itself appended
    else:
        raw = bytearray(rng.choice([b"\xff" * 12, b"\x0a\xff\xff\xff\xff\x0f", b"\x05\x08\x01\x2a\x7f",
                                    b'{"id":1}', b'{"id":-1,"publish":{}}', b'[]', b'{"id":1,"rpc":7}',
                                    b'{"id":4294967296,"ping":{}}', b'{"id":2,"connect":{},"ping":{}}']))
    if isinstance(frame, str):
        return raw.decode(errors="replace")
    return bytes(raw)


def test_decoder_refuses_anything_malformed_with_frame_error() -> None:
    rng = random.Random(SEED)
    for _ in range(6000):
        binary = rng.random() < .5
        frame = mutate(encode(valid_commands(rng, "chat:r", 1), binary), rng)
        try:
            for cmd in codec.parse(frame, binary):
                cid, kind, req = codec.command_kind(cmd)
                if kind in ("publish", "rpc", "send") and "data" in req:
                    codec.load_data(req["data"], binary, cid)
        except v1codec.FrameError:
            pass
    # Nesting is bounded: a deep FilterNode chain is refused, not recursed into.
    node = b""
    for _ in range(40):
        node = b"\x32" + proto.varint(len(node)) + node
    sub = b"\x0a\x06chat:r\x6a" + proto.varint(len(node)) + node
    cmd = b"\x08\x01\x2a" + proto.varint(len(sub)) + sub
    with pytest.raises(v1codec.FrameError):
        codec.parse(proto.delimited(cmd), True)


def replies(frame: str | bytes, binary: bool) -> list[dict[str, Any]]:
    if binary:
        assert isinstance(frame, bytes)
        return list(_ProtobufCodec.decode_replies(frame))
    assert isinstance(frame, str)
    return [json.loads(line) for line in frame.strip().split("\n")]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "protobuf"])
def test_live_hub_survives_broken_frames(live_hub: HubServer, binary: bool) -> None:
    rng = random.Random(SEED + binary)
    log_from = live_hub.log_path.stat().st_size
    url = path(live_hub.url)
    closes: list[int] = []
    answered = 0
    for _ in range(8):
        user = uid("f")
        with connect(url, subprotocols=["centrifuge-protobuf"] if binary else None, max_size=None,
                     open_timeout=10, close_timeout=2) as ws:
            ws.send(encode([{"id": 1, "connect": {"token": mint(user)}}], binary))
            hello = replies(ws.recv(10), binary)[0]
            assert "connect" in hello, hello
            room = f"chat:{uid('r')}"
            next_id = 2
            try:
                for _ in range(30):
                    cmds = valid_commands(rng, rng.choice([room, f"user:{user}", "nope:x", "x"]), next_id)
                    next_id += len(cmds)
                    frame = encode(cmds, binary)
                    ws.send(mutate(frame, rng) if rng.random() < .6 else frame)
                    while True:  # whatever came back so far: well formed, never internal
                        try:
                            got = ws.recv(0.01)
                        except TimeoutError:
                            break
                        for reply in replies(got, binary):
                            error = reply.get("error")
                            assert not error or int(error["code"]) != 100, reply
                            answered += 1
            except Exception as exc:
                rcvd = ws.protocol.close_rcvd
                if rcvd is None:
                    raise AssertionError(f"socket failed without a close frame: {exc!r}") from exc
                closes.append(rcvd.code)
    print(f"{answered} replies, closes {closes}")
    assert answered > 100
    assert set(closes) <= CLOSE_OK, closes
    with urllib.request.urlopen(live_hub.http + "/healthz", timeout=5) as r:
        assert r.status == 200
    with open(live_hub.log_path, "rb") as f:
        f.seek(log_from)
        tail = f.read().decode(errors="replace")
    assert "Traceback" not in tail and '"level": "ERROR"' not in tail, tail[-3000:]


def test_commands_without_reply_spend_the_budget(live_hub: HubServer) -> None:
    """`send` and empty commands get no reply, yet each spends from the command budget: a flood of
    them is closed (3501) instead of costing nothing; a `send` before `connect` closes at once."""
    url = path(live_hub.url)
    with connect(url, open_timeout=10, close_timeout=2) as ws:
        ws.send('{"send":{"data":{}}}')
        with pytest.raises(Exception):  # noqa: B017 - closed by the hub
            ws.recv(10)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 3500
    with connect(url, open_timeout=10, close_timeout=2) as ws:
        ws.send(encode([{"id": 1, "connect": {"token": mint(uid("f"))}}], False))
        assert "connect" in replies(ws.recv(10), False)[0]
        flood = "\n".join(['{"send":{"data":{"x":1}}}', "{}"] * 50)
        with pytest.raises(Exception):  # noqa: B017 - closed by the hub
            for _ in range(20):
                ws.send(flood)
            ws.recv(10)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 3501
