"""Protocol v1: in process on a clock the test moves (connect timeout, token expiry, refresh),
then over a real socket against a live daphne hub (commands, limits, refusals)."""
import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import orjson
import pytest
from django.conf import settings

from hub import credentials
from hub.connection import Connection
from hub.engine import Engine
from tests.hub.fakes import Clock, FakeSink, frozen_credentials, running_engine, until
from tests.support import HubClient, HubServer, ReplyError, mint, uid

# --- in process, on a clock the test moves ---------------------------------------------------------


def on_clock(scenario: Callable[[Engine, Clock], Awaitable[None]]) -> None:
    clock = Clock()

    async def main() -> None:
        async with running_engine() as eng:
            await scenario(eng, clock)

    with frozen_credentials(clock), asyncio.Runner(loop_factory=clock.loop) as runner:
        runner.run(main())


class Socket:
    """A v1 JSON connection fed frames by hand."""

    def __init__(self, eng: Engine) -> None:
        self.sink = FakeSink()
        self.conn = Connection(eng, self.sink)
        self.next_id = 0

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        self.next_id += 1
        cid = self.next_id
        self.conn.on_frame(json.dumps({"id": cid, "cmd": cmd, **fields}))
        return await until(lambda: next((r for r in map(orjson.loads, self.sink.payloads) if r.get("id") == cid),
                                        None))


def test_no_connect_within_the_timeout_closes_4001() -> None:
    async def scenario(eng: Engine, clock: Clock) -> None:
        s = Socket(eng)
        await clock.advance(settings.HUB_CONNECT_TIMEOUT_S - 0.5)
        assert s.sink.code is None
        await clock.advance(0.5)
        assert s.sink.code == 4001

    on_clock(scenario)


def test_token_expiry_closes_4002_at_the_tokens_exp() -> None:
    async def scenario(eng: Engine, clock: Clock) -> None:
        s = Socket(eng)
        hello = (await s.call("connect", token=credentials.mint(uid(), "customer", "t1", ttl=30)))["result"]
        assert hello["expires_at"] == clock() + 30
        await clock.advance(29.9)
        assert s.sink.code is None
        await clock.advance(0.1)
        assert s.sink.code == 4002
        # A token already expired at connect is refused: 4001.
        late = credentials.mint(uid(), "customer", "t1", ttl=5)
        await clock.advance(5)
        s = Socket(eng)
        assert (await s.call("connect", token=late))["error"] == {"code": "unauthorized", "message": "token expired"}
        assert s.sink.code == 4001

    on_clock(scenario)


def test_refresh_extends_the_expiry_and_refuses_other_identities_and_older_tokens() -> None:
    async def scenario(eng: Engine, clock: Clock) -> None:
        user = uid()
        s = Socket(eng)
        await s.call("connect", token=credentials.mint(user, "customer", "t1", ttl=2))
        res = (await s.call("refresh", token=credentials.mint(user, "customer", "t1", ttl=600)))["result"]
        assert res == {"expires_at": clock() + 600, "expires_at_ms": (clock() + 600) * 1000}
        other = await s.call("refresh", token=credentials.mint(uid(), "customer", "t1", ttl=600))
        assert other["error"]["code"] == "unauthorized"  # a replayed token of someone else
        older = await s.call("refresh", token=credentials.mint(user, "customer", "t1", ttl=60))
        assert older["error"]["code"] == "unauthorized"
        await clock.advance(3)
        assert s.sink.code is None  # still open past the first token's expiry
        await clock.advance(597)
        assert s.sink.code == 4002

    on_clock(scenario)


# --- over a real socket ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight_hub():
    """A hub with small limits so the limits can be reached quickly."""
    server = HubServer(env={"HUB_MAX_SUBSCRIPTIONS": "2",
                            "HUB_COMMANDS_PER_S": "5", "HUB_COMMAND_BURST": "10"})
    server.start()
    yield server
    server.stop()


def room_for(client: HubClient, *others: str) -> str:
    return "chat:" + client.rpc("rooms.create", members=list(others) or [uid()], kind="booking")["room"]


