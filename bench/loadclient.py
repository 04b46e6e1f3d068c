"""A cheap asyncio WebSocket load client for the hub and the two anchors (bench.bench_hub).

    .venv/bin/python -m bench.loadclient MODE --port P [--kind hub|anchor] [options]  (prints JSON)

Hand-rolled RFC 6455 over `asyncio.Protocol`: client frames are "pre-masked" (an all-zero
masking key, so no XOR pass over the payload), server frames are parsed in place from each
`data_received` chunk, one clock read per chunk, and pushes are recognised by their leading
bytes (no JSON decode on the delivery path). Pings are answered with pongs. Each message embeds
its send time (`time.time_ns()`), so delivery latency = receive time - send time (same host).

Modes (one JSON object on stdout; `idle` prints progress lines first):
- fanout  ROOMS rooms x MEMBERS members, MESSAGES per room sent as fast as possible by one
          publisher per room with at most WINDOW in flight (hub: until acked; anchors: until
          the publisher's own echo arrives). deliveries/s = deliveries / (first send -> last delivery).
- paced   the same rooms, RATE publications/s per room, open loop, for DURATION seconds.
- acks    hub only: PUBLISHERS sockets spread over ROOMS rooms, nobody subscribed, each keeps
          WINDOW publishes in flight for DURATION seconds; acks/s.
- idle    hub only: SOCKETS authenticated sockets (`connect` answered), held HOLD seconds while
          pings are answered. Protocol with the parent: prints {"event": "warm"} after a few
          warm-up sockets, waits for a line on stdin, connects the rest, prints
          {"event": "connected", ...}, holds, prints the final result.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

ZERO_MASK = b"\x00\x00\x00\x00"
PUB_PREFIX = b'{"push":"pub"'
REPLY_PREFIX = b'{"id":'
T_KEY = b'"t":'
QUICKACK = os.environ.get("LOADCLIENT_QUICKACK", "0") == "1" and hasattr(socket, "TCP_QUICKACK")


def frame_text(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame with an all-zero key: the payload goes out as it is."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, 0x80 | n)) + ZERO_MASK + payload
    if n < 65536:
        return bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big") + ZERO_MASK + payload
    return bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big") + ZERO_MASK + payload


def extract_t(payload: bytes) -> int:
    """The send timestamp `"t":<ns>` embedded in a message (its last occurrence)."""
    i = payload.rfind(T_KEY) + 4
    if payload[i] == 34:  # a string: nanoseconds exceed JSON's exact-integer range (2^53)
        i += 1
    j = i
    n = len(payload)
    while j < n and 48 <= payload[j] <= 57:
        j += 1
    return int(payload[i:j])


class WS(asyncio.Protocol):
    """One client WebSocket. `on_message(ws, payload, now_ns)` gets every text/binary frame."""

    __slots__ = ("host", "path", "transport", "buf", "upgraded", "opened", "closed", "on_message",
                 "next_id", "waiting", "pings", "tag", "close_code", "sock")

    def __init__(self, host: str, path: str, on_message: Callable[[WS, bytes, int], None] | None = None) -> None:
        self.host = host
        self.path = path
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_message = on_message
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.pings = 0
        self.tag: Any = None
        self.close_code: int | None = None

    # --- transport callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sock = transport.get_extra_info("socket")
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(  # type: ignore[attr-defined]
            (f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the upgrade"))
            self.opened.exception()  # marked seen: the opener may have given up and gone
        if not self.closed.done():
            self.closed.set_result(None)
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("socket closed"))
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[:data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                    self.opened.exception()  # marked seen, as in connection_lost
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            if not self.opened.done():  # the opener may have given up (timeout) meanwhile
                self.opened.set_result(None)
            data = data[end + 4:]
        if QUICKACK:
            # Optional: ACK at once (no effect measured here: autobahn sets TCP_NODELAY on the servers).
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        now = time.time_ns()
        pos = 0
        n = len(data)
        on_message = self.on_message
        while n - pos >= 2:
            b0 = data[pos]
            ln = data[pos + 1] & 0x7F
            if ln < 126:
                start = pos + 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 4], "big")
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2:pos + 10], "big")
                start = pos + 10
            end = start + ln
            if end > n:
                break
            op = b0 & 0x0F
            pos = end
            if op == 1 or op == 2:
                if on_message is not None:
                    on_message(self, data[start:end], now)
            elif op == 9:  # ping -> pong with the same payload
                self.pings += 1
                self.transport.write(frame_text(data[start:end], 0xA))  # type: ignore[union-attr]
            elif op == 8:
                if ln >= 2:
                    self.close_code = int.from_bytes(data[start:start + 2], "big")
                self.transport.write(frame_text(data[start:start + 2], 0x8))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                return
            # 0xA pong and 0x0 continuation: not used by these servers for small messages
        if pos < n:
            self.buf = data[pos:]

    # --- sending --------------------------------------------------------------------------

    def send_raw(self, payload: bytes) -> None:
        self.transport.write(frame_text(payload))  # type: ignore[union-attr]

    def command(self, obj: dict[str, Any]) -> asyncio.Future[Any]:
        """Send a hub command with the next id; the future gets the decoded reply."""
        self.next_id += 1
        cid = obj["id"] = self.next_id
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[cid] = fut
        self.send_raw(orjson.dumps(obj))
        return fut

    def resolve(self, payload: bytes) -> dict[str, Any]:
        """Route a reply frame to its waiting future; returns the decoded reply."""
        msg = orjson.loads(payload)
        fut = self.waiting.pop(msg.get("id"), None)
        if fut is not None and not fut.done():
            fut.set_result(msg)
        return msg

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(frame_text((1000).to_bytes(2, "big"), 0x8))
            except Exception:  # noqa: BLE001
                pass
            self.transport.close()


async def open_ws(host: str, port: int, path: str, on_message: Callable[[WS, bytes, int], None] | None = None,
                  timeout: float = 30.0) -> WS:
    loop = asyncio.get_running_loop()
    _t, ws = await asyncio.wait_for(
        loop.create_connection(lambda: WS(f"{host}:{port}", path, on_message), host, port), timeout)
    await asyncio.wait_for(ws.opened, timeout)
    return ws


def default_on_message(ws: WS, payload: bytes, now: int) -> None:
    if payload.startswith(REPLY_PREFIX):
        ws.resolve(payload)


async def expect_ok(fut: asyncio.Future[Any], what: str, timeout: float = 30.0) -> Any:
    msg = await asyncio.wait_for(fut, timeout)
    if not msg.get("ok"):
        raise RuntimeError(f"{what} failed: {msg.get('error')}")
    return msg["result"]


# --- shared state for the delivery path ---------------------------------------------------------

class Stats:
    __slots__ = ("deliveries", "lat", "last_recv", "first_send", "counting", "acks", "errors", "sent")

    def __init__(self) -> None:
        self.deliveries = 0
        self.lat: list[int] = []
        self.last_recv = 0
        self.first_send = 0
        self.counting = False
        self.acks = 0
        self.errors = 0
        self.sent = 0

    def ack(self, payload: bytes) -> bool:
        """Count a publish reply (no JSON decode unless it is an error); True when it is an ack."""
        if b'"ok":true' in payload[:40]:
            self.acks += 1
            return True
        self.errors += 1
        if self.errors <= 3:
            sys.stderr.write(f"publish error: {payload[:300]!r}\n")
        return False


def proc_cpu_s(pid: int) -> float:
    """utime + stime of another process (the server), from /proc; nan when unknown."""
    if not pid:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def pct(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    return float(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))])


def summarise_latency(lat: list[int]) -> dict[str, float]:
    lat.sort()
    ms = 1e6
    return {"p50_ms": pct(lat, 50) / ms, "p90_ms": pct(lat, 90) / ms, "p99_ms": pct(lat, 99) / ms,
            "max_ms": (lat[-1] / ms) if lat else float("nan"), "samples": len(lat)}


class Publisher:
    """Per room: the publishing socket, a window of in-flight messages and a counter."""

    __slots__ = ("ws", "room", "sent", "inflight", "total", "wake", "seq", "channel", "prefix", "seq_sent")

    def __init__(self, ws: WS, room: str, total: int) -> None:
        self.ws = ws
        self.room = room
        self.sent = 0
        self.inflight = 0
        self.total = total
        self.wake: asyncio.Event = asyncio.Event()
        self.seq = 0
        self.channel = room
        self.prefix = b""
        self.seq_sent: dict[int, int] = {}

    def release(self, window: int) -> None:
        """One message left the window: wake the sender when there is room again."""
        self.inflight -= 1
        if self.inflight < window:
            self.wake.set()


# --- room setup -----------------------------------------------------------------------------------

def _mint(users: list[str], secret: str) -> dict[str, str]:
    from hub.auth import mint  # jwt only, no Django

    return {u: mint(u, "customer", secret, "bench", 7200) for u in users}


async def connect_hub(host: str, port: int, token: str, on_message: Callable[[WS, bytes, int], None]) -> WS:
    ws = await open_ws(host, port, "/ws", on_message)
    await expect_ok(ws.command({"cmd": "connect", "token": token}), "connect")
    return ws


async def gather_limited(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def run(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(run(c) for c in coros))


def room_users(args: argparse.Namespace) -> tuple[list[list[str]], dict[str, str]]:
    """The user ids of each room (member 0 creates it and publishes) and everyone's token."""
    users = [[f"{args.tag}-r{r}-m{m}" for m in range(args.members)] for r in range(args.rooms)]
    return users, _mint([u for row in users for u in row], args.secret)


