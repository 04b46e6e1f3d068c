"""Shared by the HTTP/2 providers' tests (FCM, APNs): a fresh fake for each test (from the module's
`server`), sends through a provider, and the throughput against a fake in a process of its own."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from notify.providers.base import Outcome, Provider, Push, Result, Target


@pytest.fixture()
def fake(server: Any) -> Any:
    """The test module's fake server (its `server` fixture), forgetting what earlier tests did."""
    server.reset()
    return server


def send(provider: Provider, *pairs: tuple[Target, Push]) -> list[Result]:
    """Each (target, push) in turn, then the provider closed."""
    async def run() -> list[Result]:
        try:
            return [await provider.send(t, p) for t, p in pairs]
        finally:
            await provider.aclose()
    return asyncio.run(run())


def print_throughput(name: str, fake: ModuleType, target: Callable[[], Target], push: Callable[[], Push],
                     sends: int = 2000, in_flight: int = 64) -> None:
    """Printed, not asserted (timing targets live in bench/): `sends` sends, at most `in_flight` at once,
    to `fake` spawned in a process of its own (as a benchmark starts it), so the CPU figure is the
    provider's alone. Asserted: every send went, over one connection."""
    spawned = fake.spawn()
    provider = fake.provider_for(spawned.env)

    async def run() -> tuple[float, float, set[Outcome]]:
        gate = asyncio.Semaphore(in_flight)

        async def one() -> Result:
            async with gate:
                return await provider.send(target(), push())
        try:
            await provider.send(target(), push())
            start, cpu = time.perf_counter(), time.process_time()
            results = await asyncio.gather(*[one() for _ in range(sends)])
            return (sends / (time.perf_counter() - start), (time.process_time() - cpu) / sends * 1e6,
                    {r.outcome for r in results})
        finally:
            await provider.aclose()
    try:
        rate, cpu_us, outcomes = asyncio.run(run())
        stats = spawned.stats()
    finally:
        spawned.stop()
    print(f"\n{name} provider -> fake (TLS, HTTP/2, fake in another process): {rate:.0f} sends/s, "
          f"{cpu_us:.0f} us CPU per send in the provider's process, {stats['connections']} connection(s)")
    assert outcomes == {Outcome.SENT} and stats["accepted"] == sends + 1 and stats["connections"] == 1
