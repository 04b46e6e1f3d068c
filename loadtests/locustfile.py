"""Locust scenarios for every hub flow, protocol v1 over real WebSockets (websocket-client, gevent).

    HUB_SECRET=... locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8000 -u 20 -r 5 -t 30s

The hub is Locust's `--host` (or LOCUST_HOST), else HUB_URL, else http://127.0.0.1:8000; an http(s)
or ws(s) address, with or without the trailing /ws. While it runs, a progress line every
LOADTEST_PROGRESS_S (10) seconds on stderr: users, requests, failures, requests/s, stream losses.

Users (weights): ChatUser (rooms, chat, forced reconnect + recovery), ProviderUser (location
updates, offers, bids, calls answered), CustomerUser (match.find, bookings.create), JobPoster
(jobs.create, bids, jobs.accept, complete), CallerUser (calls.start / calls.end), AssistUser
(assist.ask against the fake upstream). Tokens are minted here with HUB_SECRET (hub.auth.mint).

Request types in the report:
- WS: connect, subscribe, recover, publish (ack), delivery (publication ts_ns -> received)
- RPC: one name per method (match.find, bookings.create, offers.accept, calls.start, ...)
- PUSH: server pushes measured end to end: offer (pub ts -> received), booking.assigned (create
  -> assigned), job.bid (job created -> first bid seen), call.invite, call.answered, assist
  (ask -> done), assist.first_token
- STREAM: lost / duplicate / recovery failures (each one a failure)

The run fails (exit code 1) when any request failed or a message was lost or duplicated.
LOCUST_SHAPE=step selects StepLoadShape (see docs/operations.md).
"""
from __future__ import annotations

import json
import logging
import os
import random
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import gevent
import orjson
from locust import LoadTestShape, User, between, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from hub import auth
from loadtests.tracker import StreamTracker, Totals
from loadtests.wsclient import Closed, HubError, HubSocket, Push

log = logging.getLogger("loadtests")

# --- configuration (environment) ------------------------------------------------------------

def hub_urls(url: str) -> tuple[str, str]:
    """(HTTP base, WebSocket URL) of a hub address given as http(s):// or ws(s)://, /ws or not."""
    http = url.rstrip("/").replace("ws://", "http://").replace("wss://", "https://").removesuffix("/ws")
    return http, http.replace("http://", "ws://").replace("https://", "wss://") + "/ws"


HUB_URL = (os.environ.get("LOCUST_HOST") or os.environ.get("HUB_URL") or "http://127.0.0.1:8000").rstrip("/")
HTTP_URL, WS_URL = hub_urls(HUB_URL)
PROGRESS_S = float(os.environ.get("LOADTEST_PROGRESS_S", "10"))
TENANT = os.environ.get("LOADTEST_TENANT", "loadtest")
RUN = os.environ.get("LOADTEST_RUN", "") or secrets.token_hex(3)
CATEGORY = os.environ.get("LOADTEST_CATEGORY", "loadtest-plumbing")
CHAT_GROUP = int(os.environ.get("LOADTEST_CHAT_GROUP", "3"))
ACCEPT_SHARE = float(os.environ.get("LOADTEST_ACCEPT_SHARE", "0.8"))
RPC_RETRIES = int(os.environ.get("LOADTEST_RPC_RETRIES", "3"))  # for `unavailable` + retry_after_ms
# A box in central London; the setup creates a zone over it serving CATEGORY.
BOX = (51.49, -0.16, 51.53, -0.08)  # lat_min, lng_min, lat_max, lng_max
ZONE_GEOMETRY = {"type": "Polygon", "coordinates": [[
    [BOX[1] - 0.02, BOX[0] - 0.02], [BOX[3] + 0.02, BOX[0] - 0.02], [BOX[3] + 0.02, BOX[2] + 0.02],
    [BOX[1] - 0.02, BOX[2] + 0.02], [BOX[1] - 0.02, BOX[0] - 0.02]]]}

TOTALS = Totals()
_state: dict[str, Any] = {"zone": None}


def secret() -> str:
    value = os.environ.get("HUB_SECRET", "")
    if not value:
        raise RuntimeError("HUB_SECRET must be set: load users' tokens are minted with it")
    return value


