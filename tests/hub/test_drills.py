"""Drills with real processes: two hubs on one Redis and one Postgres, kill -9, Redis restart,
Postgres stopped, slow consumer, SIGTERM drain. Stopped services are the test's own instances."""
import signal
import threading
import time

import pytest
from websockets.sync.client import connect

from hub.channels import qualify
from tests.support import (
    HubClient,
    HubServer,
    ReplyError,
    ThrowawayPostgres,
    ThrowawayRedis,
    migrate,
    mint,
    uid,
)

services = pytest.mark.services
# The embedded run (no Redis) deselects these with -m "not services"; with services they must pass.
needs_redis = pytest.mark.services
FAST = {"HUB_COMMANDS_PER_S": "100000", "HUB_COMMAND_BURST": "100000"}


def room(client: HubClient, *members: str) -> str:
    return "chat:" + client.rpc("rooms.create", members=list(members), kind="booking")["room"]


def collect(client: HubClient, channel: str, want: int, timeout: float = 20) -> list[dict]:
    got: list[dict] = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        try:
            got.append(client.next_push("pub", channel=channel, timeout=deadline - time.time()))
        except TimeoutError:
            break
    return got


@services
@needs_redis
def test_publish_on_one_process_receive_on_another():
    live_hub, other = HubServer(env=FAST), HubServer(env=FAST)
    live_hub.start()
    other.start()
    try:
        alice, bob = uid("a"), uid("b")
        a = HubClient(live_hub.url, mint(alice))
        b = HubClient(other.url, mint(bob), binary=True)
        ch = room(a, bob)
        b.call("subscribe", channel=ch)
        a.call("subscribe", channel=ch)
        offsets = [a.call("publish", channel=ch, data={"n": i})["offset"] for i in range(50)]
        got = collect(b, ch, 50)
        assert [p["offset"] for p in got] == offsets == list(range(1, 51))
        # both processes publishing to one channel at once: distinct, gap-free offsets, in order everywhere
        c = HubClient(other.url, mint(bob))

        def burst(client: HubClient, tag: str) -> None:
            ids = [client.send("publish", channel=ch, data={"tag": tag, "i": i}) for i in range(100)]
            for i in ids:
                assert client.wait_reply(i)["ok"]

        threads = [threading.Thread(target=burst, args=(HubClient(live_hub.url, mint(alice)), "A")),
                   threading.Thread(target=burst, args=(c, "B"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        on_b = [p["offset"] for p in collect(b, ch, 200)]
        on_a = [p["offset"] for p in collect(a, ch, 250)]
        assert on_b == list(range(51, 251))
        assert on_a == list(range(1, 251))
    finally:
        other.stop()
        live_hub.stop()


@services
@needs_redis
def test_kill_9_one_process_clients_recover_on_the_survivor():
    env = {**FAST}
    a_srv, b_srv = HubServer(env=env), HubServer(env=env)
    a_srv.start()
    b_srv.start()
    try:
        owner = uid("o")
        setup = HubClient(b_srv.url, mint(owner))
        members = [uid("m") for _ in range(4)]
        ch = room(setup, *members)
        subs = {}
        for i, m in enumerate(members):
            srv = a_srv if i % 2 == 0 else b_srv
            c = HubClient(srv.url, mint(m))
            sub = c.call("subscribe", channel=ch)
            subs[m] = [c, sub["epoch"], [], srv]
        acked: list[int] = []
        stop = threading.Event()

        def publisher(srv: HubServer) -> None:
            while not stop.is_set():
                try:
                    p = HubClient(srv.url, mint(owner))
                    while not stop.is_set():
                        acked.append(p.call("publish", channel=ch, data={"t": time.time()})["offset"])
                except Exception:
                    srv = b_srv  # reconnect to the survivor
                    time.sleep(0.05)

        pubs = [threading.Thread(target=publisher, args=(s,)) for s in (a_srv, b_srv)]
        for t in pubs:
            t.start()
        time.sleep(1.0)
        a_srv.kill()
        time.sleep(1.0)
        stop.set()
        for t in pubs:
            t.join(10)
        assert len(acked) > 20
        top = max(acked)
        for m, (c, epoch, _got, srv) in subs.items():
            received = [p["offset"] for p in list(c.pushes.queue) if p.get("push") == "pub"]
            if srv is a_srv or c.closed is not None:
                last = received[-1] if received else 0
                c2 = HubClient(b_srv.url, mint(m))
                rec = c2.call("subscribe", channel=ch, since={"offset": last, "epoch": epoch})
                assert rec["recovered"] is True
                received += [p["offset"] for p in rec["pubs"]]
            else:
                received = [p["offset"] for p in collect(c, ch, top, timeout=10)]
            assert received[: top] == list(range(1, len(received[: top]) + 1))
            assert set(acked) <= set(received), f"{m} missed acknowledged publications"
            assert len(received) == len(set(received))
    finally:
        a_srv.stop()
        b_srv.stop()


@services
def test_redis_restart_loses_no_acknowledged_publication():
    redis = ThrowawayRedis()
    redis.start()
    env = {**FAST, "REDIS_URL": redis.url}
    a_srv, b_srv = HubServer(env=env), HubServer(env=env)
    a_srv.start()
    b_srv.start()
    try:
        alice, bob = uid("a"), uid("b")
        a = HubClient(a_srv.url, mint(alice))
        b = HubClient(b_srv.url, mint(bob))
        ch = room(a, bob)
        b.call("subscribe", channel=ch)
        acked = [a.call("publish", channel=ch, data={"i": i})["offset"] for i in range(20)]
        redis.stop()
        acked += [a.call("publish", channel=ch, data={"i": i})["offset"] for i in range(20, 40)]
        redis.start()
        time.sleep(1.5)
        acked += [a.call("publish", channel=ch, data={"i": i})["offset"] for i in range(40, 60)]
        got = [p["offset"] for p in collect(b, ch, 60, timeout=20)]
        assert got == acked == list(range(1, 61))
    finally:
        a_srv.stop()
        b_srv.stop()
        redis.stop()


@services
def test_postgres_stopped_gives_unavailable_then_recovers():
    pg = ThrowawayPostgres()
    pg.init()
    pg.start()
    env = {**FAST, "DATABASE_URL": pg.url, "DB_CONNECT_TIMEOUT": "1"}
    env.pop("REDIS_URL", None)
    migrate(env)
    srv = HubServer(env={**env, "REDIS_URL": ""})
    srv.start()
    try:
        alice = uid("a")
        a = HubClient(srv.url, mint(alice))
        ch = room(a, uid("b"))
        assert a.call("publish", channel=ch, data={"i": 1})["offset"] == 1
        pg.stop()
        with pytest.raises(ReplyError) as info:
            a.call("publish", channel=ch, data={"i": 2}, timeout=15)
        assert info.value.code == "unavailable"
        pg.start()
        deadline = time.time() + 20
        while True:
            try:
                assert a.call("publish", channel=ch, data={"i": 3})["offset"] == 2
                break
            except ReplyError as exc:
                assert exc.code == "unavailable"
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        hist = None
        for _ in range(20):  # worker threads drop their dead connections one failure at a time
            reply = a.request("history", channel=ch)
            if reply["ok"]:
                hist = reply["result"]
                break
            assert reply["error"]["code"] == "unavailable"
        assert hist is not None
        assert [p["data"]["i"] for p in hist["pubs"]] == [1, 3]
    finally:
        srv.stop()
        pg.destroy()


def test_slow_consumer_is_cut_off_and_fast_one_is_not():
    srv = HubServer(env={**FAST, "HUB_MAX_QUEUE_BYTES": str(1024 * 1024)})
    srv.start()
    try:
        owner, slow_user, fast_user = uid("o"), uid("s"), uid("f")
        pub = HubClient(srv.url, mint(owner))
        ch = room(pub, slow_user, fast_user)
        fast = HubClient(srv.url, mint(fast_user))
        fast.call("subscribe", channel=ch)
        # The slow consumer: subscribes, then never reads (the client library stops reading at 16 frames).
        slow = connect(srv.url, max_queue=4, max_size=None)
        import json

        slow.send(json.dumps({"id": 1, "cmd": "connect", "token": mint(slow_user)}))
        slow.recv(5)
        slow.send(json.dumps({"id": 2, "cmd": "subscribe", "channel": ch}))
        slow.recv(5)
        blob = "x" * 60000
        total = 400  # ~24 MB: more than the kernel buffers on both sides plus the 1 MiB queue
        for i in range(total):  # paced by acks, so only the consumer that stopped reading falls behind
            pub.call("publish", channel=ch, data={"i": i, "blob": blob}, timeout=30)
        got = collect(fast, ch, total, timeout=60)
        assert [p["data"]["i"] for p in got] == list(range(total))
        received = 0
        with pytest.raises(Exception):  # noqa: B017 - closed by the server, one way or another
            while True:
                slow.recv(10)
                received += 1
        assert received < total
    finally:
        srv.stop()


def test_sigterm_drains_with_1012():
    srv = HubServer()
    srv.start()
    c = HubClient(srv.url, mint(uid()))
    assert srv.stop(signal.SIGTERM) == 0
    assert c.wait_closed()[0] == 1012


@services
@needs_redis
def test_presence_across_processes_and_crashed_members_disappear():
    env = {**FAST, "HUB_PRESENCE_TTL_S": "3"}
    a_srv, b_srv = HubServer(env=env), HubServer(env=env)
    a_srv.start()
    b_srv.start()
    try:
        alice, bob = uid("a"), uid("b")
        a = HubClient(a_srv.url, mint(alice))
        ch = room(a, bob)
        a.call("subscribe", channel=ch)
        b = HubClient(b_srv.url, mint(bob))
        b.call("subscribe", channel=ch)
        assert a.next_push("join", channel=ch)["user"] == bob  # across processes
        users = {m["user"] for m in a.call("presence", channel=ch)["members"]}
        assert users == {alice, bob}
        b_srv.kill()
        assert a.next_push("leave", channel=ch, timeout=15)["user"] == bob
        assert {m["user"] for m in a.call("presence", channel=ch)["members"]} == {alice}
    finally:
        a_srv.stop()
        b_srv.stop()


def _commit_unheard(channel: str, n: int) -> tuple[int, str]:
    """n publications committed the way another process's group commit does, but with no wake-up
    through Redis: as a hub sees them while that wake-up is still on its way."""
    import json

    from django.db import connection, transaction

    from hub import store

    with transaction.atomic(), connection.cursor() as cursor:
        top, epoch = store.assign_offsets(cursor, {channel: n})[channel]
        store.insert_rows(cursor, [(channel, off, store.now_ms(), None, json.dumps({"n": off}))
                                   for off in range(top - n + 1, top + 1)])
    return top, epoch


@services
def test_recovery_on_a_process_that_has_not_heard_of_the_newest_offsets_yet():
    # A client saw offset n through one process, then (rolled, killed) resubscribes on another whose
    # wake-up for n has not arrived: it is recovered from the database, not refused.
    hub = HubServer(env=FAST)
    hub.start()
    try:
        alice, bob = uid("a"), uid("b")
        a = HubClient(hub.url, mint(alice))
        ch = room(a, bob)
        a.call("subscribe", channel=ch)
        a.call("publish", channel=ch, data={"n": 0})
        assert [p["offset"] for p in collect(a, ch, 1)] == [1]
        top, epoch = _commit_unheard(qualify("t1", ch), 2)  # streams are stored per tenant (mint's default)
        b = HubClient(hub.url, mint(bob))
        res = b.call("subscribe", channel=ch, since={"offset": top, "epoch": epoch})
        assert res["recovered"] is True and res["offset"] == top and res["pubs"] == []
        # The process caught up on the way: its other subscriber gets them too, once, in order.
        assert [p["offset"] for p in collect(a, ch, 2)] == [top - 1, top]
        b.call("publish", channel=ch, data={"n": "next"})
        assert [p["offset"] for p in collect(a, ch, 1)] == [top + 1]
        # An offset ahead of the channel itself is still refused.
        c = HubClient(hub.url, mint(bob))
        assert c.call("subscribe", channel=ch, since={"offset": top + 5, "epoch": epoch})["recovered"] is False
        for client in (a, b, c):
            client.close()
    finally:
        hub.stop()
