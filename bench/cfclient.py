"""A minimal fast Centrifuge-protocol load client for the hub's `/connection/websocket` (bench.bench_hub).

    .venv/bin/python -m bench.cfclient --port P --secret S [--protobuf] [fan-out options]  (prints JSON)

Fan-out only, the same shape as bench.loadclient's `fanout` (ROOMS rooms x MEMBERS members, one
publisher per room with at most WINDOW publishes in flight until acked; deliveries/s = deliveries
/ (first send -> last delivery)), over the Centrifuge client protocol in JSON or Protobuf (the
`cf_protocol=protobuf` query parameter). It reuses loadclient's hand-rolled WebSocket; pushes and
publish acks are recognised by their leading bytes, so the delivery path decodes nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import orjson

from bench.loadclient import (
    WS,
    Meter,
    Publisher,
    Stats,
    close_all,
    emit,
    extract_t,
    fill_windows,
    frame_text,
    gather_limited,
    open_ws,
    raise_nofile,
    room_params,
    room_users,
    summarise_latency,
    until_delivered,
    warm_up,
)

JSON_PUSH = b'{"push":'
JSON_REPLY = b'{"id":'


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def skip_varint(buf: bytes, pos: int) -> int:
    while buf[pos] & 0x80:
        pos += 1
    return pos + 1


class Cf:
    """Commands and replies in one encoding; setup replies decoded, the hot path only peeked at."""

    def __init__(self, protobuf: bool) -> None:
        self.protobuf = protobuf
        self.opcode = 0x2 if protobuf else 0x1
        self.path = "/connection/websocket" + ("?cf_protocol=protobuf" if protobuf else "")
        if protobuf:
            from hub.centrifuge import proto  # no Django

            self.proto = proto

    def command(self, cid: int, kind: str, req: dict[str, Any]) -> bytes:
        if self.protobuf:
            return self.proto.delimited(self.proto.encode("Command", {"id": cid, kind: req}))
        return orjson.dumps({"id": cid, kind: req})

    def publish(self, cid: int, channel: bytes, data: bytes) -> bytes:
        if self.protobuf:
            body = b"\x0a" + varint(len(channel)) + channel + b"\x12" + varint(len(data)) + data
            cmd = b"\x08" + varint(cid) + b"\x3a" + varint(len(body)) + body  # id = 1, publish = 7
            return varint(len(cmd)) + cmd
        return b'{"id":%d,"publish":{"channel":"%s","data":%s}}' % (cid, channel, data)

    def replies(self, payload: bytes) -> list[dict[str, Any]]:
        if self.protobuf:
            return [self.proto.decode("Reply", raw) for raw in self.proto.split(payload)]
        return [orjson.loads(line) for line in payload.split(b"\n") if line]

    def is_pub(self, payload: bytes) -> bool:
        if self.protobuf:
            return len(payload) > 2 and payload[skip_varint(payload, 0)] == 0x22  # Reply.push
        return payload.startswith(JSON_PUSH)

    def is_ack(self, payload: bytes) -> bool | None:
        """True for a publish ack, False for an error reply, None for anything else (a ping)."""
        if self.protobuf:
            if len(payload) < 3:
                return None
            return payload.endswith(b"\x42\x00")  # Reply.publish, empty
        if payload.startswith(JSON_REPLY):
            return b'"publish"' in payload
        return None


async def run_fanout(args: argparse.Namespace) -> dict[str, Any]:
    cf = Cf(args.protobuf)
    st = Stats()
    pubs: dict[int, Publisher] = {}
    setup_done = False

    def on_message(ws: WS, payload: bytes, now: int) -> None:
        if cf.is_pub(payload):
            if st.counting:
                st.deliveries += 1
                st.lat.append(now - extract_t(payload))
                st.last_recv = now
            return
        if not setup_done:
            for reply in cf.replies(payload):
                fut = ws.waiting.pop(int(reply.get("id", 0)), None)
                if fut is not None and not fut.done():
                    fut.set_result(reply)
            return
        ok = cf.is_ack(payload)
        if ok is None:
            return
        p = pubs.get(id(ws))
        if p is None:
            return
        if ok:
            st.acks += 1
        else:
            st.errors += 1
            if st.errors <= 3:
                sys.stderr.write(f"publish error: {payload[:300]!r}\n")
        p.release(args.window)

    async def call(ws: WS, kind: str, req: dict[str, Any]) -> dict[str, Any]:
        ws.next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        ws.waiting[ws.next_id] = fut
        ws.transport.write(frame_text(cf.command(ws.next_id, kind, req), cf.opcode))  # type: ignore[union-attr]
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise RuntimeError(f"{kind} failed: {reply['error']}")
        return reply[kind] if kind in reply else {}

    async def open_one(token: str) -> WS:
        ws = await open_ws(args.host, args.port, cf.path, on_message)
        await call(ws, "connect", {"token": token})
        return ws

    users, tokens = room_users(args)
    rooms: list[list[WS]] = []
    for r in range(args.rooms):
        rooms.append(list(await gather_limited([open_one(tokens[u]) for u in users[r]], 50)))

    async def make_room(r: int) -> None:
        res = await call(rooms[r][0], "rpc", {"method": "rooms.create", "data": room_params(args, users, r)})
        data = res["data"]
        room = (orjson.loads(data) if isinstance(data, bytes) else data)["room"]
        channel = f"chat:{room}"
        await asyncio.gather(*(call(ws, "subscribe", {"channel": channel}) for ws in rooms[r]))
        pubs[id(rooms[r][0])] = p = Publisher(rooms[r][0], channel, args.messages)
        p.ws.next_id = 100  # publish ids above the setup commands'
        p.prefix = channel.encode()

    await gather_limited([make_room(r) for r in range(args.rooms)], 10)
    setup_done = True

    def message(p: Publisher, seq: int) -> bytes:
        p.ws.next_id += 1
        return frame_text(cf.publish(p.ws.next_id, p.prefix, b'{"seq":%d,"t":"%d"}' % (seq, time.time_ns())),
                          cf.opcode)

    await warm_up(list(pubs.values()), lambda p: p.ws.transport.write(message(p, -1)))  # type: ignore[union-attr]
    meter = Meter(st, args.server_pid)
    expected = args.rooms * args.members * args.messages
    await asyncio.gather(*(fill_windows(p, st, args.window, message) for p in pubs.values()))
    await until_delivered(st, expected, args.stall)
    figures = meter.figures()
    _closed, codes = await close_all([ws for row in rooms for ws in row])
    out: dict[str, Any] = {
        "mode": "fanout", "kind": "centrifuge-protobuf" if args.protobuf else "centrifuge-json",
        "rooms": args.rooms, "members": args.members, "sent": st.sent, "expected": expected,
        "deliveries": st.deliveries, "acks": st.acks, "errors": st.errors, **figures, "close_codes": codes,
    }
    out.update(summarise_latency(st.lat))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--protobuf", action="store_true")
    ap.add_argument("--secret", default=os.environ.get("HUB_SECRET", ""))
    ap.add_argument("--tag", default=f"c{os.getpid()}")
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--server-pid", type=int, default=0)
    ap.add_argument("--stall", type=float, default=5.0)
    args = ap.parse_args(argv)
    raise_nofile()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        result = asyncio.run(run_fanout(args))
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        result = {"mode": "fanout", "error": f"{type(exc).__name__}: {exc}"}
    emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
