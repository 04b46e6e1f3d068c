"""Memory bombs through recovery and history on a live hub: replies stay under the reply limit,
the process stays within a ceiling, and well-behaved readers are never cut."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import transaction

from hub import store
from tests.support import HubClient, HubServer, mint, running_hubs, uid

BIG = "x" * 60_000  # one publication's data: ~60 KiB, under the 64 KiB frame limit


def fill(channel: str, count: int, data: object = None, tenant: str = "t1") -> None:
    """Append on the protocol channel `channel` of `tenant` (tests.support's tokens are of t1)."""
    for start in range(0, count, 500):
        with transaction.atomic():
            for _ in range(min(500, count - start)):
                store.append(f"{tenant}/{channel}", {"text": BIG} if data is None else data)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")



@pytest.fixture(scope="module")
def bounded_hub() -> Iterator[HubServer]:
    with running_hubs() as (server,):  # its own process: the drill measures this process's memory
        yield server


def test_recovery_and_history_replies_stay_under_the_reply_limit(bounded_hub: HubServer) -> None:
    owner, peer = uid(), uid()
    with HubClient(bounded_hub.url, mint(owner)) as c:
        room = c.rpc("rooms.create", members=[peer], kind="booking")["room"]
        channel = f"chat:{room}"
        fill(channel, 40)  # 2.4 MB: five times what one reply may carry
        res = c.call("subscribe", channel=channel, since={"offset": 0, "epoch": c.call(
            "history", channel=channel, limit=1)["epoch"]})
        assert res["recovered"] is False and res["pubs"] == [] and res["offset"] == 40
        page = c.call("history", channel=channel, limit=100)
        assert page.get("truncated") is True and 0 < len(page["pubs"]) < 40
        assert page["pubs"][-1]["offset"] == 40  # the newest that fit, in offset order
        # Paging backwards reaches the start without any reply over the limit.
        seen = {p["offset"] for p in page["pubs"]}
        while min(seen) > 1:
            older = c.call("history", channel=channel, limit=100, before=min(seen))
            seen |= {p["offset"] for p in older["pubs"]}
        assert seen == set(range(1, 41))


def test_many_readers_recovering_a_large_room_keep_memory_flat(bounded_hub: HubServer) -> None:
    """200 sockets each recovering 5,000 publications of 60 KiB (300 MB) while a member publishes.
    Unbounded, each reply alone would be 300 MB; here the hub's RSS grows less than 150 MiB (the
    documented ceiling for this drill), no reader is cut, and every acknowledged publication
    reaches every reader in order."""
    members = [uid() for _ in range(26)]  # the owner publishes; 25 others read with 8 sockets each
    with HubClient(bounded_hub.url, mint(members[0])) as owner:
        room = owner.rpc("rooms.create", members=members[1:], kind="booking")["room"]
        channel = f"chat:{room}"
        fill(channel, 5000)
        epoch = owner.call("history", channel=channel, limit=1)["epoch"]
        before = rss_kib(bounded_hub.proc.pid)  # type: ignore[union-attr]
        readers = [HubClient(bounded_hub.url, mint(m)) for m in members[1:] for _ in range(8)]
        acked: list[int] = []
        stop = threading.Event()

        def publish() -> None:
            while not stop.is_set():
                acked.append(owner.call("publish", channel=channel, data={"n": len(acked)})["offset"])
                time.sleep(0.02)

        writer = threading.Thread(target=publish, daemon=True)
        writer.start()
        try:
            ids = [r.send("subscribe", channel=channel, since={"offset": 0, "epoch": epoch}) for r in readers]
            replies = [r.wait_reply(i, timeout=30) for r, i in zip(readers, ids, strict=True)]
            assert all(rep["ok"] and rep["result"]["recovered"] is False for rep in replies)
            time.sleep(1)
        finally:
            stop.set()
            writer.join()
        grown_mib = (rss_kib(bounded_hub.proc.pid) - before) / 1024  # type: ignore[union-attr]
        print(f"memory drill: {len(readers)} readers x 5,000 publications of 60 KiB; hub RSS grew {grown_mib:.1f} MiB")
        assert grown_mib < 150, f"hub grew {grown_mib:.0f} MiB"
        for reader, rep in zip(readers, replies, strict=True):
            start = rep["result"]["offset"]
            want = [o for o in acked if o > start]
            got = [reader.next_push("pub", channel=channel, timeout=10)["offset"] for _ in want]
            assert got == want
            assert reader.closed is None
            reader.close()