def test_connect_result(live_hub):
    user = uid()
    with HubClient(live_hub.url, mint(user, "provider", tenant="acme")) as c:
        assert c.hello["user"] == user
        assert c.hello["role"] == "provider"
        assert c.hello["tenant"] == "acme"
        assert c.hello["ping_s"] == 25
        assert c.hello["expires_at"] > time.time()
        assert c.hello["client"]


def test_command_before_connect_closes_4001(live_hub):
    c = HubClient(live_hub.url)
    c.send("subscribe", channel="user:x")
    assert c.wait_closed()[0] == 4001


@pytest.mark.parametrize("token", ["garbage", mint("x", ttl=-10)])
def test_bad_or_expired_token_closes_4001(live_hub, token):
    c = HubClient(live_hub.url)
    reply = c.request("connect", token=token)
    assert reply["error"]["code"] == "unauthorized"
    assert c.wait_closed()[0] == 4001


def test_forged_token_closes_4001(live_hub):
    from hub import auth

    forged = auth.mint("admin1", "admin", "not-the-hub-secret-" * 3)
    c = HubClient(live_hub.url)
    assert c.request("connect", token=forged)["error"]["code"] == "unauthorized"
    assert c.wait_closed()[0] == 4001


def test_bad_frames_get_bad_request_then_4010(live_hub):
    c = HubClient(live_hub.url, mint(uid()))
    assert c.request("explode")["error"]["code"] == "bad_request"
    c.send_raw(json.dumps({"id": 99, "cmd": "subscribe", "channel": 5}))
    assert c.wait_reply(99)["error"]["code"] == "bad_request"
    for _ in range(30):
        c.send_raw("{broken")
    assert c.wait_closed()[0] == 4010


def test_oversized_frame_closes_1009(live_hub):
    c = HubClient(live_hub.url, mint(uid()))
    c.send_raw(json.dumps({"id": 5, "cmd": "publish", "channel": "user:x", "data": "x" * 70000}))
    assert c.wait_closed()[0] == 1009


def test_rate_limit(tight_hub):
    c = HubClient(tight_hub.url, mint(uid()))
    ids = [c.send("presence", channel=f"user:{c.hello['user']}") for _ in range(15)]
    codes = [c.wait_reply(i).get("error", {}).get("code") for i in ids]
    limited = [code for code in codes if code == "rate_limited"]
    assert limited and len(limited) <= 6
    refused = next(c.wait_reply(i) for i in [c.send("presence", channel="user:y")])
    assert refused["error"]["code"] in ("rate_limited", "forbidden")


def test_subscription_limit(tight_hub):
    user = uid()
    c = HubClient(tight_hub.url, mint(user))
    c.call("subscribe", channel=f"user:{user}")
    c.call("subscribe", channel=room_for(c))
    with pytest.raises(ReplyError) as info:
        c.call("subscribe", channel=room_for(c))
    assert info.value.code == "too_large"


def test_user_channel_is_private(live_hub):
    c = HubClient(live_hub.url, mint(uid()))
    with pytest.raises(ReplyError) as info:
        c.call("subscribe", channel="user:someone-else")
    assert info.value.code == "forbidden"
    with pytest.raises(ReplyError) as info:
        c.call("publish", channel=f"user:{c.hello['user']}", data={"x": 1})
    assert info.value.code == "forbidden"  # server-only namespace


@pytest.mark.parametrize("channel,code", [("nope:1", "bad_request"), ("user:other", "forbidden"),
                                          ("chat:not-a-room", "forbidden")])
def test_unknown_or_foreign_channels(live_hub, channel, code):
    c = HubClient(live_hub.url, mint(uid()))
    with pytest.raises(ReplyError) as info:
        c.call("subscribe", channel=channel)
    assert info.value.code == code