def mint(user: str, role: str, ttl: int = 4 * 3600) -> str:
    return auth.mint(user, role, secret(), tenant=TENANT, ttl=ttl)


def point() -> tuple[float, float]:
    return random.uniform(BOX[0], BOX[2]), random.uniform(BOX[1], BOX[3])


def http_rpc(method: str, params: dict[str, Any], token: str, timeout: float = 15) -> Any:
    req = urllib.request.Request(f"{HTTP_URL}/api/{method}", data=json.dumps(params).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())["result"]
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            err = json.loads(body)["error"]
        except (ValueError, KeyError):
            raise HubError("http", f"{exc.code} {body[:200]!r}") from exc
        raise HubError(err.get("code", "http"), err.get("message", "")) from exc


# --- process-local registries: who is online, rooms by chat group ------------------------------

_counter_lock = threading.Lock()
_counters: dict[str, int] = {}
_rooms: dict[int, str] = {}
_room_ready: dict[int, threading.Event] = {}
_providers_online: list[str] = []


def next_index(kind: str) -> int:
    with _counter_lock:
        n = _counters.get(kind, 0)
        _counters[kind] = n + 1
        return n


def room_event(group: int) -> threading.Event:
    with _counter_lock:
        return _room_ready.setdefault(group, threading.Event())


# --- base user ---------------------------------------------------------------------------------

