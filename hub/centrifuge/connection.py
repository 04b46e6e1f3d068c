"""One `/connection/websocket` socket: the Centrifuge client protocol on protocol v1's machinery.

Each Centrifuge command is translated into the v1 command it means and run through
`hub.connection.Connection.dispatch`, so credentials, budgets, rate limits, channel permission
hooks, the engine (ordering, acks after commit, recovery), rpc, slow-consumer cut-off and drain
are the same code for both protocols; only framing and the shape of replies differ here. The
engine writes publications to this socket in its Centrifuge format (hub.pubs formats 2 and 3), with
the same offsets and epochs a v1 subscriber of the channel sees.

What is specific to Centrifuge: the caller's own `user:<id>` channel is a server-side subscription
made during `connect` (recovered from the position the SDK sends in `connect.subs`); pushes that
v1 sends outside channels (AI assist deltas, anything pushed with `caller.push`) arrive as
publications without offset on the `user:<id>` channel, and `signal` events as publications
without offset on their call channel, in both cases with the v1 push frame as data; join
and leave pushes go only to subscriptions that asked for them (`join_leave`); the server sends an
empty command as ping every HUB_PING_S and asks for no pong (dead peers are found by WebSocket
pings, as for v1); `send` (async message from the client) is ignored; v1's `signal` command is the
rpc method `signal` with data {channel, data}.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Any

from django.conf import settings

from core import metrics
from core.errors import BAD_REQUEST, HubError
from hub import auth, credentials
from hub import codec as v1codec
from hub.centrifuge import codec
from hub.centrifuge.proto import varint
from hub.connection import CLOSE_AUTH, CLOSE_RESTART, Connection
from hub.engine import Engine
from hub.sink import Sink

log = logging.getLogger("hub.centrifuge")
VERSION = "hub-1"
MAX_TOKEN = 4096
MAX_METHOD = 200
MAX_SAFE_INT = v1codec.MAX_SAFE_INT
SIGNAL_METHOD = "signal"  # rpc("signal", {channel, data}): a v1 signal on a call channel
REJECT_UNRECOVERED = 2  # SubscribeRequest.flag bit: answer 112 instead of recovered=false


def _channel(req: dict[str, Any], cid: int) -> str:
    channel = req.get("channel")
    if not isinstance(channel, str) or v1codec.CHANNEL_RE.match(channel) is None:
        raise v1codec.FrameError("channel must look like namespace:id", cid)
    return channel


def _position(req: dict[str, Any], cid: int) -> tuple[int, str]:
    offset, epoch = req.get("offset", 0), req.get("epoch", "")
    if type(offset) is not int or not 0 <= offset <= MAX_SAFE_INT:
        raise v1codec.FrameError("offset must be a non-negative integer below 2^53", cid)
    if not isinstance(epoch, str) or len(epoch) > 64:
        raise v1codec.FrameError("epoch must be a string of at most 64 characters", cid)
    return offset, epoch


def _ttl(exp: int) -> int:
    """Seconds until the SDK should refresh: a little before expiry (the hub closes at expiry)."""
    left = int(exp - credentials.now())
    return max(1, left - max(1, min(30, left // 5)))


def subscribe_result(result: dict[str, Any], recovering: bool) -> dict[str, Any]:
    """v1's subscribe result as a Centrifuge `SubscribeResult`: every hub channel is durable, so
    positioned and recoverable."""
    out: dict[str, Any] = {"recoverable": True, "positioned": True, "epoch": result["epoch"],
                           "offset": result["offset"]}
    if recovering:
        out["was_recovering"] = True
        out["recovered"] = result["recovered"]
        if result["pubs"]:
            out["publications"] = [codec.publication(p) for p in result["pubs"]]
    return out


class CentrifugeConnection(Connection):
    __slots__ = ("kinds", "join_leave", "server_subs", "expired_connect", "chosen")

    def __init__(self, engine: Engine, sink: Sink, binary: bool, chosen: bool = True) -> None:
        super().__init__(engine, sink)
        # Fixed by the handshake (subprotocol or query) when the SDK said; else by the first frame.
        self.chosen = chosen
        self.binary = binary
        self.fmt = codec.PROTOBUF if binary else codec.JSON
        # Command id -> (kind, what the reply needs): replies come back through reply()/error().
        self.kinds: dict[int, tuple[str, Any]] = {}
        self.join_leave: set[str] = set()
        self.server_subs: dict[str, Any] = {}
        self.expired_connect = False
        _pinger(engine).add(self)

    # --- output -------------------------------------------------------------------------------

    def out(self, reply: dict[str, Any]) -> None:
        self.write(codec.encode(reply, self.binary))

    def write(self, payload: bytes) -> None:
        if self.closed:
            return
        if self.engine.cut_if_behind(self):
            return
        self.sink.write(payload, self.binary)

    def send_obj(self, obj: dict[str, Any]) -> None:
        """A push v1 sends outside channels (caller.push): a publication without offset on the
        caller's `user:` channel carrying the v1 frame (every SDK delivers those; centrifuge-python
        has no handler for async messages)."""
        if self.caller is not None:
            self.write(codec.ephemeral_pub(f"user:{self.caller.user}", obj, self.binary))

    def reply(self, cid: int, result: Any) -> None:
        kind, extra = self.kinds.pop(cid, ("", None))
        if kind == "subscribe":
            channel, recovering, reject = extra
            if recovering and reject and not result["recovered"] and channel in self.subs:
                self._leave(channel)
                self.out({"id": cid, "error": {"code": codec.E_UNRECOVERABLE,
                                               "message": "unrecoverable position"}})
                return
            self.out({"id": cid, "subscribe": subscribe_result(result, recovering)})
        elif kind == "history":
            self._history_reply(cid, result, extra)
        elif kind == "rpc":
            self.out({"id": cid, "rpc": {"data": result}})
        elif kind == "presence":
            self.out({"id": cid, "presence": {"presence": {
                m["user"]: {"user": m["user"], "client": m["user"]} for m in result["members"]}}})
        elif kind == "presence_stats":
            members = result["members"]
            self.out({"id": cid, "presence_stats": {"num_users": len(members),
                                                    "num_clients": sum(m.get("conns", 1) for m in members)}})
        elif kind == "refresh":
            self.out({"id": cid, "refresh": {"client": self.client, "version": VERSION, "expires": True,
                                             "ttl": _ttl(self.exp)}})
        elif kind == "unsubscribe":
            self.join_leave.discard(extra)
            self.out({"id": cid, "unsubscribe": {}})
        else:
            self.out({"id": cid, kind or "ping": {}})

    def _history_reply(self, cid: int, result: dict[str, Any], extra: tuple[bool, str | None, bool]) -> None:
        reverse, since_epoch, position_only = extra
        if since_epoch and since_epoch != result["epoch"]:
            self.out({"id": cid, "error": {"code": codec.E_UNRECOVERABLE, "message": "unrecoverable position"}})
            return
        out: dict[str, Any] = {"epoch": result["epoch"], "offset": result["offset"]}
        if not position_only:
            pubs = [codec.publication(p) for p in result["pubs"]]
            if reverse:
                pubs.reverse()
            if pubs:
                out["publications"] = pubs
        self.out({"id": cid, "history": out})

    def error(self, cid: int, err: HubError) -> None:
        kind, extra = self.kinds.pop(cid, ("", None))
        if kind == "subscribe" and extra[0] not in self.subs:
            self.join_leave.discard(extra[0])
        body = codec.error_of(err, kind)
        if kind == "connect" and body["code"] == codec.E_TOKEN_EXPIRED:
            self.expired_connect = True  # the SDK gets a new token and reconnects on its own
        self.out({"id": cid, "error": body})

    def publish_done(self, cid: int, result: Any, error: HubError | None, t0: float) -> None:
        if error is None:
            metrics.commit_latency(time.perf_counter() - t0)
            metrics.command("publish", "ok")
            if self.binary:  # Reply{id, publish: {}}
                body = b"\x08" + varint(cid) + b"\x42\x00"
                self.write(varint(len(body)) + body)
            else:
                self.write(b'{"id":%d,"publish":{}}' % cid)
        else:
            metrics.command("publish", error.code)
            self.error(cid, error)

    def close(self, code: int) -> None:
        if self.closed:
            return
        if code == CLOSE_AUTH and self.expired_connect and self.caller is None:
            # An expired token at connect: answered 109, left open for the SDK to close (a close
            # racing the reply would read as "invalid token, do not reconnect"). The connect
            # timeout still closes it.
            self.expired_connect = False
            return
        super().close(codec.CLOSE_CODES.get(code, code))

    def wants_event(self, channel: str, frame: dict[str, Any]) -> bool:
        return frame.get("push") not in ("join", "leave") or channel in self.join_leave

    # --- input --------------------------------------------------------------------------------

    def on_frame(self, frame: str | bytes) -> None:
        if not self.admitted(frame):
            return
        if not self.chosen:
            self.chosen = True
            self.binary = isinstance(frame, bytes)
            self.fmt = codec.PROTOBUF if self.binary else codec.JSON
        try:
            cmds = codec.parse(frame, self.binary)
        except v1codec.FrameError as exc:
            self.bad_frame(exc.message, None)
            return
        for i, cmd in enumerate(cmds):
            if self.closed:
                return
            if self.held is not None:
                # `connect` is being admitted: the rest of this frame waits with the frames after it.
                self.held.append(codec.reencode(cmds[i:], self.binary))
                return
            try:
                self.command(cmd)
            except v1codec.FrameError as exc:
                if exc.id is not None:
                    self.kinds.pop(exc.id, None)
                self.bad_frame(exc.message, exc.id)

    def command(self, cmd: dict[str, Any]) -> None:
        cid, kind, req = codec.command_kind(cmd)
        if kind is None or kind == "send":
            # A pong, or an async message from the client: nothing to do, but each one spends from
            # the budgets like any command (else a flood of them would cost nothing); past them
            # they count as bad frames (3501 at the limit).
            if self.caller is None:
                if kind == "send":
                    self.dispatch(0, "send", {})  # before connect: closes, as any other command
                return
            if self.bucket.take() or self.engine.budgets.take(self.who):
                metrics.rate_limited("command")
                self.bad_frame("too many commands", None)
            return
        if cid in self.kinds:
            raise v1codec.FrameError("a command with this id is still running", cid)
        if kind == "publish":
            data = codec.load_data(req.get("data"), self.binary, cid)
            self.dispatch(cid, "publish", {"channel": _channel(req, cid), "data": data})
            return
        if kind == "connect":
            token = req.get("token", "")
            if not isinstance(token, str) or len(token) > MAX_TOKEN:
                raise v1codec.FrameError("token must be a string of at most 4096 characters", cid)
            subs = req.get("subs") or {}
            if not isinstance(subs, dict):
                raise v1codec.FrameError("subs must be an object", cid)
            if self.caller is None and self.held is None:
                self.server_subs = subs
            self.kinds[cid] = ("connect", None)
            self.dispatch(cid, "connect", {"token": token})
        elif kind == "subscribe":
            channel = _channel(req, cid)
            recovering = bool(req.get("recover"))
            since = None
            if recovering:
                offset, epoch = _position(req, cid)
                since = {"offset": offset, "epoch": epoch}
            flag = req.get("flag", 0)
            reject = type(flag) is int and bool(flag & REJECT_UNRECOVERED)
            self.kinds[cid] = ("subscribe", (channel, recovering, reject))
            if req.get("join_leave") and channel not in self.subs:
                self.join_leave.add(channel)
            self.dispatch(cid, "subscribe", {"channel": channel, "since": since})
        elif kind == "unsubscribe":
            channel = _channel(req, cid)
            self.kinds[cid] = ("unsubscribe", channel)
            if channel in self.subs:
                self.dispatch(cid, "unsubscribe", {"channel": channel})
            else:
                self.reply(cid, {})  # as Centrifuge: unsubscribing from a channel not subscribed is fine
        elif kind in ("presence", "presence_stats"):
            self.kinds[cid] = (kind, None)
            self.dispatch(cid, "presence", {"channel": _channel(req, cid)})
        elif kind == "history":
            self._history(cid, req)
        elif kind == "rpc":
            method = req.get("method", "")
            if not isinstance(method, str) or not method or len(method) > MAX_METHOD:
                raise v1codec.FrameError("rpc needs a method name", cid)
            raw = req.get("data")
            params = {} if raw is None or raw == b"" else codec.load_data(raw, self.binary, cid)
            self.kinds[cid] = ("rpc", None)
            if method == SIGNAL_METHOD:
                # v1's `signal` command, which Centrifuge has no command for (domain methods are dotted).
                if not isinstance(params, dict) or "data" not in params:
                    raise v1codec.FrameError("signal: data must be {channel, data}", cid)
                self.dispatch(cid, "signal", {"channel": _channel(params, cid), "data": params["data"]})
                return
            self.dispatch(cid, "rpc", {"method": method, "params": params})
        elif kind == "refresh":
            token = req.get("token", "")
            if not isinstance(token, str) or len(token) > MAX_TOKEN:
                raise v1codec.FrameError("token must be a string of at most 4096 characters", cid)
            self.kinds[cid] = ("refresh", None)
            self.dispatch(cid, "refresh", {"token": token})
        elif kind == "ping":
            self.kinds[cid] = ("ping", None)
            self.reply(cid, {})
        elif kind == "sub_refresh":
            self.error(cid, HubError(BAD_REQUEST, "this hub uses no subscription tokens"))

    def _history(self, cid: int, req: dict[str, Any]) -> None:
        channel = _channel(req, cid)
        limit = req.get("limit", 0)
        if type(limit) is not int:
            raise v1codec.FrameError("limit must be an integer", cid)
        reverse = bool(req.get("reverse"))
        since = req.get("since")
        n = 100 if limit < 0 or limit > 100 else max(limit, 1)  # at most 100 per call (v1's limit)
        cmd: dict[str, Any] = {"channel": channel, "limit": n}
        since_epoch = None
        if since is not None:
            if not isinstance(since, dict):
                raise v1codec.FrameError("since must be a stream position", cid)
            offset, since_epoch = _position(since, cid)
            if reverse:
                cmd["before"] = offset
            else:
                cmd["after"] = offset
        elif not reverse:
            cmd["after"] = 0  # oldest first, from the start of the stream (as Centrifuge)
        self.kinds[cid] = ("history", (reverse, since_epoch, limit == 0))
        self.dispatch(cid, "history", cmd)

    # --- connect ------------------------------------------------------------------------------

    async def opened(self, cid: int, claims: auth.Claims) -> None:
        """Subscribe the caller to their own `user:<id>` channel (recovering when the SDK asks),
        then answer connect with it as a server-side subscription."""
        self.kinds.pop(cid, None)
        channel = f"user:{claims.user}"
        req = self.server_subs.get(channel)
        self.server_subs = {}
        since = None
        if isinstance(req, dict) and req.get("recover"):
            try:
                offset, epoch = _position(req, cid)
                since = {"offset": offset, "epoch": epoch}
            except v1codec.FrameError:
                since = None
        try:
            result = await self.do_subscribe({"channel": channel, "since": since})
        except HubError as exc:
            self.out({"id": cid, "error": codec.error_of(exc, "connect")})
            self.close(CLOSE_RESTART)
            return
        except Exception:
            log.exception("user channel subscribe failed")
            self.out({"id": cid, "error": {"code": codec.E_INTERNAL, "message": "internal error",
                                           "temporary": True}})
            self.close(CLOSE_RESTART)
            return
        if self.closed:
            return
        self.out({"id": cid, "connect": {
            "client": self.client, "version": VERSION, "expires": True, "ttl": _ttl(claims.exp),
            "ping": settings.HUB_PING_S, "pong": False, "node": self.engine.node,
            "data": {"user": claims.user, "role": claims.role, "tenant": claims.tenant},
            "subs": {channel: subscribe_result(result, since is not None)}}})

    def _leave(self, channel: str) -> None:
        self.join_leave.discard(channel)
        super()._leave(channel)


# --- pings ------------------------------------------------------------------------------------------

_pingers: weakref.WeakKeyDictionary[Engine, weakref.WeakSet[CentrifugeConnection]] = weakref.WeakKeyDictionary()


def _pinger(engine: Engine) -> weakref.WeakSet[CentrifugeConnection]:
    """The Centrifuge sockets of this engine, pinged every HUB_PING_S by one task (not a timer each)."""
    conns = _pingers.get(engine)
    if conns is None:
        conns = _pingers[engine] = weakref.WeakSet()
        engine.loop.create_task(_ping_loop(conns, settings.HUB_PING_S))
    return conns


async def _ping_loop(conns: weakref.WeakSet[CentrifugeConnection], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for conn in list(conns):
            if conn.caller is not None and not conn.closed:
                conn.write(codec.PING_PROTOBUF if conn.binary else codec.PING_JSON)


# --- the endpoint -----------------------------------------------------------------------------------

PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"


def opener(scope: dict[str, Any]) -> tuple[Any, str | None]:
    """Protobuf when the SDK asks for it: the `centrifuge-protobuf` subprotocol (centrifuge-js,
    centrifuge-python), or the `cf_protocol=protobuf` / `format=protobuf` query parameters older
    SDKs and other transports use. Without either, the first frame decides (binary: Protobuf)."""
    query = scope.get("query_string", b"")
    if PROTOBUF_SUBPROTOCOL in (scope.get("subprotocols") or []):
        return lambda engine, sink: CentrifugeConnection(engine, sink, True), PROTOBUF_SUBPROTOCOL
    if b"cf_protocol=protobuf" in query or b"format=protobuf" in query:
        return lambda engine, sink: CentrifugeConnection(engine, sink, True), None
    if b"cf_protocol=json" in query or b"format=json" in query:
        return lambda engine, sink: CentrifugeConnection(engine, sink, False), None
    return lambda engine, sink: CentrifugeConnection(engine, sink, False, chosen=False), None