def test_chat_publish_subscribe_recover_and_history(live_hub):
    alice, bob = uid("alice"), uid("bob")
    a = HubClient(live_hub.url, mint(alice))
    b = HubClient(live_hub.url, mint(bob), binary=True)
    ch = room_for(a, bob)
    sub = b.call("subscribe", channel=ch)
    assert sub["offset"] == 0 and sub["recovered"] is False
    offsets = [a.call("publish", channel=ch, data={"text": f"m{i}"})["offset"] for i in range(5)]
    assert offsets == [1, 2, 3, 4, 5]
    got = [b.next_push("pub", channel=ch) for _ in range(5)]
    assert [p["offset"] for p in got] == offsets
    assert got[0]["from"] == alice and got[0]["data"] == {"text": "m0"} and got[0]["epoch"] == sub["epoch"]
    # idempotency
    k1 = a.call("publish", channel=ch, data={"text": "once"}, key="k-1")["offset"]
    assert a.call("publish", channel=ch, data={"text": "once"}, key="k-1")["offset"] == k1
    # recovery from offset 2 on a fresh socket
    c = HubClient(live_hub.url, mint(bob))
    rec = c.call("subscribe", channel=ch, since={"offset": 2, "epoch": sub["epoch"]})
    assert rec["recovered"] is True
    assert [p["offset"] for p in rec["pubs"]] == [3, 4, 5, 6]
    wrong = HubClient(live_hub.url, mint(bob)).call("subscribe", channel=ch, since={"offset": 2, "epoch": "zz"})
    assert wrong["recovered"] is False and wrong["pubs"] == []
    hist = a.call("history", channel=ch, limit=2)
    assert [p["offset"] for p in hist["pubs"]] == [5, 6]
    hist = a.call("history", channel=ch, after=1, before=4)
    assert [p["offset"] for p in hist["pubs"]] == [2, 3]
    with pytest.raises(ReplyError):
        a.call("history", channel=ch, limit=101)


def test_presence_join_leave_and_signal(live_hub):
    alice, bob = uid("alice"), uid("bob")
    a = HubClient(live_hub.url, mint(alice))
    ch = room_for(a, bob)
    a.call("subscribe", channel=ch)
    b = HubClient(live_hub.url, mint(bob))
    b.call("subscribe", channel=ch)
    assert a.next_push("join", channel=ch)["user"] == bob
    members = {m["user"]: m for m in a.call("presence", channel=ch)["members"]}
    assert set(members) == {alice, bob} and members[bob]["conns"] == 1
    b.call("signal", channel=ch, data={"typing": True})
    sig = a.next_push("signal", channel=ch)
    assert sig["from"] == bob and sig["data"] == {"typing": True}
    b.close()
    assert a.next_push("leave", channel=ch)["user"] == bob


def test_msgpack_connection_answers_in_msgpack(live_hub):
    c = HubClient(live_hub.url, mint(uid()), binary=True)
    assert c.hello["role"] == "customer"
    c.send_raw(msgpack.packb({"id": 50, "cmd": "presence", "channel": "chat:none"}))
    assert c.wait_reply(50)["error"]["code"] == "forbidden"


def test_rpc_errors(live_hub):
    c = HubClient(live_hub.url, mint(uid()))
    with pytest.raises(ReplyError) as info:
        c.rpc("no.such.method")
    assert info.value.code == "bad_request"
    with pytest.raises(ReplyError) as info:
        c.rpc("rooms.create", members="not-a-list", kind="direct")
    assert info.value.code == "bad_request"
    with pytest.raises(ReplyError) as info:
        c.rpc("rooms.create", members=["a", "b"], kind="direct")
    assert info.value.code == "bad_request"


def test_server_keeps_serving_after_abuse(live_hub):
    bad = HubClient(live_hub.url, mint(uid()))
    for frame in ["[" * 5000, "\x00", '{"id": 1e400}', '{"id":1,"cmd":"rpc","method":"x","params":' + "[" * 3000]:
        bad.send_raw(frame)
    good = HubClient(live_hub.url, mint(uid()))
    assert good.call("presence", channel=f"user:{good.hello['user']}") == {"members": []}