class HubUser(User):
    """One simulated app: one socket, its own user channel, reported timings."""

    abstract = True
    host = HUB_URL  # what Locust shows and what `--host` replaces (see _use_host)
    role = "customer"
    kind = "user"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.index = next_index(self.kind)
        self.worker = getattr(environment.runner, "worker_index", 0) if environment.runner else 0
        self.user_id = self.peer_id(self.index)
        self.token = mint(self.user_id, self.role)
        self.tracker = StreamTracker(TOTALS)
        self.sock: HubSocket | None = None

    def peer_id(self, index: int) -> str:
        """The id of this process's `index`-th user of this class (chat rooms are made of known ids)."""
        return f"lt-{RUN}-w{self.worker}-{self.kind}-{index}"

    # --- reporting ---

    def fire(self, rtype: str, name: str, ms: float, length: int = 0, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(request_type=rtype, name=name, response_time=ms,
                                             response_length=length, exception=exc, context={})

    def timed(self, rtype: str, name: str, fn: Callable[[], Any], ok_codes: tuple[str, ...] = ()) -> Any:
        """Run fn, report it; a HubError with a code in ok_codes counts as success (returned)."""
        t0 = time.perf_counter()
        try:
            result = fn()
        except HubError as exc:
            ms = (time.perf_counter() - t0) * 1000
            if exc.code in ok_codes:
                self.fire(rtype, f"{name}:{exc.code}", ms)
                return exc
            self.fire(rtype, name, ms, exc=exc)
            raise
        except Exception as exc:
            if not (isinstance(exc, Closed) and getattr(self, "stopping", False)):
                self.fire(rtype, name, (time.perf_counter() - t0) * 1000, exc=exc)
            raise
        self.fire(rtype, name, (time.perf_counter() - t0) * 1000, len(orjson.dumps(result)) if result else 0)
        return result

    def rpc(self, method: str, params: dict[str, Any], ok_codes: tuple[str, ...] = (), timeout: float = 15) -> Any:
        assert self.sock is not None
        sock = self.sock

        def call() -> Any:
            # As the protocol asks: `unavailable` (the hub shedding load) or `rate_limited` with
            # retry_after_ms is retried after that delay, a few times; the request's time includes the waits.
            for attempt in range(RPC_RETRIES + 1):
                try:
                    return sock.rpc(method, params, timeout=timeout)
                except HubError as exc:
                    if (exc.code not in ("unavailable", "rate_limited") or exc.retry_after_ms is None
                            or attempt == RPC_RETRIES):
                        raise
                    self.fire("RPC", f"{method}:retried", 0)
                    time.sleep(exc.retry_after_ms / 1000 * random.uniform(1.0, 1.5))
            raise AssertionError("unreachable")

        return self.timed("RPC", method, call, ok_codes)

    # --- socket lifecycle ---

    def open(self) -> None:
        def connect() -> Any:
            self.sock = HubSocket(WS_URL, on_push=self.handle_push)
            return self.sock.call("connect", token=self.token)

        self.timed("WS", "connect", connect)
        self.subscribe(f"user:{self.user_id}")

    def subscribe(self, channel: str) -> Any:
        assert self.sock is not None
        since = self.tracker.since(channel)
        if since is None:
            return self.timed("WS", "subscribe", lambda: self.sock.call(  # type: ignore[union-attr]
                "subscribe", channel=channel,
                on_reply=lambda r: self.tracker.start(channel, int(r["offset"]), str(r["epoch"]))))
        outcome: dict[str, bool] = {}

        def on_reply(result: dict[str, Any]) -> None:
            outcome["ok"] = self.tracker.recovered(channel, result)

        result = self.timed("WS", "recover", lambda: self.sock.call(  # type: ignore[union-attr]
            "subscribe", channel=channel, since=since, on_reply=on_reply))
        if not outcome.get("ok"):
            self.fire("STREAM", "recovery_failed", 0, exc=RuntimeError(
                f"{channel}: not recovered from {since} (result offset {result.get('offset')})"))
        return result

    def on_start(self) -> None:
        self.open()

    def on_stop(self) -> None:
        self.stopping = True  # calls still in flight when this user's socket closes are not hub failures
        if self.sock is not None:
            time.sleep(1.0)  # let acknowledged publications arrive before the tail check
            missing = self.tracker.finish()
            if missing:
                self.fire("STREAM", "lost", 0, exc=RuntimeError(f"{missing} acknowledged publications never arrived"))
            self.sock.close()

    # --- pushes (reader context: keep short, no blocking) ---

    def handle_push(self, msg: Push) -> None:
        if msg.get("push") != "pub":
            return
        channel, offset = msg.get("channel", ""), int(msg.get("offset", 0))
        verdict = self.tracker.see(channel, offset)
        if verdict == "dup":
            self.fire("STREAM", "duplicate", 0, exc=RuntimeError(f"{channel} offset {offset} twice"))
        elif verdict == "gap":
            self.fire("STREAM", "lost", 0, exc=RuntimeError(f"{channel}: gap before offset {offset}"))
        data = msg.get("data")
        if isinstance(data, dict):
            ts_ns = data.get("ts_ns")
            if isinstance(ts_ns, (int, str)) and str(ts_ns).isdigit():
                self.fire("WS", "delivery", (time.time_ns() - int(ts_ns)) / 1e6, len(orjson.dumps(data)))
            self.on_pub(channel, data, msg)

    def on_pub(self, channel: str, data: dict[str, Any], msg: Push) -> None:
        """Subclasses react to domain pubs (offers, invites, job events). Reader context."""

    def spawn(self, fn: Callable[[], None]) -> None:
        """Work triggered by a push runs off the reader (a greenlet under Locust)."""
        def run() -> None:
            try:
                fn()
            except (HubError, Closed, TimeoutError):
                pass  # already reported by timed()
            except Exception:
                log.exception("push handler failed")

        gevent.spawn(run)  # a bare greenlet: a patched threading.Thread costs several times more to start

    def push_latency(self, name: str, msg: Push) -> None:
        """Server pub ts (ms, commit time) -> received here."""
        ts = msg.get("ts")
        if isinstance(ts, (int, float)):
            self.fire("PUSH", name, max(0.0, time.time() * 1000 - ts))

    def reconnect(self) -> None:
        assert self.sock is not None
        channels = list(self.tracker.last)
        self.sock.abort()
        time.sleep(random.uniform(0.2, 1.0))  # others keep publishing meanwhile
        self.timed("WS", "connect", lambda: self._reopen())
        for channel in channels:
            try:
                self.subscribe(channel)
            except (HubError, Closed, TimeoutError):
                pass

    def _reopen(self) -> Any:
        self.sock = HubSocket(WS_URL, on_push=self.handle_push)
        return self.sock.call("connect", token=self.token)


# --- chat ------------------------------------------------------------------------------------

class ChatUser(HubUser):
    """Customers chatting in rooms of CHAT_GROUP members; sometimes drop the socket and recover."""

    weight = 5
    role = "customer"
    kind = "chat"
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        super().on_start()
        self.chat_group, slot = divmod(self.index, CHAT_GROUP)
        ready = room_event(self.chat_group)
        if slot == 0:
            members = [self.peer_id(self.chat_group * CHAT_GROUP + i) for i in range(1, CHAT_GROUP)]
            # A direct room has exactly two members; a bigger group is a booking room.
            params: dict[str, Any] = {"members": members, "kind": "direct" if len(members) == 1 else "booking"}
            if len(members) > 1:
                params["ref"] = f"lt-{RUN}-{self.chat_group}"
            result = self.rpc("rooms.create", params)
            _rooms[self.chat_group] = result["room"]
            ready.set()
        elif not ready.wait(60):
            raise RuntimeError("room was not created")
        self.room = f"chat:{_rooms[self.chat_group]}"
        self.subscribe(self.room)

    @task(10)
    def chat(self) -> None:
        assert self.sock is not None
        sock = self.sock
        # ts_ns as a string: the hub refuses integers beyond 2^53 (JSON-safe), and ns since 1970 exceed it.
        data = {"text": f"hello from {self.user_id}", "ts_ns": str(time.time_ns())}
        result = self.timed("WS", "publish", lambda: sock.call("publish", channel=self.room, data=data))
        self.tracker.ack(self.room, int(result["offset"]))

    @task(1)
    def history(self) -> None:
        assert self.sock is not None
        sock = self.sock
        self.timed("WS", "history", lambda: sock.call("history", channel=self.room, limit=20))

    @task(1)
    def forced_reconnect(self) -> None:
        self.reconnect()


# --- providers --------------------------------------------------------------------------------

class ProviderUser(HubUser):
    """Providers: location updates; accept or decline offers; bid on new jobs; start accepted jobs;
    answer call invites."""

    weight = 5
    role = "provider"
    kind = "prov"
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        super().on_start()
        self.lat, self.lng = point()
        self.rpc("providers.update", {"lat": self.lat, "lng": self.lng, "available": True,
                                      "categories": [CATEGORY], "capacity": 3})
        with _counter_lock:
            _providers_online.append(self.user_id)

    def on_stop(self) -> None:
        with _counter_lock:
            if self.user_id in _providers_online:
                _providers_online.remove(self.user_id)
        if self.sock is not None and self.sock.closed is None:
            # Leave the index clean: a stale "available" provider would be offered work nobody answers.
            try:
                self.sock.rpc("providers.update", {"lat": self.lat, "lng": self.lng, "available": False}, timeout=5)
            except (HubError, Closed, TimeoutError):
                pass
        super().on_stop()

    @task
    def move(self) -> None:
        self.lat = min(BOX[2], max(BOX[0], self.lat + random.uniform(-0.001, 0.001)))
        self.lng = min(BOX[3], max(BOX[1], self.lng + random.uniform(-0.001, 0.001)))
        self.rpc("providers.update", {"lat": self.lat, "lng": self.lng, "available": True,
                                      "categories": [CATEGORY], "capacity": 3})

    def on_pub(self, channel: str, data: dict[str, Any], msg: Push) -> None:
        kind = data.get("kind")
        if kind == "offer" and data.get("booking"):
            self.push_latency("offer", msg)
            booking = str(data["booking"])
            if random.random() < ACCEPT_SHARE:
                # A late accept is the protocol's `conflict`: expected under competition.
                self.spawn(lambda: self.rpc("offers.accept", {"booking": booking}, ok_codes=("conflict",)))
            else:
                self.spawn(lambda: self.rpc("offers.decline", {"booking": booking}, ok_codes=("conflict",)))
        elif kind == "job.new" and data.get("job"):
            job = str(data["job"])
            amount = random.randint(5_000, 50_000)
            self.spawn(lambda: self.rpc("jobs.bid", {"job": job, "amount": amount, "currency": "GBP",
                                                     "note": "can do it today"}, ok_codes=("conflict",)))
        elif kind == "bid.accepted" and data.get("job"):
            job = str(data["job"])
            self.spawn(lambda: self.rpc("jobs.start", {"job": job}, ok_codes=("conflict",)))
        elif kind == "call.invite" and data.get("call"):
            self.push_latency("call.invite", msg)
            call = str(data["call"])
            self.spawn(lambda: self.rpc("calls.accept", {"call": call}, ok_codes=("conflict",)))


# --- customers: match and bookings --------------------------------------------------------------

def _pub_kind(msg: Push, kinds: tuple[str, ...], **fields: Any) -> bool:
    data = msg.get("data")
    return (msg.get("push") == "pub" and isinstance(data, dict) and data.get("kind") in kinds
            and all(data.get(k) == v for k, v in fields.items()))


class CustomerUser(HubUser):
    weight = 3
    role = "customer"
    kind = "cust"
    wait_time = between(1.0, 3.0)

    @task(3)
    def match(self) -> None:
        lat, lng = point()
        self.rpc("match.find", {"lat": lat, "lng": lng, "category": CATEGORY, "k": 5})

    @task(1)
    def book(self) -> None:
        assert self.sock is not None
        sock = self.sock
        lat, lng = point()
        t0 = time.perf_counter()
        booking = self.rpc("bookings.create", {"category": CATEGORY, "lat": lat, "lng": lng,
                                               "mode": "on_demand"})["booking"]
        try:
            push = sock.wait_for(lambda m: _pub_kind(m, ("booking.assigned", "booking.unfilled"), booking=booking),
                                 75)
        except (TimeoutError, Closed) as exc:
            self.fire("PUSH", "booking.assigned", (time.perf_counter() - t0) * 1000, exc=exc)
            return
        self.fire("PUSH", str(push["data"]["kind"]), (push["_rx"] - t0) * 1000)


# --- custom jobs ----------------------------------------------------------------------------------

class JobPoster(HubUser):
    weight = 2
    role = "customer"
    kind = "job"
    wait_time = between(2.0, 5.0)

    @task
    def post_job(self) -> None:
        assert self.sock is not None
        sock = self.sock
        lat, lng = point()
        t0 = time.perf_counter()
        created = self.rpc("jobs.create", {"title": "Fix a leaking tap", "description": "Kitchen tap drips",
                                           "category": CATEGORY, "lat": lat, "lng": lng, "budget": 20_000,
                                           "currency": "GBP"})
        job = created["job"]
        if created.get("notified") == 0:
            # No provider online in range (e.g. at ramp-up): nobody will bid; not a hub failure.
            self.fire("PUSH", "job.bid:no_candidates", 0)
            self.rpc("jobs.cancel", {"job": job, "reason": "no providers nearby"}, ok_codes=("conflict",))
            return
        channel = f"job:{job}"
        result = self.subscribe(channel)
        try:
            self._follow_job(sock, job, channel, int(result["offset"]), t0)
        finally:
            # At most 128 subscriptions per socket: leave each job's channel when done with it.
            self.tracker.last.pop(channel, None)
            try:
                sock.call("unsubscribe", channel=channel)
            except (HubError, Closed, TimeoutError):
                pass

    def _follow_job(self, sock: HubSocket, job: str, channel: str, head: int, t0: float) -> None:
        bid: dict[str, Any] | None = None
        if head > 0:
            # Bids committed before we subscribed are not pushed: read them.
            hist = sock.call("history", channel=channel, after=0, limit=100)
            bids = [p["data"] for p in hist["pubs"] if isinstance(p.get("data"), dict)
                    and p["data"].get("kind") == "bid"]
            bid = bids[0] if bids else None
        if bid is None:
            try:
                bid = sock.wait_for(lambda m: m.get("channel") == channel and _pub_kind(m, ("bid",)), 20)["data"]
            except (TimeoutError, Closed) as exc:
                self.fire("PUSH", "job.bid", (time.perf_counter() - t0) * 1000, exc=exc)
                self.rpc("jobs.cancel", {"job": job, "reason": "no bids in time"}, ok_codes=("conflict",))
                return
        assert bid is not None
        self.fire("PUSH", "job.bid", (time.perf_counter() - t0) * 1000)
        self.rpc("jobs.accept", {"job": job, "bid": bid["bid"]})
        try:
            sock.wait_for(lambda m: m.get("channel") == channel and _pub_kind(m, ("status",), status="in_progress"),
                          20)
        except (TimeoutError, Closed) as exc:
            self.fire("PUSH", "job.started", (time.perf_counter() - t0) * 1000, exc=exc)
            return
        self.fire("PUSH", "job.started", (time.perf_counter() - t0) * 1000)
        self.rpc("jobs.complete", {"job": job})


# --- calls ------------------------------------------------------------------------------------

class CallerUser(HubUser):
    weight = 2
    role = "customer"
    kind = "call"
    wait_time = between(2.0, 5.0)

    def on_start(self) -> None:
        super().on_start()
        self.rooms: dict[str, str] = {}

    @task
    def call(self) -> None:
        assert self.sock is not None
        sock = self.sock
        with _counter_lock:
            online = list(_providers_online)
        if not online:
            return
        peer = random.choice(online)
        room = self.rooms.get(peer)
        if room is None:
            room = self.rooms[peer] = self.rpc("rooms.create", {"members": [peer], "kind": "direct"})["room"]
        t0 = time.perf_counter()
        call = self.rpc("calls.start", {"room": room, "media": random.choice(["video", "voice"])})["call"]
        try:
            push = sock.wait_for(lambda m: _pub_kind(m, ("call.accepted",), call=call), 15)
            self.fire("PUSH", "call.answered", (push["_rx"] - t0) * 1000)
        except (TimeoutError, Closed) as exc:
            self.fire("PUSH", "call.answered", (time.perf_counter() - t0) * 1000, exc=exc)
        time.sleep(random.uniform(0.5, 2.0))
        self.rpc("calls.end", {"call": call}, ok_codes=("conflict",))


# --- AI assist -------------------------------------------------------------------------------

class AssistUser(HubUser):
    weight = 2
    role = "customer"
    kind = "assist"
    wait_time = between(2.0, 5.0)

    @task
    def ask(self) -> None:
        assert self.sock is not None
        sock = self.sock
        t0 = time.perf_counter()
        assist = self.rpc("assist.ask", {"prompt": "How do I bleed a radiator?"}, timeout=30)["assist"]
        try:
            end = sock.wait_for(lambda m: m.get("push") == "assist" and m.get("assist") == assist
                                and (bool(m.get("done")) or "error" in m), 60)
        except (TimeoutError, Closed) as exc:
            self.fire("PUSH", "assist", (time.perf_counter() - t0) * 1000, exc=exc)
            return
        total = (end["_rx"] - t0) * 1000
        try:
            first = sock.wait_for(lambda m: m.get("push") == "assist" and m.get("assist") == assist
                                  and "delta" in m, 0)
            self.fire("PUSH", "assist.first_token", (first["_rx"] - t0) * 1000)
        except TimeoutError:
            pass  # fell out of the ring, or an answer without deltas
        if "error" in end:
            err = end["error"]
            self.fire("PUSH", "assist", total, exc=HubError(str(err.get("code")), str(err.get("message"))))
        else:
            self.fire("PUSH", "assist", total, int(end.get("usage", {}).get("output_tokens", 0) or 0))


# --- load shape ---------------------------------------------------------------------------------

class StepLoadShape(LoadTestShape):
    """LOCUST_SHAPE=step: add LOCUST_STEP_USERS users every LOCUST_STEP_S seconds up to LOCUST_USERS,
    hold, and stop after LOCUST_RUN_TIME (seconds, or 30s/5m/1h)."""

    abstract = os.environ.get("LOCUST_SHAPE", "") != "step"

    def __init__(self) -> None:
        super().__init__()
        self.step_users = int(os.environ.get("LOCUST_STEP_USERS", "10"))
        self.step_s = float(os.environ.get("LOCUST_STEP_S", "30"))
        self.max_users = int(os.environ.get("LOCUST_USERS", "100"))
        self.spawn_rate = float(os.environ.get("LOCUST_SPAWN_RATE", "5"))
        self.run_time = parse_duration(os.environ.get("LOCUST_RUN_TIME", "5m"))

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t > self.run_time:
            return None
        users = min(self.max_users, self.step_users * (int(t // self.step_s) + 1))
        return users, self.spawn_rate


def parse_duration(text: str) -> float:
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


# --- setup, aggregation, verdict --------------------------------------------------------------

@events.init.add_listener
def _use_host(environment: Environment, **_: Any) -> None:
    """`--host` / LOCUST_HOST names the hub (Locust's convention); HUB_URL is the fallback."""
    global HUB_URL, HTTP_URL, WS_URL
    if environment.host:
        HUB_URL = environment.host.rstrip("/")
        HTTP_URL, WS_URL = hub_urls(HUB_URL)


@events.init.add_listener
def _progress(environment: Environment, **_: Any) -> None:
    """A short line every PROGRESS_S while the run lasts (headless runs are otherwise silent)."""
    if isinstance(environment.runner, WorkerRunner) or PROGRESS_S <= 0:
        return

    def report() -> None:
        t0 = time.time()
        while True:
            gevent.sleep(PROGRESS_S)
            runner, stats = environment.runner, environment.stats
            if runner is None or stats is None:
                continue
            total = stats.total
            lost = TOTALS.snapshot()
            print(f"loadtest progress: {time.time() - t0:.0f} s, {runner.user_count} users, "
                  f"{total.num_requests} requests, {total.num_failures} failures, "
                  f"{total.current_rps:.1f} req/s, lost {lost.get('lost', 0)}, "
                  f"duplicated {lost.get('duplicated', 0)}", file=sys.stderr, flush=True)

    gevent.spawn(report)


@events.test_start.add_listener
def _setup(environment: Environment, **_: Any) -> None:
    """Once per run (master or standalone): a zone over the test box serving CATEGORY."""
    if isinstance(environment.runner, WorkerRunner):
        return
    TOTALS.reset()
    admin = mint(f"lt-{RUN}-admin", "admin", ttl=3600)
    try:
        zone = http_rpc("zones.create", {"name": f"loadtest {RUN}", "categories": [CATEGORY],
                                         "geometry": ZONE_GEOMETRY}, admin)
        _state["zone"] = zone.get("id")
        log.info("loadtest zone %s created for %s", _state["zone"], CATEGORY)
    except (HubError, OSError) as exc:
        log.warning("could not create the loadtest zone (%s): matching flows will find nobody", exc)


@events.test_stop.add_listener
def _teardown(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not _state.get("zone"):
        return
    try:
        http_rpc("zones.delete", {"id": _state["zone"]}, mint(f"lt-{RUN}-admin", "admin", ttl=3600))
    except (HubError, OSError) as exc:
        log.warning("could not delete the loadtest zone: %s", exc)


@events.report_to_master.add_listener
def _to_master(client_id: str, data: dict[str, Any]) -> None:
    # Workers ship their stream counts with each stats report, then start from zero again.
    data["stream_totals"] = TOTALS.snapshot()
    TOTALS.reset()


@events.worker_report.add_listener
def _from_worker(client_id: str, data: dict[str, Any]) -> None:
    TOTALS.merge(data.get("stream_totals") or {})


def verdict(environment: Environment) -> tuple[int, dict[str, Any]]:
    """(exit code, summary): 1 if any request failed or any message was lost or duplicated."""
    totals = TOTALS.snapshot()
    failures = environment.stats.total.num_failures if environment.stats else 0
    summary = {"requests": environment.stats.total.num_requests if environment.stats else 0,
               "failures": failures, **totals}
    return (1 if failures or TOTALS.bad else 0), summary


@events.quitting.add_listener
def _quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    code, summary = verdict(environment)
    log.info("loadtest verdict: %s", json.dumps(summary))
    out = os.environ.get("LOADTEST_SUMMARY", "")
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
    if code:
        environment.process_exit_code = 1


__all__ = ["AssistUser", "CallerUser", "ChatUser", "CustomerUser", "JobPoster", "MasterRunner", "ProviderUser",
           "StepLoadShape"]
