"""hub.store's domain path: appends inside store.atomic() get gap-free offsets at commit."""
from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import pytest
from django.db import connection, transaction

from hub import store
from hub.models import Publication
from hub.pubs import Pub
from tests.support import uid


def stored(channel: str) -> list[tuple[int, Any]]:
    rows = Publication.objects.filter(channel=channel).order_by("offset")
    return [(r.offset, orjson.loads(r.data)) for r in rows]


@pytest.fixture
def notified() -> Any:
    seen: list[Pub] = []

    def hook(pubs: list[Pub]) -> None:
        seen.extend(pubs)

    store.on_domain_commit(hook)
    yield seen
    store._after_commit_hooks.remove(hook)


@pytest.mark.services
def test_appends_in_opposite_orders_both_commit() -> None:
    """Two transactions appending to the same two channels in opposite orders: with offsets taken at
    append time each held one row and waited for the other's (a deadlock; one failed)."""
    a, b = f"user:{uid()}", f"user:{uid()}"
    barrier = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []
    pubs: dict[str, list[Pub]] = {}

    def worker(name: str, first: str, second: str) -> None:
        try:
            with store.atomic():
                p1 = store.append(first, {"by": name, "n": 1})
                barrier.wait()  # both transactions have appended once
                time.sleep(0.2)
                p2 = store.append(second, {"by": name, "n": 2})
            pubs[name] = [p1, p2]
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=("x", a, b)), threading.Thread(target=worker, args=("y", b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    for channel in (a, b):
        assert [off for off, _ in stored(channel)] == [1, 2]
    # The returned pubs carry the offsets they were stored under.
    for name, (p1, p2) in pubs.items():
        for p in (p1, p2):
            assert (p.offset, {"by": name, "n": p.data["n"]}) in stored(p.channel)


def test_offsets_assigned_at_commit_in_append_order(notified: list[Pub]) -> None:
    a, b = f"job:{uid()}", f"user:{uid()}"
    with store.atomic():
        p1 = store.append(b, {"n": 1})
        p2 = store.append(a, {"n": 2})
        p3 = store.append(b, {"n": 3}, sender="s")
        assert notified == []  # nothing is delivered before commit
    assert (p1.offset, p2.offset, p3.offset) == (1, 1, 2)
    assert p1.epoch and p1.epoch == p3.epoch
    assert stored(b) == [(1, {"n": 1}), (2, {"n": 3})]
    assert stored(a) == [(1, {"n": 2})]
    assert [(p.channel, p.offset) for p in notified] == [(b, 1), (a, 1), (b, 2)]


def test_rolled_back_block_publishes_nothing(notified: list[Pub]) -> None:
    channel = f"user:{uid()}"
    with pytest.raises(RuntimeError), store.atomic():
        store.append(channel, {"n": 1})
        raise RuntimeError("refused")
    assert stored(channel) == []
    assert notified == []
    with store.atomic():
        p = store.append(channel, {"n": 2})
    assert p.offset == 1  # no gap left by the rolled-back block


def test_append_in_rolled_back_savepoint_is_dropped(notified: list[Pub]) -> None:
    channel = f"user:{uid()}"
    with store.atomic():
        store.append(channel, {"n": 1})
        try:
            with transaction.atomic():
                store.append(channel, {"n": 2})
                raise RuntimeError("inner refusal")
        except RuntimeError:
            pass
        with store.atomic():  # nested: a savepoint; the outer block still assigns
            store.append(channel, {"n": 3})
    assert stored(channel) == [(1, {"n": 1}), (2, {"n": 3})]
    assert [p.data["n"] for p in notified if p.channel == channel] == [1, 3]


def test_inside_a_plain_transaction_append_assigns_at_once() -> None:
    channel = f"user:{uid()}"
    with transaction.atomic(), store.atomic():
        p = store.append(channel, {"n": 1})
        assert p.offset == 1  # an outer plain block: nobody would flush, so no deferral
    assert stored(channel) == [(1, {"n": 1})]


def test_sqlstate_reads_the_wrapped_driver_error() -> None:
    class Driver(Exception):
        sqlstate = "40P01"

    outer = RuntimeError("wrapped")
    outer.__cause__ = Driver()
    assert store.sqlstate(outer) == "40P01"
    assert store.sqlstate(RuntimeError("plain")) is None


def _fill(channel: str, count: int, data: object) -> None:
    for _ in range(count):
        with transaction.atomic():
            store.append(channel, data)


def test_read_bounded_stops_at_the_budget() -> None:
    channel = f"chat:{uid('r')}"
    _fill(channel, 10, {"text": "y" * 10_000})
    _top, epoch = store.head(channel)
    pubs, cut = store.read_bounded(channel, epoch, 0, None, 100, 35_000)
    assert cut and [p.offset for p in pubs] == [1, 2, 3]
    newest, cut = store.read_bounded(channel, epoch, 0, None, 100, 35_000, newest=True)
    assert cut and [p.offset for p in newest] == [8, 9, 10]
    everything, cut = store.read_bounded(channel, epoch, 0, None, 100, 10**9)
    assert not cut and len(everything) == 10
    five, cut = store.read_bounded(channel, epoch, 0, None, 5, 10**9)
    assert not cut and [p.offset for p in five] == [1, 2, 3, 4, 5]