def room_params(args: argparse.Namespace, users: list[list[str]], r: int) -> dict[str, Any]:
    """`rooms.create` params for room r, by its member 0."""
    return {"members": users[r][1:] or [f"{args.tag}-r{r}-x"], "kind": "booking"}


async def setup_rooms(args: argparse.Namespace, on_message: Callable[[WS, bytes, int], None],
                      subscribe: bool = True) -> list[list[WS]]:
    """rooms x members sockets; member 0 of each room publishes. Returns sockets per room."""
    host, port = args.host, args.port
    rooms: list[list[WS]] = []
    if args.kind == "anchor":
        for r in range(args.rooms):
            socks = await asyncio.gather(*(open_ws(host, port, f"/ws/{args.tag}-{r}/", on_message)
                                           for _ in range(args.members)))
            for ws in socks:
                ws.tag = f"{args.tag}-{r}"
            rooms.append(list(socks))
        return rooms
    users, tokens = room_users(args)
    for r in range(args.rooms):
        socks = await gather_limited([connect_hub(host, port, tokens[u], on_message) for u in users[r]], 50)
        rooms.append(list(socks))

    async def make_room(r: int) -> None:
        owner = rooms[r][0]
        res = await expect_ok(owner.command({"cmd": "rpc", "method": "rooms.create",
                                             "params": room_params(args, users, r)}), "rooms.create")
        channel = f"chat:{res['room']}"
        for ws in rooms[r]:
            ws.tag = channel
        if subscribe:
            await asyncio.gather(*(expect_ok(ws.command({"cmd": "subscribe", "channel": channel}), "subscribe")
                                   for ws in rooms[r]))

    await gather_limited([make_room(r) for r in range(args.rooms)], 10)
    return rooms


