"""hub.store: the domain path (appends inside store.atomic() get gap-free offsets at commit), reads,
and the group-commit writer (batches, completions, idempotency keys)."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import orjson
import pytest
from django.db import IntegrityError, connection, transaction

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


def test_one_commit_stores_any_text_on_many_channels_exactly() -> None:
    """The commit sends channels and rows as JSON inside one statement: quotes, backslashes, escapes,
    non-ASCII and missing senders come back as they went in, on each channel in order."""
    channels = [f"user:{uid()}" for _ in range(40)]
    odd = ["it's", 'say "hi"', "back\\slash \\u0000", "\u0000 \n \t", "naïve café 🙂", "'); DROP TABLE x; --", ""]
    with store.atomic():
        pubs = [store.append(channels[i % 40], {"i": i, "t": odd[i % len(odd)]}, sender=None if i % 2 else f"s{i}")
                for i in range(100)]
    for channel in channels:
        mine = [(p.offset, p.data) for p in pubs if p.channel == channel]
        assert stored(channel) == mine and [off for off, _ in mine] == list(range(1, len(mine) + 1))
    senders = dict(Publication.objects.filter(channel__in=channels).values_list("data", "sender"))
    assert sorted(senders.values(), key=str) == sorted((None if i % 2 else f"s{i}" for i in range(100)), key=str)


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


def test_a_block_marked_for_rollback_stores_and_publishes_nothing(notified: list[Pub]) -> None:
    channel = f"user:{uid()}"
    with store.atomic():
        store.append(channel, {"n": 1})
        transaction.set_rollback(True)
    assert stored(channel) == [] and notified == []
    assert not connection.in_atomic_block and connection.get_autocommit()


@pytest.mark.services
def test_a_commit_that_fails_undoes_the_block_and_publishes_nothing(notified: list[Pub]) -> None:
    """On Postgres the flush commits in the same round trip: a deferred foreign key that fails at
    COMMIT fails the block like Django's own commit would (the data and the publications go)."""
    from rooms.models import Bid

    channel = f"job:{uid()}"
    with pytest.raises(IntegrityError), store.atomic():
        Bid.objects.create(job_id=uid("nojob"), provider="p", provider_role="provider", amount=1,
                           currency="GBP")  # checked at COMMIT (deferred)
        store.append(channel, {"n": 1})
    assert stored(channel) == [] and notified == []
    assert not connection.in_atomic_block and connection.get_autocommit()
    with store.atomic():  # the connection is usable, and the channel has no gap
        assert store.append(channel, {"n": 2})
    assert stored(channel) == [(1, {"n": 2})]
    assert [p.offset for p in notified] == [1]


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


# --- the group-commit writer ---------------------------------------------------------------------

class Completions:
    """One completion (hub.subscriber.Completion) for every publish, recording (tag, result, error)
    in the order called."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, tuple[Pub, bool] | None, Any]] = []

    def __call__(self, tag: int, result: tuple[Pub, bool] | None, error: Any, t0: float) -> None:
        self.calls.append((tag, result, error))


def write(items: list[tuple[str, Any, str | None, str | None]], max_pending: int | None = None
          ) -> tuple[Completions, list[list[store.Pending]]]:
    """Submit (channel, data, sender, key) items in one loop turn; wait for every completion."""
    done = Completions()
    batches: list[list[store.Pending]] = []

    async def go() -> None:
        writer = store.Writer(asyncio.get_running_loop(), batches.append)
        if max_pending is not None:
            writer.max_pending = max_pending
        try:
            for i, (channel, data, sender, key) in enumerate(items):
                writer.submit(channel, data, orjson.dumps(data).decode(), sender, key, done, i)
            await asyncio.wait_for(writer.idle.wait(), 10)
        finally:
            writer.stop()

    asyncio.run(go())
    return done, batches


def test_the_writer_commits_in_batches_and_completes_each_publish_in_order() -> None:
    a, b = f"t1/chat:{uid('r')}", f"t1/chat:{uid('r')}"
    items = [(a if i % 3 else b, {"n": i}, "alice", None) for i in range(30)]
    done, batches = write(items)
    assert [tag for tag, _r, _e in done.calls] == list(range(30))
    assert all(error is None for _n, _r, error in done.calls)
    assert len(batches) < 30 and sum(len(b) for b in batches) == 30  # grouped: fewer commits than publishes
    offsets = [result[0].offset for _n, result, _e in done.calls if result is not None]
    assert [o for (ch, *_rest), o in zip(items, offsets, strict=True) if ch == a] == list(range(1, 21))
    assert [o for (ch, *_rest), o in zip(items, offsets, strict=True) if ch == b] == list(range(1, 11))
    assert stored(b)[:2] == [(1, {"n": 0}), (2, {"n": 3})]
    assert store.committed([p for batch in batches for p in batch])[0].channel in (a, b)


def test_idempotency_keys_belong_to_their_sender() -> None:
    name = f"t1/chat:{uid('r')}"
    done, _b = write([(name, {"n": 1}, "alice", "k"), (name, {"n": 1}, "alice", "k"), (name, {"n": 2}, "bob", "k")])
    (_n1, first, _e1), (_n2, again, _e2), (_n3, bobs, _e3) = done.calls
    assert first is not None and again is not None and bobs is not None
    assert (first[1], again[1], bobs[1]) == (False, True, False)  # the same key twice in one batch
    assert again[0].offset == first[0].offset and bobs[0].offset == first[0].offset + 1
    later, _b = write([(name, {"n": 1}, "alice", "k")])  # a later batch: answered from the key's row
    (_n, result, _e), = later.calls
    assert result is not None and result[1] is True and result[0].offset == first[0].offset
    assert [off for off, _d in stored(name)] == [1, 2]


def test_a_writer_behind_on_commits_refuses_at_once() -> None:
    done, batches = write([(f"t1/chat:{uid('r')}", {"n": 1}, "alice", None)], max_pending=0)
    (_n, result, error), = done.calls
    assert result is None and error.code == "unavailable" and error.retry_after_ms == store.PENDING_RETRY_MS
    assert batches == []
