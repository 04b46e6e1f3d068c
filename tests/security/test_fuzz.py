"""A frame fuzzer against a live hub: broken and hostile frames on many sockets, a quiet chat beside them.

Deterministic: every fuzz worker draws its frames from `random.Random` seeded with SEED (override
with HUB_FUZZ_SEED to explore; a failure prints the seed and the session). Sockets are reconnected
whenever the hub closes one (4010 after 20 bad frames, 1009 for an oversize frame, 4001 for a command
before `connect`), which is expected; everything else is checked:

- the hub process stays up and `/healthz` answers;
- its log holds no traceback, ERROR line, "command failed" or "internal error";
- every reply is well formed and never `internal`; a frame built to be refused that had a usable id
  gets `bad_request`; a socket the hub did not close answers every frame with a usable id;
- a well-behaved pair chatting on a room the whole time sees every publication, in order, unclosed;
- the hub's resident memory grows less than RSS_GROWTH_MAX across the fuzz run after a warm-up.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support import HubClient, HubServer, mint, running_hubs, uid

SEED = int(os.environ.get("HUB_FUZZ_SEED", "20261130"))
WORKERS = 4  # fuzz sockets open at once; each worker opens its next one when the last is closed
# What is meant to fill (each room's hot cache of publications, allocator arenas, client buffers)
# makes RSS rise ~10-15 MiB over the first 25,000 frames, then by well under 1 MiB per 10,000. A
# leak per frame or per socket would show far above the bound.
WARMUP_SESSIONS = 60  # per worker, before the first memory reading: about 8,000 frames
SESSIONS = 150  # per worker, measured: about 20,000 frames
RSS_GROWTH_MAX = 30 * 1024 * 1024
MAX_SAFE = 2**53 - 1
FRAME_LIMIT = 64 * 1024
MAX_BAD = 20
ERROR_CODES = {"bad_request", "unauthorized", "forbidden", "not_found", "conflict", "rate_limited",
               "too_large", "unavailable"}
# Command budgets well above what the fuzzer sends: it should reach the commands, not the limiter.
# Frames, not budgets, are under test here: the workers reuse a few users over hundreds of sockets.
FUZZ_ENV = {"HUB_COMMANDS_PER_S": "2000", "HUB_COMMAND_BURST": "2000",
            "HUB_USER_COMMANDS_PER_S": "4000", "HUB_USER_COMMAND_BURST": "4000", "HUB_MAX_SOCKETS_PER_USER": "0"}


@pytest.fixture(scope="module")
def fuzz_hub() -> Iterator[HubServer]:
    with running_hubs(1, FUZZ_ENV) as (server,):
        yield server


# --- values -------------------------------------------------------------------------------------

ODD_STRINGS = ["", " ", "\x00", "a\x00b", "\u202e", "\ufeff", "😀" * 5, "é", "\n", "%s%n", "${x}",
               "' OR 1=1 --", "<script>", "../../etc", "\\", '"', "x" * 300, "𝕏" * 70]
ODD_CHANNELS = ["", ":", "chat:", ":x", "chat", "Chat:r", "chat::r", "chat:r/1", "chat:r 1", "chat:r\x00",
                "chat:é", "chat:😀", "x" * 33 + ":r", "chat:" + "r" * 161, "chat:r\n", "user:*",
                "chat:../r", "chat:%00", "9a:r", "_a:r", "chat: r", "user:x\r\n", "chat:r\u2028"]
# Well formed, in namespaces the hub does not know: bad_request, though not a bad frame.
UNKNOWN_NAMESPACES = ["nope:r", "a:b:c", "chat_:r", "z" * 32 + ":r"]


def num(rng: random.Random) -> Any:
    return rng.choice([0, -1, 1, MAX_SAFE, -MAX_SAFE, rng.randint(-10**6, 10**6), rng.random() * 1e6,
                       -0.0, 1.5, 1e-300, 2.5e15])


def huge(rng: random.Random, binary: bool) -> Any:
    """A number outside what both kinds of client read exactly."""
    picks: list[Any] = [MAX_SAFE + 1, -MAX_SAFE - 1, 2**63, 1e300, -1e300, 9.1e15, float("nan"),
                        float("inf"), float("-inf")]
    if binary:
        picks += [2**64 - 1, -2**63]
    return rng.choice(picks)


def text(rng: random.Random, n: int = 12) -> str:
    pool = "abcXYZ019 _-:.@=\x00\x7f\u00e9\u4e2d\U0001f600\u200b"
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, n)))


def data(rng: random.Random, depth: int = 0) -> Any:
    """Readable by both kinds of client, within the limits."""
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice([None, True, False, num(rng), text(rng), rng.choice(ODD_STRINGS)])
    if r < 0.7:
        return [data(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {text(rng, 6): data(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def nest(levels: int, rng: random.Random) -> Any:
    inner: Any = rng.choice([0, "x", None])
    for _ in range(levels):
        inner = [inner] if rng.random() < 0.5 else {"k": inner}
    return inner


NOT_STRING: list[Any] = [None, True, 1, -1, 1.5, [], ["x"], {}, {"a": "x"}]


def wrong(name: str, rng: random.Random, binary: bool) -> Any:
    """A value the parser must refuse for that field."""
    extra: list[Any] = [b"\x00\x01", msgpack.ExtType(rng.randint(0, 127), b"xy"), msgpack.Timestamp(1, 2)] \
        if binary else []
    if name in ("token", "method"):
        return rng.choice(NOT_STRING + extra + ["t" * 4097])
    if name == "channel":
        return rng.choice(NOT_STRING + extra + ODD_CHANNELS)
    if name == "key":  # optional: null would mean "no key"
        return rng.choice(NOT_STRING[1:] + extra + ["", "k" * 65])
    if name == "since":
        return rng.choice([1, "x", [], {}, {"offset": -1, "epoch": "e"}, {"offset": 1.5, "epoch": "e"},
                           {"offset": 1, "epoch": 5}, {"offset": 1, "epoch": "e" * 65}, {"epoch": "e"},
                           {"offset": MAX_SAFE + 1, "epoch": ""}] + extra)
    if name in ("after", "before", "limit"):
        return rng.choice([-1, 1.5, "1", MAX_SAFE + 1, [], True, {}] + extra)
    if name == "params":
        return rng.choice([[], "p", 1, True, {"x": huge(rng, binary)}, {"x": nest(40, rng)}] + extra)
    # data: anything a JSON or MessagePack client could not read back
    if binary:
        return rng.choice([huge(rng, True), nest(rng.randint(33, 100), rng), {"k": b"bin"}, {b"k": 1},
                           [msgpack.ExtType(3, b"")], msgpack.Timestamp(0, 0), b"", {1: "x"},
                           {"a": {(1, 2): 0}}])
    return rng.choice([huge(rng, False), nest(rng.randint(33, 100), rng), [float("nan")]])


def bad_id(rng: random.Random, binary: bool) -> Any:
    picks: list[Any] = ["1", "", 1.0, 2.5, 0, -1, -MAX_SAFE, MAX_SAFE + 1, 2**63, True, False, None, [1],
                        {"id": 1}, float("nan")]
    if binary:
        picks += [2**64 - 1, b"\x01", msgpack.ExtType(1, b"\x01")]
    return rng.choice(picks)


def pack(obj: Any, binary: bool) -> str | bytes | None:
    """The frame for `obj`, or None when this encoding cannot carry it (e.g. bytes in JSON)."""
    if binary:
        return msgpack.packb(obj, use_bin_type=True)
    try:
        return json.dumps(obj, allow_nan=True)  # NaN and Infinity go out as the non-JSON literals
    except (TypeError, ValueError):
        return None


def usable_id(frame: str | bytes) -> int | None:
    """The id the hub must answer to, as the protocol defines it (independent of hub.codec)."""
    try:
        obj = orjson.loads(frame) if isinstance(frame, str) else msgpack.unpackb(
            frame, raw=False, strict_map_key=True)
    except Exception:
        return None
    if not isinstance(obj, dict):
        return None
    cid = obj.get("id")
    return cid if type(cid) is int and 1 <= cid <= MAX_SAFE else None


# --- frames -------------------------------------------------------------------------------------

@dataclass
class Frame:
    payload: str | bytes
    valid: bool  # built to be a well-formed command (its reply may still be an error)
    label: str
    closes: int | None = None  # the close code this frame must cause
    refused_id: bool = False  # built to be refused: a reply to its id must be bad_request


@dataclass
class Fuzzer:
    """Frames for one worker: its user, its room, its id counter."""

    rng: random.Random
    user: str
    room: str
    next_id: int = 1
    pre: bool = False  # before connect: no frame that parses as a command

    def cid(self) -> int:
        self.next_id += 1
        return self.next_id

    @property
    def channel(self) -> str:
        return f"chat:{self.room}"

    def valid(self, binary: bool) -> Frame:
        rng, cid = self.rng, self.cid()
        ch = rng.choice([self.channel, self.channel, f"user:{self.user}", f"chat:{uid('r')}"])
        kind = rng.choice(["subscribe", "unsubscribe", "publish", "publish", "history", "presence", "signal",
                           "rpc", "rpc", "refresh", "connect", "deep"])
        obj: dict[str, Any] = {"id": cid, "cmd": kind}
        if kind in ("subscribe", "unsubscribe", "history", "presence"):
            obj["channel"] = ch
        if kind == "subscribe" and rng.random() < 0.5:
            obj["since"] = {"offset": rng.randint(0, 50), "epoch": rng.choice(["", "abcd1234", text(rng)])}
        elif kind == "publish":
            obj.update(channel=self.channel, data=data(rng))
            if rng.random() < 0.3:
                obj["key"] = text(rng, 60) or "k"
        elif kind == "history":
            for f in ("after", "before"):
                if rng.random() < 0.4:
                    obj[f] = rng.choice([0, 1, 5, MAX_SAFE, rng.randint(0, 100)])
            if rng.random() < 0.5:
                obj["limit"] = rng.randint(0, 100)
        elif kind == "signal":
            obj.update(channel=self.channel, data=data(rng))
        elif kind == "rpc":
            obj.update(rng.choice([
                {"method": "rooms.list", "params": {"limit": rng.randint(1, 100)}},
                {"method": "rooms.list", "params": {"cursor": text(rng, 30) or "c"}},
                {"method": "match.find", "params": {"lat": rng.uniform(-90, 90),
                                                    "lng": rng.uniform(-180, 180),
                                                    "category": text(rng, 20) or "plumbing"}},
                {"method": "rooms.create", "params": {"members": [text(rng, 20) or "m"], "kind": "booking",
                                                      "ref": rng.choice(ODD_STRINGS)[:128]}},
                {"method": rng.choice(["nope", "", "rooms.", "a" * 200, "jobs.get", "zones.list"]),
                 "params": {"job": text(rng)}},
                {"method": "rooms.list", "params": {"limit": rng.choice(["x", 1.5, None, [], {}, 0, 101])}},
                {"method": "match.find", "params": {"lat": "x", "lng": None, "category": 5}},
                {"method": "rooms.list"},
            ]))
        elif kind == "refresh":
            obj["token"] = mint(self.user, ttl=7200) if rng.random() < 0.5 else text(rng, 40)
        elif kind == "connect":
            obj["token"] = mint(self.user)
        elif kind == "deep":  # within the limit: 31 nested containers under `data`, which is the 32nd
            obj.update(cmd="publish", channel=self.channel, data=nest(rng.randint(1, 31), rng))
        if rng.random() < 0.2:
            obj["extra"] = data(rng)  # fields the hub does not know are ignored
        payload = pack(obj, binary)
        assert payload is not None
        return Frame(payload, True, f"valid {kind}")

    def bad(self, binary: bool) -> Frame:
        """A frame the hub must refuse: counted toward 4010, answered when the id is usable."""
        rng = self.rng
        pick = rng.randrange(14)
        if pick == 0:
            r = rng.random()
            if r < 0.1:  # nesting far past what the decoders themselves accept
                n = rng.randint(500, 20000)
                return Frame(b"\x91" * n + b"\xc0" if binary else "[" * n + "]" * n, False, "very deep")
            if binary or r < 0.4:
                return Frame(rng.randbytes(rng.randint(0, 200)), False, "random bytes")
            return Frame(text(rng, 200), False, "random text")
        if pick == 1:  # a valid command cut short
            whole = self.valid(binary).payload
            return Frame(whole[:rng.randint(0, max(0, len(whole) - 1))], False, "truncated")
        if pick == 2:  # a valid command with a few bytes changed: may or may not still parse
            whole = self.valid(binary).payload
            raw = bytearray(whole.encode() if isinstance(whole, str) else whole)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            payload: str | bytes = bytes(raw) if binary else raw.decode(errors="replace")
            return Frame(payload, False, "mutated")
        cid = self.cid()
        obj: dict[Any, Any] = {"id": cid, "cmd": "publish", "channel": self.channel, "data": data(rng)}
        label = ""
        if pick == 3:
            obj["id"], label = bad_id(rng, binary), "bad id"
        elif pick == 4:
            obj["cmd"] = rng.choice(["", "PUBLISH", "nope", "connect ", 5, None, [], {"a": 1}])
            label = "bad cmd"
        elif pick == 5:
            obj["channel"], label = wrong("channel", rng, binary), "bad channel"
            obj["cmd"] = rng.choice(["subscribe", "unsubscribe", "publish", "history", "presence", "signal"])
            if not self.pre and rng.random() < 0.3:
                # Parses, so before connect it would be a command (4001); unsubscribe says not_found.
                obj["channel"], label = rng.choice(UNKNOWN_NAMESPACES), "unknown namespace"
                if obj["cmd"] == "unsubscribe":
                    return Frame(pack(obj, binary) or "", False, label)
        elif pick == 6:
            obj["data"] = rng.choice([huge(rng, binary), [huge(rng, binary)], {"n": huge(rng, binary)}])
            label = "huge number"
        elif pick == 7:
            obj["data"], label = nest(rng.randint(33, 300), rng), "too deep"
        elif pick == 8:  # whatever the command, one field of the wrong type, or a required one missing
            cmd, field_ = rng.choice([
                ("connect", "token"), ("refresh", "token"), ("subscribe", "since"), ("subscribe", "channel"),
                ("unsubscribe", "channel"), ("publish", "key"), ("publish", "data"), ("publish", "channel"),
                ("history", "after"), ("history", "before"), ("history", "limit"), ("presence", "channel"),
                ("signal", "data"), ("signal", "channel"), ("rpc", "method"), ("rpc", "params")])
            obj = {"id": cid, "cmd": cmd, "channel": self.channel, "method": "rooms.list", "token": "t",
                   "data": 1}
            if rng.random() < 0.2 and field_ in ("token", "channel", "method", "data"):
                del obj[field_]
                label = f"missing {cmd}.{field_}"
            else:
                obj[field_] = wrong(field_, rng, binary)
                label = f"bad field {cmd}.{field_}"
        elif pick == 9:
            if binary:
                obj["data"], label = rng.choice([b"bin", {b"k": 1}, msgpack.ExtType(7, b"e"),
                                                 msgpack.Timestamp(0, 0), [b"\x00"]]), "bin/ext data"
            else:
                obj["data"], label = rng.choice([float("nan"), float("inf"), -float("inf")]), "NaN literal"
        elif pick == 10:
            if binary:  # non-string map keys: not valid for the hub's strict decoder
                obj = {rng.choice([1, -1, 1.5, True, None]): 1, "id": cid, "cmd": "connect", "token": "t"}
                label = "non-string key"
            else:
                return Frame(f'{{"id": {cid}, "cmd": "publish", "channel": "{self.channel}", '
                             f'"data": {10 ** rng.randint(20, 400)}}}', False, "huge JSON integer",
                             refused_id=True)
        elif pick == 11:
            return Frame(rng.choice(['[1, 2]', '"x"', "1", "null", "true", "[]", "{}", f'[{{"id": {cid}}}]'])
                         if not binary else msgpack.packb(rng.choice([[1, 2], "x", 1, None, [], {}])),
                         False, "not an object")
        elif pick == 12:
            obj.pop("id")
            label = "no id"
        else:  # `bin` and ext in the fields every command has
            if binary:
                obj[rng.choice(["cmd", "channel", "id"])] = rng.choice([b"publish", msgpack.ExtType(1, b"")])
                label = "bin field"
            else:
                obj["cmd"], label = "publish\x00", "NUL in cmd"
        payload = pack(obj, binary)
        if payload is None:
            return self.bad(binary)
        return Frame(payload, False, label, refused_id=True)

    def oversize(self, binary: bool) -> Frame:
        rng = self.rng
        over = FRAME_LIMIT + rng.randint(1, 64)
        if binary:
            return Frame(msgpack.packb({"id": self.cid(), "cmd": "publish", "channel": self.channel,
                                        "data": "x" * over}), False, "oversize", closes=1009)
        pad = rng.choice(["x", "\u20ac"])  # 3 bytes a character: under the limit in characters, over in bytes
        n = over if pad == "x" else over // 3 + 1
        obj = {"id": self.cid(), "cmd": "publish", "channel": self.channel, "data": pad * n}
        return Frame(json.dumps(obj, ensure_ascii=False), False, "oversize", closes=1009)

    def at_limit(self, binary: bool) -> Frame:
        """A valid command exactly FRAME_LIMIT bytes long (the padding is a field the hub ignores)."""
        obj = {"id": self.cid(), "cmd": "presence", "channel": self.channel, "pad": ""}
        size = len(pack(obj, binary) or b"")
        obj["pad"] = "p" * (FRAME_LIMIT - size - (2 if binary else 0))
        payload = pack(obj, binary)
        assert payload is not None
        assert len(payload if isinstance(payload, bytes) else payload.encode()) == FRAME_LIMIT
        return Frame(payload, True, "at the frame limit")


# --- one fuzz socket ----------------------------------------------------------------------------

@dataclass
class Session:
    """One socket: what was sent, what came back, how it ended."""

    name: str
    ws: ClientConnection
    received: list[Any] = field(default_factory=list)
    expected: Counter[int] = field(default_factory=Counter)
    refused: dict[int, str] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    bad_sent: int = 0
    may_close: set[int] = field(default_factory=set)
    closed: int | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)

    def read(self) -> None:
        try:
            for msg in self.ws:
                obj = msgpack.unpackb(msg, raw=False) if isinstance(msg, bytes) else json.loads(msg)
                with self.cond:
                    self.received.append(obj)
                    self.cond.notify_all()
        except Exception:
            pass
        rcvd = getattr(self.ws.protocol, "close_rcvd", None)
        with self.cond:
            self.closed = rcvd.code if rcvd else 1006
            self.cond.notify_all()

    def send(self, frame: Frame) -> bool:
        """False once the socket is gone (the hub closed it)."""
        if self.closed is not None:
            return False
        cid = usable_id(frame.payload)
        if cid is not None:
            self.expected[cid] += 1
            self.labels[cid] = frame.label
            if frame.refused_id:
                self.refused[cid] = frame.label
        if not frame.valid:
            self.bad_sent += 1
            if self.bad_sent >= MAX_BAD:
                self.may_close.add(4010)
        if frame.closes:
            self.may_close.add(frame.closes)
        if frame.label == "mutated":
            # It may still parse: as a command before connect, or as a refresh that fails (the fourth closes).
            self.may_close.add(4001)
        self.sent.append(frame.label)
        try:
            self.ws.send(frame.payload)
        except Exception:
            return False
        return True

    def answered(self) -> Counter[int]:
        with self.cond:
            return Counter(m["id"] for m in self.received
                           if isinstance(m, dict) and "id" in m and "push" not in m)

    def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not done() and self.closed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return done()


def reply_problems(session: Session) -> list[str]:
    problems = []
    with session.cond:
        received = list(session.received)
    for msg in received:
        if not isinstance(msg, dict) or ("id" not in msg and "push" not in msg):
            problems.append(f"{session.name}: frame that is neither reply nor push: {msg!r}"[:300])
            continue
        if "push" in msg:
            continue
        if type(msg["id"]) is not int or not isinstance(msg.get("ok"), bool):
            problems.append(f"{session.name}: malformed reply {msg!r}"[:300])
        elif not msg["ok"]:
            err = msg.get("error")
            if not isinstance(err, dict) or err.get("code") not in ERROR_CODES or not isinstance(
                    err.get("message"), str):
                problems.append(f"{session.name}: bad error reply {msg!r}"[:300])
            elif (msg["id"] in session.refused and session.expected[msg["id"]] == 1
                  and err["code"] != "bad_request"
                  # a well-formed command (unknown namespace) meets the command budget first
                  and not (err["code"] == "rate_limited"
                           and session.refused[msg["id"]] == "unknown namespace")):
                problems.append(f"{session.name}: {session.refused[msg['id']]} answered {err['code']}, "
                                f"not bad_request: {msg!r}"[:300])
        elif "result" not in msg:
            problems.append(f"{session.name}: ok reply without result {msg!r}"[:300])
        elif msg["id"] in session.refused and session.expected[msg["id"]] == 1:
            problems.append(f"{session.name}: {session.refused[msg['id']]} was accepted: {msg!r}"[:300])
    return problems


def fuzz_session(url: str, fz: Fuzzer, name: str, stats: Counter[str]) -> list[str]:
    """Open a socket, send a random run of frames (before and after `connect`), check what came back."""
    rng = fz.rng
    binary = rng.random() < 0.5
    ws = connect(url, open_timeout=15, max_size=None, close_timeout=2)
    s = Session(name, ws)
    reader = threading.Thread(target=s.read, daemon=True)
    reader.start()
    problems: list[str] = []
    try:
        # Before connect: bad frames only (they are answered or dropped, and counted).
        fz.pre = True
        for _ in range(rng.choice([0, 0, 0, 1, 2, 5, 12, 25])):
            s.send(fz.bad(binary if rng.random() < 0.9 else not binary))
        fz.pre = False
        if rng.random() < 0.05:
            # Any other command before connect closes with 4001.
            frame = fz.valid(binary)
            if not frame.label.endswith("connect"):
                s.may_close.add(4001)
            s.send(frame)
        roll = rng.random()
        token = mint(fz.user) if roll > 0.04 else rng.choice(["", "x.y.z", mint(fz.user, ttl=-10)])
        if roll <= 0.04:
            s.may_close.add(4001)
        connected = s.send(Frame(pack({"id": fz.cid(), "cmd": "connect", "token": token}, binary) or "",
                                 True, "connect"))
        if connected and rng.random() < 0.5:  # else pipeline frames behind connect (held, then run)
            s.wait(lambda: bool(s.answered()), 15)
        for _ in range(rng.randint(10, 45)):
            r = rng.random()
            frame = (fz.valid(binary) if r < 0.4 else fz.oversize(binary) if r < 0.407
                     else fz.at_limit(binary) if r < 0.414
                     else fz.bad(binary if rng.random() < 0.9 else not binary))
            if frame.label == "valid refresh":
                s.may_close.add(4001)  # the fourth refused refresh closes
            if not s.send(frame) or frame.closes:
                break
        # Every frame with a usable id is answered, unless the hub closed the socket (for a reason
        # this session gave it).
        sentinel = fz.cid()
        s.send(Frame(pack({"id": sentinel, "cmd": "presence", "channel": fz.channel}, binary) or "", True,
                     "sentinel"))
        complete = s.wait(lambda: s.answered() == s.expected, 20)
        if s.closed is not None:
            if s.closed not in s.may_close:
                allowed = sorted(s.may_close) or "none"
                problems.append(f"{name}: closed {s.closed}, expected one of {allowed}; sent {s.sent}")
        elif not complete:
            missing = s.expected - s.answered()
            unanswered = [(cid, s.labels.get(cid)) for cid in sorted(missing)][:10]
            problems.append(f"{name}: no reply to {unanswered} (stuck socket); sent {s.sent}")
        problems += reply_problems(s)
        with s.cond:
            stats["frames"] += len(s.sent)
            stats[f"close {s.closed}"] += 1
            for m in s.received:
                if isinstance(m, dict) and "push" not in m:
                    stats["ok" if m.get("ok") else str((m.get("error") or {}).get("code"))] += 1
    finally:
        ws.close()
        reader.join(5)
    return problems


# --- the well-behaved pair ----------------------------------------------------------------------

class Chat:
    """Two clients publishing in turns on one room; both must see every publication in order."""

    def __init__(self, url: str) -> None:
        a, b = uid("pa"), uid("pb")
        self.a = HubClient(url, mint(a))
        self.b = HubClient(url, mint(b), binary=True)
        room = self.a.rpc("rooms.create", members=[b], kind="booking")["room"]
        self.channel = f"chat:{room}"
        self.start = [c.call("subscribe", channel=self.channel)["offset"] for c in (self.a, self.b)]
        self.sent: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            c = self.a if n % 2 == 0 else self.b
            try:
                c.call("publish", timeout=30, channel=self.channel, data={"seq": n, "text": f"message {n}"})
            except Exception as exc:  # reported by the test
                self.errors.append(f"publish {n}: {type(exc).__name__}: {exc}")
                return
            self.sent.append(n)
            n += 1
            self.stop.wait(0.05)

    def check(self) -> list[str]:
        problems = list(self.errors)
        for c, first, name in ((self.a, self.start[0], "a"), (self.b, self.start[1], "b")):
            got: list[dict[str, Any]] = []
            deadline = time.time() + 20
            while len(got) < len(self.sent) and time.time() < deadline:
                try:
                    left = max(0.1, deadline - time.time())
                    got.append(c.next_push("pub", channel=self.channel, timeout=left))
                except TimeoutError:
                    break
            if c.closed is not None:
                problems.append(f"chat client {name} closed {c.closed}")
            offsets = [p["offset"] for p in got]
            if offsets != list(range(first + 1, first + 1 + len(got))):
                problems.append(f"chat client {name}: offsets not consecutive: {offsets[:20]}...")
            seqs = [p["data"]["seq"] for p in got]
            if seqs != self.sent:
                diff = [(i, x) for i, x in enumerate(seqs) if i >= len(self.sent) or x != self.sent[i]]
                problems.append(f"chat client {name}: saw {len(seqs)} of {len(self.sent)} publications "
                                f"or out of order (first differences: {diff[:5]})")
        return problems

    def close(self) -> None:
        self.a.close()
        self.b.close()


# --- the run ------------------------------------------------------------------------------------

def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def healthy(server: HubServer) -> bool:
    try:
        with urllib.request.urlopen(server.http + "/healthz", timeout=10) as r:
            return r.status == 200 and json.loads(r.read()) == {"ok": True}
    except OSError:
        return False


def log_problems(server: HubServer) -> list[str]:
    """Lines of the hub's log that would mean fuzz input reached a bug."""
    found = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        level = entry.get("level") if isinstance(entry, dict) else None
        if (level in ("ERROR", "CRITICAL") or "Traceback" in line or "command failed" in line
                or "internal error" in line):
            found.append(line[:600])
    return found