TRACEPARENT = False  # --traceparent: every hub publish carries a sampled W3C traceparent (new ids)


def traceparent() -> bytes:
    if not TRACEPARENT:
        return b""
    return b',"traceparent":"00-%s-%s-01"' % (os.urandom(16).hex().encode(), os.urandom(8).hex().encode())


def message_bytes(kind: str, channel: str, cid: int, t: int, seq: int) -> bytes:
    if kind == "hub":
        return (b'{"id":%d,"cmd":"publish","channel":"%s","data":{"seq":%d,"t":"%d"}%s}'
                % (cid, channel.encode(), seq, t, traceparent()))
    return b'{"seq":%d,"t":"%d"}' % (seq, t)


# --- a measured run: warm-up, windows, waiting for the deliveries, figures ------------------------

async def warm_up(pubs: list[Publisher], send: Callable[[Publisher], None]) -> None:
    """One message per room, all answered or delivered (hub: the first publish checks permission)."""
    for p in pubs:
        p.inflight += 1
        send(p)
    deadline = time.monotonic() + 30
    while any(p.inflight for p in pubs) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the last warm-up deliveries land before counting starts


async def fill_windows(p: Publisher, st: Stats, window: int, frame: Callable[[Publisher, int], bytes],
                       cap: float | None = None) -> None:
    """Send p's messages as fast as its window allows (`frame(p, seq)`), each refill in one write;
    `cap`, a time.monotonic() deadline, also bounds each wait for room in the window."""
    write = p.ws.transport.write  # type: ignore[union-attr]
    end = float("inf") if cap is None else cap
    while p.sent < p.total and time.monotonic() < end:
        if p.inflight >= window:
            p.wake.clear()
            if cap is None:
                await p.wake.wait()
                continue
            try:
                await asyncio.wait_for(p.wake.wait(), max(0.001, cap - time.monotonic()))
            except TimeoutError:
                break
            continue
        n = min(window - p.inflight, p.total - p.sent)
        chunks = []
        for _ in range(n):
            chunks.append(frame(p, p.sent))
            p.sent += 1
        p.inflight += n
        st.sent += n
        write(b"".join(chunks))


