"""hub.rpc: the domain pool (bounded, back-pressure, cancelled waiters never run) and database errors."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import orjson
import pytest
from django.db import OperationalError, connection, transaction
from django.test import override_settings

from core.errors import HubError
from hub import rpc, store
from hub.models import Publication
from hub.rpc import Caller, method
from rooms.models import Job, JobComment
from tests.support import HubClient, HubServer, mint, uid

attempts: dict[str, int] = {}
ran: list[str] = []
release = threading.Event()
started = threading.Event()


def collide(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    """Appends, then fails with a real deadlock SQLSTATE the first `fail` times."""
    key = params["key"]
    attempts[key] = attempts.get(key, 0) + 1
    with store.atomic():
        store.append(f"user:{key}", {"attempt": attempts[key]})
        if attempts[key] <= params["fail"]:
            with connection.cursor() as cursor:
                cursor.execute("DO $$ BEGIN RAISE EXCEPTION 'collided' USING ERRCODE = '40P01'; END $$")
    return {"attempts": attempts[key]}


def lost(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    raise OperationalError("server closed the connection unexpectedly")


def block(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    ran.append(params.get("tag", ""))
    started.set()
    release.wait(10)
    return {}


running: dict[str, int] = {}
peak: dict[str, int] = {}
finished: list[str] = []
count_lock = threading.Lock()


def keyed(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    key = params["key"]
    with count_lock:
        running[key] = running.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), running[key])
    time.sleep(0.1)
    with count_lock:
        running[key] -= 1
        finished.append(key)
    return {}


closed: set[str] = set()
close_now = threading.Event()


def closing(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    """Closes its key (as an accepted job closes its bids) once told to."""
    close_now.wait(5)
    closed.add(params["key"])
    with count_lock:
        finished.append(params["key"])
    return {}


batches: list[list[str]] = []


def batched(calls: list[tuple[Caller, dict[str, Any]]]) -> list[Any]:
    """One worker call for the queued calls of a key: a refusal refuses only its own call."""
    batches.append([p["tag"] for _c, p in calls])
    release.wait(10)
    return [HubError("bad_request", "no") if p["tag"] == "bad" else {"tag": p["tag"]} for _c, p in calls]


def refuse_closed(caller: Caller, params: dict[str, Any]) -> str:
    if params["key"] in closed:
        raise HubError("conflict", "closed")
    return str(params["key"])


@pytest.fixture(autouse=True)
def test_methods() -> Iterator[None]:
    """Methods registered for this module only (the registry is otherwise the documented API)."""
    names = {"tests.collide": collide, "tests.lost": lost, "tests.block": block, "tests.keyed": keyed,
             "tests.closing": closing}
    serials = {keyed: lambda _c, p: str(p["key"]), closing: refuse_closed}
    for name, fn in names.items():
        method(name, roles=("customer",), http=False, serial=serials.get(fn))(fn)
        rpc.REGISTRY[name] = fn.rpc_method  # type: ignore[attr-defined]
    names["tests.batched"] = block
    rpc.REGISTRY["tests.batched"] = rpc.Method("tests.batched", frozenset({"customer"}), {"type": "object"}, block,
                                               serial=refuse_closed, batch=batched)
    yield
    for name in names:
        rpc.REGISTRY.pop(name, None)


def caller() -> Caller:
    return Caller(uid(), "customer", "t1")


def stored(channel: str) -> list[Any]:
    return [orjson.loads(r.data) for r in Publication.objects.filter(channel=channel).order_by("offset")]


@pytest.fixture
def tiny_pool() -> Iterator[None]:
    release.clear()
    started.clear()
    ran.clear()
    with override_settings(HUB_DOMAIN_WORKERS=1, HUB_DOMAIN_WAIT_S=0.3, HUB_DOMAIN_QUEUE=10):
        rpc.reset_pool()
        yield
    release.set()
    rpc.reset_pool()


@pytest.mark.services
def test_deadlock_reruns_the_whole_action(caplog: pytest.LogCaptureFixture) -> None:
    key = uid()
    with caplog.at_level(logging.WARNING, logger="hub.rpc"):
        result = asyncio.run(rpc.call(caller(), "tests.collide", {"key": key, "fail": 2}))
    assert result == {"attempts": 3}
    # The failed attempts rolled back: only the third one's publication exists.
    assert stored(f"user:{key}") == [{"attempt": 3}]
    assert "SQLSTATE 40P01 on DO" in caplog.text


@pytest.mark.services
def test_deadlock_retries_are_bounded_then_busy() -> None:
    key = uid()
    with override_settings(HUB_DB_RETRIES=2), pytest.raises(HubError) as info:
        asyncio.run(rpc.call(caller(), "tests.collide", {"key": key, "fail": 100}))
    assert attempts[key] == 3
    assert info.value.code == "unavailable"
    assert info.value.retry_after_ms is not None  # contention, not a database outage
    assert "database" not in info.value.message
    assert stored(f"user:{key}") == []


def test_lost_connection_is_database_unavailable() -> None:
    with pytest.raises(HubError) as info:
        asyncio.run(rpc.call(caller(), "tests.lost", {}))
    assert info.value.code == "unavailable"
    assert info.value.message == "the database is unavailable; retry"


def test_saturated_pool_refuses_after_a_bounded_wait(tiny_pool: None) -> None:
    async def scenario() -> tuple[HubError, float]:
        first = asyncio.create_task(rpc.call(caller(), "tests.block", {"tag": "first"}))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        t0 = time.monotonic()
        try:
            await rpc.call(caller(), "tests.block", {"tag": "second"})
        except HubError as exc:
            refused, waited = exc, time.monotonic() - t0
        else:
            raise AssertionError("a call was admitted beyond the pool")
        release.set()
        await first
        return refused, waited

    exc, waited = asyncio.run(scenario())
    assert exc.code == "unavailable"
    assert exc.retry_after_ms is not None and exc.retry_after_ms > 0
    assert waited >= 0.25  # it waited for a worker before refusing
    assert ran == ["first"]


def test_full_queue_refuses_at_once(tiny_pool: None) -> None:
    async def scenario() -> HubError:
        with override_settings(HUB_DOMAIN_QUEUE=0, HUB_DOMAIN_WAIT_S=30):
            rpc.reset_pool()
            first = asyncio.create_task(rpc.call(caller(), "tests.block", {"tag": "first"}))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            try:
                await asyncio.wait_for(rpc.call(caller(), "tests.block", {"tag": "second"}), 5)
            except HubError as exc:
                release.set()
                await first
                return exc
        raise AssertionError("admitted")

    exc = asyncio.run(scenario())
    assert exc.code == "unavailable" and exc.retry_after_ms
    assert ran == ["first"]


def test_cancelled_waiter_never_runs(tiny_pool: None) -> None:
    async def scenario() -> None:
        with override_settings(HUB_DOMAIN_WAIT_S=30):
            rpc.reset_pool()
            first = asyncio.create_task(rpc.call(caller(), "tests.block", {"tag": "first"}))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
            queued = asyncio.create_task(rpc.call(caller(), "tests.block", {"tag": "gone"}))
            await asyncio.sleep(0.1)
            queued.cancel()  # what the socket does to its tasks when it closes
            release.set()
            await first
            after = await rpc.call(caller(), "tests.block", {"tag": "after"})  # the slot came back
            assert after == {}

    asyncio.run(scenario())
    assert ran == ["first", "after"]


# --- against a live hub ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def one_worker_hub() -> Iterator[HubServer]:
    server = HubServer(env={"HUB_DOMAIN_WORKERS": "1", "HUB_DOMAIN_WAIT_S": "0.5"})
    server.start()
    yield server
    server.stop()


def _job(owner: str, tenant: str) -> str:
    return Job.objects.create(tenant=tenant, owner=owner, owner_role="customer", title="t", category="c",
                              lat=51.5, lng=-0.1).id


@pytest.mark.services
def test_saturated_hub_answers_busy_and_the_socket_path_keeps_going(one_worker_hub: HubServer) -> None:
    tenant, owner, prov = uid("t"), uid("o"), uid("p")
    job = _job(owner, tenant)
    with HubClient(one_worker_hub.url, mint(owner, "customer", tenant)) as o, \
            HubClient(one_worker_hub.url, mint(prov, "provider", tenant)) as p:
        room = "chat:" + o.rpc("rooms.create", members=[uid()], kind="booking")["room"]
        o.call("subscribe", channel=room)
        with transaction.atomic():
            Job.objects.select_for_update().get(pk=job)  # the bid below waits on this row
            bid = p.send("rpc", method="jobs.bid", params={"job": job, "amount": 100, "currency": "GBP"})
            time.sleep(0.3)
            reply = o.request("rpc", method="jobs.get", params={"job": job})
            assert reply["ok"] is False
            assert reply["error"]["code"] == "unavailable"
            assert reply["error"]["retry_after_ms"] > 0
            # Publishes and history do not wait for domain workers.
            assert o.call("publish", channel=room, data={"text": "still here"}, timeout=2)["offset"] >= 1
            assert o.call("history", channel=room, limit=5, timeout=2)["pubs"]
        assert p.wait_reply(bid)["ok"] is True


@pytest.mark.services
def test_queued_call_of_a_closed_socket_is_not_run(one_worker_hub: HubServer) -> None:
    tenant, owner, prov = uid("t"), uid("o"), uid("p")
    job = _job(owner, tenant)
    with HubClient(one_worker_hub.url, mint(prov, "provider", tenant)) as p:
        with transaction.atomic():
            Job.objects.select_for_update().get(pk=job)
            bid = p.send("rpc", method="jobs.bid", params={"job": job, "amount": 100, "currency": "GBP"})
            time.sleep(0.2)
            o = HubClient(one_worker_hub.url, mint(owner, "customer", tenant))
            o.send("rpc", method="jobs.comment", params={"job": job, "text": "never"})
            time.sleep(0.1)
            o.close()
            time.sleep(0.2)
        assert p.wait_reply(bid)["ok"] is True
    time.sleep(0.5)
    assert not JobComment.objects.filter(job_id=job).exists()
    with HubClient(one_worker_hub.url, mint(owner, "customer", tenant)) as o:
        o.rpc("jobs.comment", job=job, text="now")  # the same call from an open socket runs
    assert list(JobComment.objects.filter(job_id=job).values_list("text", flat=True)) == ["now"]


def test_calls_with_one_key_queue_outside_the_pool() -> None:
    """Same-key calls (bids on one job) hold at most SERIAL_WIDTH workers; other calls still run."""
    peak.clear()
    finished.clear()

    async def scenario() -> None:
        with override_settings(HUB_DOMAIN_WORKERS=4, HUB_DOMAIN_WAIT_S=10):
            rpc.reset_pool()
            hot = [asyncio.create_task(rpc.call(caller(), "tests.keyed", {"key": "hot"})) for _ in range(6)]
            await asyncio.sleep(0.01)
            await rpc.call(caller(), "tests.keyed", {"key": "other"})
            await asyncio.gather(*hot)
        rpc.reset_pool()

    asyncio.run(scenario())
    assert peak["hot"] == rpc.SERIAL_WIDTH
    assert finished.index("other") <= 3  # it did not queue behind the hot key's calls
    assert finished.count("hot") == 6
    assert rpc._keys == {}  # queues are dropped when empty


def test_calls_queued_on_a_key_are_asked_again_after_their_wait() -> None:
    key = uid()

    async def scenario() -> list[Any]:
        with override_settings(HUB_DOMAIN_WORKERS=4, HUB_DOMAIN_WAIT_S=10):
            rpc.reset_pool()
            close_now.clear()
            calls = [asyncio.create_task(rpc.call(caller(), "tests.closing", {"key": key})) for _ in range(6)]
            await asyncio.sleep(0.1)  # every call asked, SERIAL_WIDTH of them running, the others waiting
            close_now.set()
            out = await asyncio.gather(*calls, return_exceptions=True)
        rpc.reset_pool()
        return out

    out = asyncio.run(scenario())
    # The first SERIAL_WIDTH ran (and closed the key); those that waited were refused on the loop.
    assert finished.count(key) == rpc.SERIAL_WIDTH
    refused = [r for r in out if isinstance(r, HubError)]
    assert len(refused) == 6 - rpc.SERIAL_WIDTH and {r.code for r in refused} == {"conflict"}
    assert rpc._keys == {}


@pytest.mark.parametrize("params", [{"members": ["a\x00b"], "kind": "booking"},
                                    {"members": ["bob"], "kind": "booking", "ref": "\x00"},
                                    {"members": ["bob"], "kind": "booking", "x\x00": 1}])
def test_nul_in_params_is_bad_request_before_the_method_runs(params: dict[str, Any]) -> None:
    # Postgres text cannot hold U+0000: the insert used to fail inside the method, answered `internal`.
    with pytest.raises(HubError) as info:
        rpc.check(Caller(uid(), "customer", "t1"), "rooms.create", params)
    assert info.value.code == "bad_request" and "NUL" in info.value.message


@pytest.fixture
def fresh_batches() -> None:
    batches.clear()
    release.clear()


def bid_like(key: str, tag: str) -> Coroutine[Any, Any, Any]:
    """A call of the batched test method on `key` (as bids queue on their job)."""
    return rpc.call(caller(), "tests.batched", {"key": key, "tag": tag})


@pytest.mark.usefixtures("fresh_batches")
def test_calls_queued_on_a_key_run_together_in_one_worker_call() -> None:
    """A method with a batch: the calls queued on a key behind a running one run together, each
    with its own answer; a queued call whose caller went away is left out."""
    key = uid()

    async def scenario() -> list[Any]:
        with override_settings(HUB_DOMAIN_WORKERS=1, HUB_DOMAIN_WAIT_S=10):
            rpc.reset_pool()
            first = asyncio.create_task(bid_like(key, "first"))
            await asyncio.sleep(0.05)  # "first" holds the only worker
            calls = [asyncio.create_task(bid_like(key, tag)) for tag in ("a", "bad", "gone", "b")]
            await asyncio.sleep(0.05)
            calls[2].cancel()  # its caller went away before its batch started
            release.set()
            out = await asyncio.gather(first, *calls, return_exceptions=True)
        rpc.reset_pool()
        return out

    first, a, bad, gone, b = asyncio.run(scenario())
    assert batches == [["first"], ["a", "bad", "b"]]
    assert (first, a, b) == ({"tag": "first"}, {"tag": "a"}, {"tag": "b"})
    assert isinstance(bad, HubError) and bad.code == "bad_request"
    assert isinstance(gone, asyncio.CancelledError)
    assert rpc._batches == {}


@pytest.mark.usefixtures("fresh_batches")
def test_a_call_queued_on_a_key_waits_a_bounded_time_and_is_asked_again_at_its_turn() -> None:
    key, other = uid(), uid()

    async def scenario() -> list[Any]:
        with override_settings(HUB_DOMAIN_WORKERS=1, HUB_DOMAIN_WAIT_S=0.3):
            rpc.reset_pool()
            first = asyncio.create_task(bid_like(key, "first"))
            await asyncio.sleep(0.05)
            # "x" and "y" wait for the running batch past their bound.
            waited = await asyncio.gather(*(bid_like(key, t) for t in ("x", "y")), return_exceptions=True)
            release.set()
            await first
        with override_settings(HUB_DOMAIN_WORKERS=1, HUB_DOMAIN_WAIT_S=10):
            rpc.reset_pool()
            release.clear()
            second = asyncio.create_task(bid_like(other, "second"))
            await asyncio.sleep(0.05)
            queued = [asyncio.create_task(bid_like(other, t)) for t in ("p", "q")]
            await asyncio.sleep(0.05)
            closed.add(other)  # the key closed while they waited: refused at their turn, never run
            release.set()
            answers = await asyncio.gather(second, *queued, return_exceptions=True)
        rpc.reset_pool()
        return [*waited, *answers]

    x, y, second, p, q = asyncio.run(scenario())
    assert [getattr(r, "code", r) for r in (x, y)] == ["unavailable", "unavailable"]  # never ran
    assert second == {"tag": "second"}
    assert [getattr(r, "code", r) for r in (p, q)] == ["conflict", "conflict"]
    assert batches == [["first"], ["second"]]
    assert rpc._batches == {}


@pytest.mark.usefixtures("fresh_batches")
def test_a_key_runs_one_batch_at_a_time_and_a_second_only_for_a_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """One batch of a key at a time leaves the other workers to other calls; a second starts once
    more calls wait than one batch takes."""
    key = uid()
    monkeypatch.setattr(rpc, "BATCH_MAX", 2)

    async def scenario() -> tuple[list[list[str]], list[list[str]], list[Any]]:
        with override_settings(HUB_DOMAIN_WORKERS=3, HUB_DOMAIN_WAIT_S=10):
            rpc.reset_pool()
            calls = [asyncio.create_task(bid_like(key, "first"))]
            await asyncio.sleep(0.05)
            calls += [asyncio.create_task(bid_like(key, t)) for t in ("a", "b")]
            await asyncio.sleep(0.05)
            one = [list(b) for b in batches]  # two waiting, no more than a batch: still one running
            calls.append(asyncio.create_task(bid_like(key, "c")))
            await asyncio.sleep(0.05)
            two = [list(b) for b in batches]  # three waiting: a second batch took two of them
            release.set()
            out = await asyncio.gather(*calls)
        rpc.reset_pool()
        return one, two, out

    one, two, out = asyncio.run(scenario())
    assert one == [["first"]]
    assert two == [["first"], ["a", "b"]]
    assert [r["tag"] for r in out] == ["first", "a", "b", "c"]
    assert batches == [["first"], ["a", "b"], ["c"]]
    assert rpc._batches == {}