def run_workers(url: str, fuzzers: list[Fuzzer], sessions: int, phase: str, stats: Counter[str]) -> list[str]:
    problems: list[str] = []
    lock = threading.Lock()

    def work(i: int, fz: Fuzzer) -> None:
        for n in range(sessions):
            name = f"{phase} worker {i} session {n} (seed {SEED})"
            try:
                found = fuzz_session(url, fz, name, stats)
            except Exception as exc:  # a socket that cannot even open is a finding
                found = [f"{name}: {type(exc).__name__}: {exc}"]
            with lock:
                problems.extend(found)

    threads = [threading.Thread(target=work, args=(i, fz), daemon=True) for i, fz in enumerate(fuzzers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        assert not t.is_alive(), "a fuzz worker hung"
    return problems


def test_frame_fuzz(fuzz_hub: HubServer) -> None:
    assert fuzz_hub.proc is not None
    pid = fuzz_hub.proc.pid
    fuzzers = []
    for i in range(WORKERS):
        user = uid("fz")
        with HubClient(fuzz_hub.url, mint(user)) as c:
            room = c.rpc("rooms.create", members=[uid()], kind="booking")["room"]
        fuzzers.append(Fuzzer(random.Random(f"{SEED}:{i}"), user, room))
    chat = Chat(fuzz_hub.url)
    chat.thread.start()
    stats: Counter[str] = Counter()
    try:
        problems = run_workers(fuzz_hub.url, fuzzers, WARMUP_SESSIONS, "warm-up", stats)
        assert healthy(fuzz_hub), "/healthz does not answer after the warm-up"
        rss_before = rss(pid)
        problems += run_workers(fuzz_hub.url, fuzzers, SESSIONS, "fuzz", stats)
        time.sleep(1)  # the sockets closed last are cleaned up
        rss_after = rss(pid)
    finally:
        chat.stop.set()
        chat.thread.join(40)
    problems += chat.check()
    chat.close()
    grown = rss_after - rss_before
    sockets = WORKERS * (WARMUP_SESSIONS + SESSIONS)
    print(f"\nfuzz: seed {SEED}, {stats['frames']} frames on {sockets} sockets, {len(chat.sent)} chat "
          f"publications; hub RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
          f"({grown / 2**20:+.1f} MiB); {dict(sorted(stats.items()))}")
    assert fuzz_hub.proc.poll() is None, "the hub process died"
    assert healthy(fuzz_hub), "/healthz does not answer"
    assert not problems, "\n".join(problems[:40])
    assert not (found := log_problems(fuzz_hub)), "hub log:\n" + "\n".join(found[:20])
    assert grown < RSS_GROWTH_MAX, f"hub RSS grew {grown / 2**20:.1f} MiB across the fuzz run"
    # The run reached what it is meant to: refusals, closes of each kind, working commands, the chat.
    assert stats["bad_request"] and stats["ok"] and stats["close 1009"] and stats["close 4010"], stats
    assert len(chat.sent) >= 10, "the chat pair barely published"