async def until_delivered(st: Stats, expected: int, stall_s: float, cap: float = float("inf")) -> None:
    """Until every delivery arrived, or nothing arrived for `stall_s`, or the cap."""
    last_seen, last_change = -1, time.monotonic()
    while st.deliveries < expected and time.monotonic() < cap:
        if st.deliveries != last_seen:
            last_seen, last_change = st.deliveries, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            break
        await asyncio.sleep(0.005)


class Meter:
    """This process's and the server's CPU, and the time, from the start of counting."""

    def __init__(self, st: Stats, server_pid: int) -> None:
        self.st, self.server_pid = st, server_pid
        self.cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        self.srv0 = proc_cpu_s(server_pid)
        st.counting = True
        self.t_first = st.first_send = time.time_ns()

    def figures(self) -> dict[str, Any]:
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        srv1 = proc_cpu_s(self.server_pid)
        st = self.st
        elapsed = (st.last_recv - st.first_send) / 1e9 if st.last_recv else float("nan")
        wall = (time.time_ns() - self.t_first) / 1e9
        client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (self.cpu0.ru_utime + self.cpu0.ru_stime)
        return {"elapsed_s": elapsed,
                "deliveries_per_s": st.deliveries / elapsed if elapsed and elapsed == elapsed else 0.0,
                "client_cpu_s": client_cpu, "client_cpu_frac": client_cpu / wall if wall else 0.0,
                "server_cpu_run_s": srv1 - self.srv0}


async def close_all(socks: list[WS]) -> tuple[int, list[int]]:
    """Close every socket; returns how many the server had closed already, and its close codes."""
    closed = sum(1 for ws in socks if ws.closed.done())
    codes = sorted({ws.close_code for ws in socks if ws.close_code is not None})
    for ws in socks:
        ws.close()
    await asyncio.sleep(0.2)
    return closed, codes


# --- fanout and paced -----------------------------------------------------------------------------

async def run_deliveries(args: argparse.Namespace, paced: bool) -> dict[str, Any]:
    st = Stats()
    hub = args.kind == "hub"
    pubs: dict[int, Publisher] = {}  # id(ws) of the publisher -> Publisher

    def on_message(ws: WS, payload: bytes, now: int) -> None:
        if hub:
            if payload.startswith(PUB_PREFIX):
                if st.counting:
                    st.deliveries += 1
                    st.lat.append(now - extract_t(payload))
                    st.last_recv = now
                return
            if payload.startswith(REPLY_PREFIX):
                if ws.waiting:  # setup commands (connect, rpc, subscribe)
                    ws.resolve(payload)
                    return
                p = pubs.get(id(ws))
                if p is None:
                    return
                st.ack(payload)
                p.release(args.window)
            return
        # anchor: every frame is a delivery
        if st.counting:
            st.deliveries += 1
            st.lat.append(now - extract_t(payload))
            st.last_recv = now
        p = pubs.get(id(ws))
        if p is not None:
            p.release(args.window)

    rooms = await setup_rooms(args, on_message)
    for socks in rooms:
        p = Publisher(socks[0], socks[0].tag, args.messages)
        pubs[id(socks[0])] = p

    await warm_up(list(pubs.values()),
                  lambda p: p.ws.send_raw(message_bytes(args.kind, p.channel, _next_id(p), time.time_ns(), -1)))

    meter = Meter(st, args.server_pid)
    t_first = meter.t_first
    expected = args.rooms * args.members * (args.messages if not paced else 0)
    cap = time.monotonic() + args.max_time if args.max_time else float("inf")
    kind = args.kind

    def frame(p: Publisher, seq: int) -> bytes:
        return frame_text(message_bytes(kind, p.channel, _next_id(p), time.time_ns(), seq))

    async def paced_loop() -> None:
        rate = args.rate  # per room
        total_rate = rate * len(pubs)
        plist = list(pubs.values())
        t0 = time.monotonic()
        end = t0 + args.duration
        k = 0  # messages sent overall
        tick = 0.002
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - t0) * total_rate)
            while k < due:
                p = plist[k % len(plist)]
                p.ws.send_raw(message_bytes(args.kind, p.channel, _next_id(p), time.time_ns(), p.sent))
                p.sent += 1
                p.inflight += 1
                st.sent += 1
                k += 1
            await asyncio.sleep(tick)
        st.first_send = t_first

    if paced:
        await paced_loop()
        expected = st.sent * args.members
    else:
        await asyncio.gather(*(fill_windows(p, st, args.window, frame, cap) for p in pubs.values()))
    send_done = time.time_ns()
    await until_delivered(st, expected, args.stall, cap)
    figures = meter.figures()
    closed, codes = await close_all([ws for socks in rooms for ws in socks])
    out: dict[str, Any] = {
        "mode": "paced" if paced else "fanout", "kind": args.kind, "rooms": args.rooms, "members": args.members,
        "sent": st.sent, "expected": expected, "deliveries": st.deliveries, "acks": st.acks, "errors": st.errors,
        "send_s": (send_done - t_first) / 1e9, **figures, "closed_sockets": closed, "close_codes": codes,
        "capped": time.monotonic() >= cap, "max_time": args.max_time,
    }
    if paced:
        out["offered_pubs_per_s"] = st.sent / args.duration
    out.update(summarise_latency(st.lat))
    return out


