"""Push delivery: the outbox worker's rate to the Web Push fake, and offer commit to receipt.

    .venv/bin/python -m bench.bench_notify [--pushes 5000] [--rate 100] [--seconds 10]

Needs Postgres at 127.0.0.1:5432 (the `test` database, trust auth; BENCH_PG overrides): a fresh
database is created, migrated and dropped. The Web Push fake (tests/fakes/webpush.py) runs as its
own process, so its work (verifying the VAPID signature, decrypting every payload) does not share
this process's CPU; this process is one hub process's delivery worker (notify.worker.Worker, the
same code the hub runs), with its claim queries on worker threads.

1. throughput: `--pushes` offer pushes already in the outbox (100 users, one browser each); the
   worker sends them all; pushes/s = pushes / (first claim -> last outcome written). Target
   >= 1,000 pushes/s per process.
2. latency: offers committed at `--rate` per second for `--seconds` (each its own transaction:
   an `offer` appended to a provider's `user:` channel, the outbox row written by the hook), the
   worker woken by the commit as in a hub; latency = commit -> the fake's receipt (both clocks are
   this machine's). Target p99 <= 200 ms at 100 offers/s.
A report like bench_hub: it exits 0 when it runs to the end (read the PASS/FAIL lines), 1 when a
push went missing. Both rates are also given per CPU-second of this process, which moves much less
than the wall clock on a shared machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 1000.0
TARGET_P99_MS = 200.0


def _database() -> tuple[str, str]:
    import psycopg

    base = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432/test")
    name = f"bench_notify_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return base, base.rpartition("/")[0] + "/" + name


def _drop(base: str, url: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rpartition("/")[2]}" WITH (FORCE)')


def _stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/stats", timeout=30) as r:
        return dict(json.loads(r.read()))


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.webpush", "--subs", "100"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert fake.stdout is not None
    info = json.loads(fake.stdout.readline())
    pg_base, url = _database()
    os.environ.update({"DATABASE_URL": url, "HUB_ENV": "development", "DJANGO_SETTINGS_MODULE": "core.settings",
                       "WEBPUSH_ALLOW_LOOPBACK": "1", "LOG_LEVEL": "WARNING"})
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return asyncio.run(_run(args, info, fake.pid))
    finally:
        fake.terminate()
        fake.wait(10)
        from django.db import connections

        connections.close_all()
        _drop(pg_base, url)


async def _run(args: argparse.Namespace, info: dict[str, Any], fake_pid: int) -> int:
    from asgiref.sync import sync_to_async

    from hub import store
    from notify import actions, content
    from notify.models import Outbox
    from notify.worker import Worker, providers

    tenant = "bench"
    users = [f"p{i}" for i in range(len(info["subs"]))]

    def setup() -> None:
        for u, sub in zip(users, info["subs"], strict=True):
            actions.register(tenant, u, "web", subscription=sub)

    await sync_to_async(setup, thread_sensitive=False)()

    async def nobody(_users: list[str]) -> set[str]:
        return set()

    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)

    # 1. throughput -------------------------------------------------------------------------------
    def fill(n: int) -> None:
        now = time.time()
        for i in range(n):
            spec = content.Spec("offer", "New plumbing job near you", "Tap to see the offer",
                                {"booking": f"b{i}", "n": f"t{i}"}, f"offer:b{i}", now + 600, True)
            actions.enqueue(tenant, users[i % len(users)], spec, now)

    await sync_to_async(fill, thread_sensitive=False)(args.pushes)
    worker = Worker(providers(), foreground=nobody)
    before = _stats(info["base"])["received"]
    cpu0, fake0, t0 = time.process_time(), _cpu_s(fake_pid), time.perf_counter()
    task = asyncio.get_running_loop().create_task(worker.run())

    def pending() -> int:
        return Outbox.objects.filter(state="pending").count()

    while await sync_to_async(pending, thread_sensitive=False)():
        await asyncio.sleep(0.05)
    await worker.settle()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    fake_cpu = _cpu_s(fake_pid) - fake0
    got = _stats(info["base"])["received"] - before
    rate = got / elapsed
    print(f"throughput: {got} of {args.pushes} pushes received in {elapsed:.2f} s = {rate:,.0f} pushes/s "
          f"({got / cpu:,.0f} per CPU-second of this process) target >= {TARGET_RATE:,.0f}: "
          f"{'PASS' if rate >= TARGET_RATE else 'FAIL'}", flush=True)
    print(f"  CPU: this process {cpu:.2f} s ({cpu / got * 1000:.2f} ms per push), the fake {fake_cpu:.2f} s "
          f"({fake_cpu / got * 1000:.2f} ms per push: VAPID check and decryption)", flush=True)

    # 2. latency at a steady offer rate -----------------------------------------------------------
    loop = asyncio.get_running_loop()
    actions.on_wake(lambda: loop.call_soon_threadsafe(worker.wake.set))
    committed: dict[str, float] = {}
    total = int(args.rate * args.seconds)

    def offers() -> None:
        start = time.perf_counter()
        for i in range(total):
            due = start + i / args.rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            n = f"l{i}"
            exp = int((time.time() + 30) * 1000)
            with store.tenant_scope(tenant), store.atomic():
                store.append(f"user:{users[i % len(users)]}", {
                    "kind": "offer", "booking": n, "category": "plumbing", "expires_at_ms": exp})
            committed[n] = time.time()
            # The hook's data carries the booking; the fake indexes receipts by data.n.

    # The fake indexes receipts by data["n"]: tag the offer pushes with it.
    original = content.RULES["offer"]

    def tagged(user: str, d: dict[str, Any], now: float) -> Any:
        eff = original(user, d, now)
        if eff is not None and eff.push is not None:
            eff.push.data["n"] = d["booking"]
        return eff

    content.RULES["offer"] = tagged
    thread = threading.Thread(target=offers)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.05)
    deadline = time.time() + 10
    at: dict[str, float] = {}
    while time.time() < deadline:
        at = _stats(info["base"])["at"]
        if all(n in at for n in committed):
            break
        await asyncio.sleep(0.1)
    worker.stop = True
    worker.wake.set()
    await task
    lat = [(at[n] - t) * 1000 for n, t in committed.items() if n in at]
    missing = len(committed) - len(lat)
    p50, p99 = (_pct(lat, 0.5), _pct(lat, 0.99)) if lat else (float("nan"), float("nan"))
    ok = bool(lat) and p99 <= TARGET_P99_MS and missing == 0
    print(f"latency at {args.rate:.0f} offers/s for {args.seconds:.0f} s: {len(lat)} of {total} received, "
          f"commit -> receipt p50 {p50:.1f} ms p99 {p99:.1f} ms max {max(lat or [0]):.1f} ms "
          f"(mean {statistics.fmean(lat or [0]):.1f}) target p99 <= {TARGET_P99_MS:.0f} ms: "
          f"{'PASS' if ok else 'FAIL'}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}", flush=True)
    return 0 if missing == 0 and got == args.pushes else 1


if __name__ == "__main__":
    sys.exit(main())