def test_admin_read_of_a_foreign_room_is_allowed_and_audited(live_hub):
    from core.models import AuditLog

    owner, admin = uid("o"), uid("adm")
    c = HubClient(live_hub.url, mint(owner))
    ch = room_for(c)
    a = HubClient(live_hub.url, mint(admin, "admin"))
    assert a.call("subscribe", channel=ch)["offset"] == 0
    assert AuditLog.objects.filter(action="channel.admin_read", actor=admin, target=ch).exists()
    with pytest.raises(ReplyError):
        a.call("publish", channel=ch, data={"x": 1})  # reading is not joining


# --- bad frames: a reply wherever an id can be read, a rate-limited log line, 4010 at the limit --------

WITH_ID = [
    {"id": 11},
    {"id": 12, "cmd": "explode"},
    {"id": 13, "cmd": "subscribe", "channel": 5},
    {"id": 14, "cmd": "rpc", "method": "rooms.list", "params": [1]},
    {"id": 15, "cmd": "publish", "channel": "user:x"},
    {"id": 16, "cmd": "history", "channel": "user:x", "limit": "ten"},
    {"id": 17, "cmd": "publish", "channel": "chat:x", "data": {"n": 2**60}},
    {"id": 18, "cmd": "connect", "token": 5},
]
WITHOUT_ID = [[1, 2], {"cmd": "presence", "channel": "user:x"}, {"id": "7", "cmd": "presence"},
              {"id": 0, "cmd": "explode"}, {"id": -3}, {"id": 1.5}, {"id": True}, {"id": 2**53}]


def encode(frame: object, binary: bool) -> str | bytes:
    return msgpack.packb(frame, use_bin_type=True) if binary else json.dumps(frame)


def bad_frame_lines(hub: HubServer, client: str, want: int, timeout: float = 5) -> list[dict]:
    deadline = time.time() + timeout
    while True:
        lines = [json.loads(line) for line in hub.log_path.read_text(errors="replace").splitlines()
                 if line.startswith("{") and f"client {client}: bad frame" in line]
        if len(lines) >= want or time.time() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
def test_bad_frames_with_an_id_get_bad_request_the_rest_count_to_4010(live_hub, binary):
    c = HubClient(live_hub.url, mint(uid()), binary=binary)
    unreadable = [b"\xc1", msgpack.packb({1: 2})] if binary else ["{broken", "", '{"id": 1, "cmd": NaN}']
    for frame in WITH_ID:
        c.send_raw(encode(frame, binary))
    for frame in WITHOUT_ID:
        c.send_raw(encode(frame, binary))
    for raw in unreadable:
        c.send_raw(raw)
    for frame in WITH_ID:
        reply = c.wait_reply(frame["id"])
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", frame
    # Frames without a usable id were counted, not answered; the socket still serves.
    sent = len(WITH_ID) + len(WITHOUT_ID) + len(unreadable)
    assert sent < 20
    assert c.call("presence", channel=f"user:{c.hello['user']}") == {"members": []}
    assert set(c.replies) == set() and c.pushes.empty()
    for _ in range(20 - sent):
        c.send_raw(unreadable[0])
    assert c.wait_closed()[0] == 4010
    # Logged, rate-limited: the first refusal and the closing one, the rest counted in between.
    lines = bad_frame_lines(live_hub, c.hello["client"], 2)
    assert 2 <= len(lines) < 20
    assert lines[0]["event"] == "bad_frame" and lines[0]["code"] == "bad_request"
    assert lines[0]["user"] == c.hello["user"] and "answered bad_request to id 11" in lines[0]["msg"]
    assert "1 bad of 20 allowed" in lines[0]["msg"]
    assert "20 bad of 20 allowed" in lines[-1]["msg"] and "closing with 4010" in lines[-1]["msg"]
    logged_between = sum(int(m.group(1)) for line in lines
                         if (m := re.search(r"(\d+) more since the last line", line["msg"])))
    assert len(lines) + logged_between == 20


def test_a_bad_frame_before_connect_is_answered_and_connect_still_works(live_hub):
    c = HubClient(live_hub.url)
    c.send_raw(json.dumps({"id": 1, "cmd": "connect"}))
    assert c.wait_reply(1)["error"]["code"] == "bad_request"
    assert c.call("connect", token=mint(uid()))["role"] == "customer"