def _next_id(p: Publisher) -> int:
    p.ws.next_id += 1
    return p.ws.next_id


# --- acks ---------------------------------------------------------------------------------------

async def run_acks(args: argparse.Namespace) -> dict[str, Any]:
    st = Stats()
    pubs: dict[int, Publisher] = {}

    def on_message(ws: WS, payload: bytes, now: int) -> None:
        p = pubs.get(id(ws))
        if p is not None and st.counting and payload.startswith(REPLY_PREFIX):
            if st.ack(payload):
                st.lat.append(now - p.seq_sent.pop(int(payload[6:payload.index(b",", 6)]), now))
            p.release(args.window)
            return
        if payload.startswith(REPLY_PREFIX):
            ws.resolve(payload)

    # publishers spread over rooms: `members` = publishers per room
    args.members = max(1, args.publishers // args.rooms)
    rooms = await setup_rooms(args, on_message, subscribe=False)
    plist: list[Publisher] = []
    for socks in rooms:
        for ws in socks:
            p = Publisher(ws, ws.tag, 0)
            plist.append(p)
    # Warm-up: the first publish on each socket checks membership.
    await asyncio.gather(*(expect_ok(p.ws.command({"cmd": "publish", "channel": p.channel, "data": {"t": 0}}),
                                     "publish") for p in plist))
    for p in plist:
        pubs[id(p.ws)] = p

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    srv0 = proc_cpu_s(args.server_pid)
    st.counting = True
    stop = False
    t0 = time.time_ns()

    async def loop_one(p: Publisher) -> None:
        ws = p.ws
        window = args.window
        chan = p.channel.encode()
        seq_sent = p.seq_sent
        while not stop:
            if p.inflight >= window:
                p.wake.clear()
                await p.wake.wait()
                continue
            n = window - p.inflight
            chunks = []
            for _ in range(n):
                ws.next_id += 1
                t = time.time_ns()
                seq_sent[ws.next_id] = t
                chunks.append(frame_text(b'{"id":%d,"cmd":"publish","channel":"%s","data":{"seq":%d,"t":"%d"}%s}'
                                         % (ws.next_id, chan, p.sent, t, traceparent())))
                p.sent += 1
            p.inflight += n
            st.sent += n
            ws.transport.write(b"".join(chunks))  # type: ignore[union-attr]

    tasks = [asyncio.ensure_future(loop_one(p)) for p in plist]
    await asyncio.sleep(args.duration)
    acks = st.acks
    t1 = time.time_ns()
    srv1 = proc_cpu_s(args.server_pid)
    stop = True
    for p in plist:
        p.wake.set()
    await asyncio.gather(*tasks)
    # let the in-flight ones drain (not counted)
    deadline = time.monotonic() + 10
    while any(p.inflight > 0 for p in plist) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = (t1 - t0) / 1e9
    closed = sum(1 for p in plist if p.ws.closed.done())
    codes = sorted({p.ws.close_code for p in plist if p.ws.close_code is not None})
    for p in plist:
        p.ws.close()
    await asyncio.sleep(0.2)
    client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    out = {"mode": "acks", "publishers": len(plist), "rooms": args.rooms, "window": args.window,
           "acks": acks, "errors": st.errors, "elapsed_s": wall, "acks_per_s": acks / wall,
           "client_cpu_s": client_cpu, "client_cpu_frac": client_cpu / wall, "closed_sockets": closed,
           "close_codes": codes, "server_cpu_run_s": srv1 - srv0}
    out.update({f"ack_{k}": v for k, v in summarise_latency(st.lat).items()})
    return out


# --- idle -----------------------------------------------------------------------------------------

def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.host, args.port
    warm = args.warm
    users = [f"{args.tag}-i{i}" for i in range(args.sockets + warm)]
    tokens = _mint(users, args.secret)
    socks: list[WS] = []
    failures: list[str] = []

    async def one(u: str) -> None:
        try:
            socks.append(await connect_hub(host, port, tokens[u], default_on_message))
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{type(exc).__name__}: {exc}")

    await gather_limited([one(u) for u in users[:warm]], 50)
    emit({"event": "warm", "sockets": len(socks)})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t0 = time.monotonic()
    await gather_limited([one(u) for u in users[warm:]], args.concurrency)
    connect_s = time.monotonic() - t0
    emit({"event": "connected", "sockets": len(socks) - warm, "failures": len(failures),
          "connect_s": connect_s, "first_failure": failures[0] if failures else None})
    await asyncio.sleep(args.hold)
    alive = sum(1 for ws in socks if not ws.closed.done())
    pings = sum(ws.pings for ws in socks)
    codes = sorted({ws.close_code for ws in socks if ws.close_code is not None})
    # a last round trip on a sample proves the sockets still work
    sample = [ws for ws in socks if not ws.closed.done()][:: max(1, len(socks) // 200)]
    ok = 0
    for res in await asyncio.gather(*(asyncio.wait_for(ws.command({"cmd": "presence", "channel": "chat:none"}), 10)
                                      for ws in sample), return_exceptions=True):
        if isinstance(res, dict) and "id" in res:
            ok += 1  # any reply (forbidden included) means the socket is served
    emit({"event": "held", "alive": alive, "total": len(socks), "pings_answered": pings, "close_codes": codes,
          "probe_ok": ok, "probe_n": len(sample)})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for ws in socks:
        ws.close()
    await asyncio.sleep(0.5)
    return {"mode": "idle", "sockets": len(socks) - warm, "alive": alive, "pings_answered": pings,
            "failures": len(failures), "connect_s": connect_s}


# --- main -------------------------------------------------------------------------------------------

def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["fanout", "paced", "acks", "idle"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=["hub", "anchor"], default="hub")
    ap.add_argument("--secret", default=os.environ.get("HUB_SECRET", ""))
    ap.add_argument("--tag", default=f"b{os.getpid()}")
    ap.add_argument("--rooms", type=int, default=20)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--rate", type=float, default=100.0, help="paced: publications/s per room")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--publishers", type=int, default=100)
    ap.add_argument("--sockets", type=int, default=10000)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--hold", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--server-pid", type=int, default=0, help="report this process's CPU over the measured run")
    ap.add_argument("--max-time", type=float, default=0.0, help="fanout: stop sending and counting after this long")
    ap.add_argument("--stall", type=float, default=5.0, help="give up after this long without a delivery")
    ap.add_argument("--traceparent", action="store_true", help="hub: every publish carries a new sampled traceparent")
    args = ap.parse_args(argv)
    global TRACEPARENT
    TRACEPARENT = args.traceparent
    raise_nofile()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if args.mode == "fanout":
        coro = run_deliveries(args, paced=False)
    elif args.mode == "paced":
        coro = run_deliveries(args, paced=True)
    elif args.mode == "acks":
        coro = run_acks(args)
    else:
        coro = run_idle(args)
    try:
        result = asyncio.run(coro)
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        result = {"mode": args.mode, "error": f"{type(exc).__name__}: {exc}"}
    emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
