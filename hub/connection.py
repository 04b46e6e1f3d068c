"""One WebSocket: the protocol v1 state machine (connect, commands, limits, close codes).

Fast commands (publish to a known channel, signal, unsubscribe) run inline on the frame; the
rest (subscribe, history, presence, rpc, first publish to a channel) run as tasks so one slow
command never stalls the socket. Replies go out as soon as each command finishes.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings

from core import audit, metrics, tracing
from core.errors import BAD_REQUEST, INTERNAL, RATE_LIMITED, TOO_LARGE, UNAUTHORIZED, HubError
from core.logs import request_id
from hub import auth, channels, codec, credentials, revocation, rpc, store
from hub.limits import TokenBucket
from hub.rpc import Caller
from hub.sink import Sink
from hub.subscriber import Completion

if TYPE_CHECKING:
    from hub.engine import Engine

log = logging.getLogger("hub.connection")

CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012
CLOSE_AUTH = 4001
CLOSE_EXPIRED = 4002
CLOSE_SLOW = 4009
CLOSE_PROTOCOL = 4010
CLOSE_TOO_MANY = 4029  # the user (or address) holds as many sockets as allowed
# Frames a client may send while its `connect` is still being admitted.
HELD_FRAMES_MAX = 64

# Refused frames are logged at most once per connection per this many seconds (with a count), so a
# broken or hostile client cannot flood the log.
BAD_FRAME_LOG_S = 10.0
# Presence pseudo-channel of the sockets that reach a user now (hub.engine.user_foreground).
FOREGROUND_PREFIX = "fg:"
# Failed `refresh` attempts a connection may make (each one audited) before it is closed with 4001.
MAX_REFRESH_FAILURES = 3


class Connection:
    __slots__ = ("engine", "sink", "binary", "fmt", "client", "caller", "exp", "subs", "bucket", "bad",
                 "closed", "timer", "can_pub", "pub_waiting", "tasks", "close_callbacks", "bad_log_at",
                 "bad_unlogged", "refresh_failures", "who", "held", "iat", "jti", "background", "fg",
                 "prefix", "commit_done", "__weakref__")

    def __init__(self, engine: Engine, sink: Sink) -> None:
        self.engine = engine
        self.sink = sink
        self.binary = False
        self.fmt = 0  # the wire format the engine writes publications in (hub.pubs): v1 JSON or MessagePack
        self.client = secrets.token_hex(8)
        self.caller: Caller | None = None
        self.exp = 0
        # The current token's issue time and id: a revocation closes the sockets holding it.
        self.iat: int | None = None
        self.jti: str | None = None
        self.subs: set[str] = set()
        self.bucket = TokenBucket(settings.HUB_COMMANDS_PER_S, settings.HUB_COMMAND_BURST)
        self.bad = 0
        self.bad_log_at = 0.0  # monotonic time before which refusals are counted, not logged
        self.bad_unlogged = 0
        self.refresh_failures = 0
        self.who = ""  # tenant:user, the key of the user's budgets (hub.budgets)
        # "<tenant>/": channel names from the client mean the caller's tenant; below this object
        # (engine, store, presence, broker) they are qualified with it (hub.channels.qualify).
        self.prefix = ""
        # Frames that arrive while `connect` is taking the user's socket slot, replayed after it.
        self.held: list[str | bytes] | None = None
        self.closed = False
        loop = engine.loop
        self.timer: asyncio.TimerHandle | None = loop.call_later(
            settings.HUB_CONNECT_TIMEOUT_S, self.close, CLOSE_AUTH)
        self.can_pub: set[str] = set()
        self.pub_waiting: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.close_callbacks: list[Callable[[], None]] = []
        # The app said it went to the background (devices.state); `fg`: this socket counts in the
        # user's foreground presence (subscribed to its own `user:` channel and not in the background).
        self.background = False
        self.fg = False
        # Bound once, given to every publish (hub.subscriber.Completion); cleanup() unbinds it, so
        # the socket is freed by reference counting, not left to the cycle collector.
        self.commit_done: Completion | None = self.publish_done

    # --- output ---------------------------------------------------------------------------

    def send_obj(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.engine.cut_if_behind(self):
            return
        self.sink.write(codec.encode(obj, self.binary), self.binary)

    def reply(self, cid: int, result: Any) -> None:
        self.send_obj({"id": cid, "ok": True, "result": result})

    def error(self, cid: int, err: HubError) -> None:
        self.send_obj({"id": cid, "ok": False, "error": err.as_dict()})

    def close(self, code: int) -> None:
        if self.closed:
            return
        self.closed = True
        self.sink.close(code)
        self.cleanup()

    # --- input ----------------------------------------------------------------------------

    def wants_event(self, channel: str, frame: dict[str, Any]) -> bool:
        """Whether an ephemeral event (join, leave, signal) on a subscribed channel goes to this socket."""
        return True

    def on_frame(self, frame: str | bytes) -> None:
        if not self.admitted(frame):
            return
        if self.caller is None and self.bad == 0:
            self.binary = isinstance(frame, bytes)  # the first frame fixes the encoding
            self.fmt = int(self.binary)
        try:
            cmd = codec.parse(frame)
        except codec.FrameError as exc:
            self.bad_frame(exc.message, exc.id)
            return
        if tracing.ENABLED and "traceparent" in cmd:
            token = tracing.command_context(cmd)  # the client's traceparent is the parent
            try:
                self.dispatch(cmd["id"], cmd["cmd"], cmd)
            finally:
                tracing.detach(token)
            return
        self.dispatch(cmd["id"], cmd["cmd"], cmd)

    def admitted(self, frame: str | bytes) -> bool:
        """Size limit, and frames held while `connect` is admitted: False when the frame is not for now."""
        if self.closed:
            return False
        size = len(frame)
        limit = self.engine.max_frame
        if isinstance(frame, str) and size * 4 > limit:
            size = len(frame.encode())  # the limit is in bytes on the wire
        if size > limit:
            self.close(CLOSE_TOO_BIG)
            return False
        if self.held is not None:
            if len(self.held) >= HELD_FRAMES_MAX:
                self.close(CLOSE_PROTOCOL)
                return False
            self.held.append(frame)
            return False
        return True

    def dispatch(self, cid: int, name: str, cmd: dict[str, Any]) -> None:
        """One checked command (v1 shape), whichever protocol it came in: connect first, then every
        command spends from the connection's and the user's budgets."""
        if self.closed:
            return
        if self.caller is None:
            if name != "connect":
                self.close(CLOSE_AUTH)
                return
            self.do_connect(cid, cmd["token"])
            return
        wait = self.bucket.take() or self.engine.budgets.take(self.who)
        if wait:
            metrics.rate_limited("command")
            self.error(cid, HubError(RATE_LIMITED, "too many commands", retry_after_ms=wait))
            return
        if name == "publish":
            self.do_publish(cid, cmd)
        elif name == "signal":
            self.spawn(cid, self.do_signal(cmd), "signal")
        elif name == "unsubscribe":
            self.do_unsubscribe(cid, cmd["channel"])
        elif name == "subscribe":
            self.spawn(cid, self.do_subscribe(cmd), "subscribe")
        elif name == "history":
            self.spawn(cid, self.do_history(cmd), "history")
        elif name == "presence":
            self.spawn(cid, self.do_presence(cmd), "presence")
        elif name == "rpc":
            self.spawn(cid, self.do_rpc(cmd), "rpc")
        elif name == "refresh":
            self.do_refresh(cid, cmd["token"])
        elif name == "connect":
            self.error(cid, HubError(BAD_REQUEST, "already connected"))

    def bad_frame(self, message: str, cid: int | None) -> None:
        """Answer `bad_request` where the frame had a usable id; count it either way (close 4010 at the limit)."""
        self.bad += 1
        if cid is not None:
            self.error(cid, HubError(BAD_REQUEST, message))
        metrics.command("bad_frame", BAD_REQUEST)
        closing = self.bad >= self.engine.max_bad
        now = time.monotonic()
        if now >= self.bad_log_at or closing:
            self.bad_log_at = now + BAD_FRAME_LOG_S
            skipped, self.bad_unlogged = self.bad_unlogged, 0
            who = self.caller.user if self.caller is not None else None
            log.info("client %s: bad frame refused (%s): %s; %d bad of %d allowed%s%s", self.client,
                     f"answered bad_request to id {cid}" if cid is not None else "no usable id, no reply",
                     message, self.bad, self.engine.max_bad,
                     f", {skipped} more since the last line" if skipped else "",
                     ", closing with 4010" if closing else "",
                     extra={"event": "bad_frame", "code": BAD_REQUEST, "user": who})
        else:
            self.bad_unlogged += 1
        if closing:
            self.close(CLOSE_PROTOCOL)

    def spawn(self, cid: int, coro: Any, name: str) -> None:
        if tracing.ENABLED:
            coro = tracing.traced(coro, f"ws {name}", {"hub.client": self.client, "hub.command.id": cid})
        task = self.engine.loop.create_task(self._run(cid, coro, name))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, cid: int, coro: Any, name: str) -> None:
        request_id.set(f"{self.client}:{cid}")
        try:
            result = await coro
        except HubError as exc:
            metrics.command(name, exc.code)
            self.error(cid, exc)
        except asyncio.CancelledError:
            raise
        except store.DB_DOWN:
            metrics.command(name, "unavailable")
            self.error(cid, HubError("unavailable", "the database is unavailable; retry"))
        except Exception:
            # One failing command never takes the socket down.
            log.exception("command failed")
            metrics.command(name, INTERNAL)
            self.error(cid, HubError(INTERNAL, "internal error"))
        else:
            metrics.command(name, "ok")
            self.reply(cid, result)

    # --- commands -------------------------------------------------------------------------

    def do_connect(self, cid: int, token: str) -> None:
        try:
            claims = credentials.verify(token)
        except auth.TokenError as exc:
            self.error(cid, HubError(UNAUTHORIZED, str(exc)))
            self.close(CLOSE_AUTH)
            return
        if claims.role == auth.SERVICE_ROLE:
            self.error(cid, HubError(UNAUTHORIZED, "service tokens are for HTTP only"))
            self.close(CLOSE_AUTH)
            return
        self.held = []
        opening = self._open(cid, claims)
        if tracing.ENABLED:
            opening = tracing.traced(opening, "ws connect", {"hub.client": self.client})
        task = self.engine.loop.create_task(opening)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open(self, cid: int, claims: auth.Claims) -> None:
        """Take one of the user's socket slots (all processes count), then answer `connect` and
        run the frames that arrived meanwhile, in order."""
        who = f"{claims.tenant}:{claims.user}"
        budgets = self.engine.budgets
        opening = asyncio.ensure_future(budgets.open_user(who))
        try:
            allowed = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The socket went away mid-way: give the slot back once it has been taken.
            opening.add_done_callback(
                lambda f: budgets.close_user(who) if not f.cancelled() and f.exception() is None and f.result()
                else None)
            raise
        except Exception:  # a budget that cannot be read must not lock users out
            log.exception("socket budget check failed")
            allowed = True
        if self.closed:
            if allowed:
                self.engine.budgets.close_user(who)
            return
        if revocation.is_revoked(claims.tenant, claims.user, claims.iat, claims.jti):
            # Revoked while the socket slot was being taken: close_revoked could not see it yet.
            self.held = None
            if allowed:
                self.engine.budgets.close_user(who)
            self.error(cid, HubError(UNAUTHORIZED, "token revoked"))
            self.close(CLOSE_AUTH)
            return
        if not allowed:
            self.held = None
            limit = self.engine.budgets.per_user_sockets
            self.error(cid, HubError(RATE_LIMITED, f"at most {limit} sockets per user; close one first",
                                     retry_after_ms=5000))
            self.close(CLOSE_TOO_MANY)
            return
        self.who = who
        self.prefix = channels.qualify(claims.tenant, "")
        self.iat, self.jti = claims.iat, claims.jti
        self.caller = Caller(claims.user, claims.role, claims.tenant, self.client, push=self.send_obj,
                             on_close=self.close_callbacks.append, set_background=self.set_background)
        self._arm_expiry(claims.exp)
        await self.opened(cid, claims)
        if self.closed:
            return
        held, self.held = self.held or [], None
        for frame in held:
            self.on_frame(frame)

    async def opened(self, cid: int, claims: auth.Claims) -> None:
        """Answer `connect` (the frames that came meanwhile are still held)."""
        self.reply(cid, {"client": self.client, "user": claims.user, "role": claims.role,
                         "tenant": claims.tenant, "expires_at": claims.exp, "expires_at_ms": claims.exp * 1000,
                         "ping_s": settings.HUB_PING_S})

    def _arm_expiry(self, exp: int) -> None:
        self.exp = exp
        if self.timer is not None:
            self.timer.cancel()
        # Measured on the credentials' clock, timed on the loop's (tests move both by hand).
        self.timer = self.engine.loop.call_later(max(0.0, exp - credentials.now()), self.close, CLOSE_EXPIRED)

    def do_refresh(self, cid: int, token: str) -> None:
        assert self.caller is not None
        try:
            claims = credentials.verify(token)
            if (claims.user, claims.role, claims.tenant) != (self.caller.user, self.caller.role, self.caller.tenant):
                raise auth.TokenError("token is for another identity")
            if claims.exp < self.exp:
                raise auth.TokenError("token is older than the current one")
        except auth.TokenError as exc:
            caller = self.caller
            self.refresh_failures += 1
            if self.refresh_failures > MAX_REFRESH_FAILURES:
                # Someone trying tokens on an open socket: stop answering (and auditing) them.
                self.error(cid, HubError(UNAUTHORIZED, "too many failed refreshes"))
                self.close(CLOSE_AUTH)
                return
            self.engine.loop.create_task(audit.arecord(caller.user, "token.refresh_failed", self.client,
                                                       role=caller.role, tenant=caller.tenant,
                                                       reason=str(exc)))
            self.error(cid, HubError(UNAUTHORIZED, str(exc)))
            return
        self.iat, self.jti = claims.iat, claims.jti
        self._arm_expiry(claims.exp)
        self.reply(cid, {"expires_at": claims.exp, "expires_at_ms": claims.exp * 1000})

    def do_publish(self, cid: int, cmd: dict[str, Any]) -> None:
        channel: str = cmd["channel"]
        if channel in self.can_pub:
            self._submit(cid, cmd)
            return
        waiting = self.pub_waiting.get(channel)
        if waiting is not None:
            waiting.append((cid, cmd))  # behind the permission check already running
            return
        self.pub_waiting[channel] = [(cid, cmd)]
        task = self.engine.loop.create_task(self._check_publish(channel))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _check_publish(self, channel: str) -> None:
        """One permission check per channel; the publishes queued behind it go out in order."""
        assert self.caller is not None
        error: HubError | None = None
        try:
            await channels.check_publish(self.caller, channel)
        except HubError as exc:
            error = exc
        except Exception:
            log.exception("publish permission check failed")
            error = HubError(INTERNAL, "internal error")
        queued = self.pub_waiting.pop(channel, [])
        if error is None:
            self.can_pub.add(channel)
        for cid, cmd in queued:
            if error is None:
                self._submit(cid, cmd)
            else:
                metrics.command("publish", error.code)
                self.error(cid, error)

    def _submit(self, cid: int, cmd: dict[str, Any]) -> None:
        if self.engine.draining:
            self.error(cid, HubError("unavailable", "the server is draining; reconnect elsewhere"))
            return
        done, caller = self.commit_done, self.caller
        if done is None or caller is None:
            return  # cleaned up: closed
        data = cmd["data"]
        span = tracing.publish_span(self.client, cid, cmd) if tracing.ENABLED and (
            tracing.PUBLISH_ALL or "traceparent" in cmd) else None
        self.engine.publish(self.prefix + cmd["channel"], data, orjson.dumps(data).decode(), caller.user,
                            cmd.get("key"), done, cid, span)

    def publish_done(self, cid: int, result: Any, error: HubError | None, t0: float) -> None:
        """The completion of publish `cid` (hub.subscriber.Completion, as `commit_done`): called by
        the group-commit writer, in the loop, once the batch holding it ends."""
        if error is None:
            metrics.commit_latency(time.perf_counter() - t0)
            metrics.command("publish", "ok")
            if self.binary or self.closed or self.sink.pending() > self.engine.max_queue:
                self.reply(cid, {"offset": result[0].offset})
            else:  # the commonest reply, formatted without building a dict
                self.sink.write(b'{"id":%d,"ok":true,"result":{"offset":%d}}' % (cid, result[0].offset), False)
        else:
            metrics.command("publish", error.code)
            self.error(cid, error)

    async def do_signal(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.caller is not None
        channel = cmd["channel"]
        if channel not in self.can_pub:
            await channels.check_signal(self.caller, channel)
        self.engine.event(self.prefix + channel, {"push": "signal", "channel": channel, "from": self.caller.user,
                                    "data": cmd["data"]}, exclude=self)
        return {}

    async def do_subscribe(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.caller is not None
        channel: str = cmd["channel"]
        if channel in self.subs:
            raise HubError("conflict", f"already subscribed to {channel}")
        if len(self.subs) >= settings.HUB_MAX_SUBSCRIPTIONS:
            raise HubError(TOO_LARGE, f"at most {settings.HUB_MAX_SUBSCRIPTIONS} subscriptions")
        # Reserved before the first await: pipelined subscribes cannot pass the cap, nor take one
        # channel twice.
        self.subs.add(channel)
        try:
            ns, via_admin = await channels.check_subscribe(self.caller, channel)
            if via_admin:
                await audit.arecord(self.caller.user, "channel.admin_read", channel, role=self.caller.role,
                                    tenant=self.caller.tenant)
            window = ns.window_s or settings.HUB_HISTORY_DAYS * 86400
            result = await self.engine.attach(self, self.prefix + channel, cmd.get("since"), window)
        except BaseException:
            self.subs.discard(channel)
            raise
        if self.closed or channel not in self.subs:
            # Closed, or unsubscribed while this subscribe was under way: no delivery, no presence.
            self.engine.detach(self, self.prefix + channel)
            return result
        if self.engine.presence.join(self.prefix + channel, self.caller.user, self.caller.role):
            self.engine.event(self.prefix + channel, {"push": "join", "channel": channel, "user": self.caller.user},
                              exclude=self)
        if channel == f"user:{self.caller.user}":
            self._set_fg(not self.background)
        return result

    def set_background(self, background: bool) -> None:
        """The app went to the background (or came back): its socket stops (starts) reaching the user."""
        self.background = background
        if self.caller is not None and not self.closed and f"user:{self.caller.user}" in self.subs:
            self._set_fg(not background)

    def _set_fg(self, fg: bool) -> None:
        assert self.caller is not None
        if fg == self.fg:
            return
        self.fg = fg
        channel = FOREGROUND_PREFIX + self.prefix + self.caller.user  # fg:<tenant>/<user>
        if fg:
            self.engine.presence.join(channel, self.caller.user, self.caller.role)
        else:
            self.engine.presence.leave(channel, self.caller.user)

    def do_unsubscribe(self, cid: int, channel: str) -> None:
        if channel not in self.subs:
            self.error(cid, HubError("not_found", f"not subscribed to {channel}"))
            return
        self._leave(channel)
        self.reply(cid, {})

    def _leave(self, channel: str) -> None:
        assert self.caller is not None
        if channel == f"user:{self.caller.user}":
            self._set_fg(False)
        self.subs.discard(channel)
        internal = self.prefix + channel
        self.engine.detach(self, internal)
        if self.engine.presence.leave(internal, self.caller.user):
            self.engine.event(internal, {"push": "leave", "channel": channel, "user": self.caller.user})

    async def do_history(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.caller is not None
        channel: str = cmd["channel"]
        if channel not in self.subs:
            _ns, via_admin = await channels.check_subscribe(self.caller, channel)
            if via_admin:
                await audit.arecord(self.caller.user, "channel.admin_read", channel, role=self.caller.role,
                                    tenant=self.caller.tenant)
        limit = cmd.get("limit") or 50
        if limit > 100:
            raise HubError(BAD_REQUEST, "limit is at most 100")
        after, before = cmd.get("after"), cmd.get("before")
        top, epoch, pubs, cut = await self.engine.history(self.prefix + channel, after, before, limit)
        reply: dict[str, Any] = {"offset": top, "epoch": epoch, "pubs": [p.as_item() for p in pubs]}
        if cut:
            reply["truncated"] = True  # fewer than `limit` fitted: page on with after/before
        return reply

    async def do_presence(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.caller is not None
        channel: str = cmd["channel"]
        if channel not in self.subs:
            await channels.check_subscribe(self.caller, channel)
        return {"members": await self.engine.presence.members(self.prefix + channel)}

    async def do_rpc(self, cmd: dict[str, Any]) -> Any:
        assert self.caller is not None
        caller = self.caller
        caller.request_id = request_id.get()
        return await rpc.call(caller, cmd["method"], cmd.get("params") or {})

    # --- teardown -------------------------------------------------------------------------

    def cleanup(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for task in list(self.tasks):
            task.cancel()
        if self.caller is not None:
            for channel in list(self.subs):
                self._leave(channel)
        self.subs.clear()
        if self.who:
            self.engine.budgets.close_user(self.who)
            self.who = ""
        self.commit_done = None
        self.engine.conns.discard(self)
        callbacks, self.close_callbacks = self.close_callbacks, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("close callback failed")
