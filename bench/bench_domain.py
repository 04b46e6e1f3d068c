"""Domain calls over the socket against the same actions called directly (the floor).

    .venv/bin/python -m bench.bench_domain [--quick] [--callers N] [--seconds S] [--only a,b]

Starts a fresh Postgres database (created through the `test` database, migrated, dropped at the
end) and one hub process (`manage.py serve`, DATABASE_URL=postgres, REDIS_URL set). Then, for
each action in turn: `match.find`, `jobs.create` (each job notifies up to 50 matched providers),
`jobs.bid` (on those jobs, spread: consecutive bids on different jobs), `jobs.bid:burst` (the same
method, every provider bidding on one job before the next job: the burst a posted job meets, which
the hub runs in batches and the floor one transaction per bid), `bookings.create` (offers to the 3
nearest providers), `offers.accept` (one offered provider per booking), `calls.start` (rings the
room's other member):

- floor: the registered method function called directly in this process on HUB_DOMAIN_WORKERS
  threads (ORM and database alone, no socket, no pool, no retries);
- hub: the same call as `rpc` over WebSockets, CALLERS (50) in flight at once, each call
  sent by the socket of the user it acts for.

Each phase runs ITEMS calls or SECONDS, whichever ends first. Reported: calls/s, p50/p99 ms,
errors by code; target: the hub reaches >= 70 % of the floor's calls/s for every action. Exit
status 0 whatever the outcome (a report, not a gate).

Environment: BENCH_PG (default postgres://postgres@127.0.0.1:5432), BENCH_REDIS (default
redis://127.0.0.1:6379/13, flushed).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.bench_hub import free_port, log

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432").rstrip("/")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/13")
TENANT = "bench"
CATEGORY = "plumbing"
BOX = (51.49, -0.15, 51.53, -0.08)  # central London
TARGET_RATIO = 0.70
ACTIONS = ("match.find", "jobs.create", "jobs.bid", "jobs.bid:burst", "bookings.create", "offers.accept",
           "calls.start")

Item = tuple[str, str, dict[str, Any]]  # (user, role, params)


def point(rng: random.Random) -> tuple[float, float]:
    return rng.uniform(BOX[0], BOX[2]), rng.uniform(BOX[1], BOX[3])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(lat_ms: list[float], errors: Counter[str], elapsed: float) -> dict[str, Any]:
    ok = len(lat_ms) - sum(errors.values())
    return {"calls": len(lat_ms), "ok": ok, "errors": dict(errors), "elapsed_s": elapsed,
            "per_s": ok / elapsed if elapsed > 0 else 0.0, "p50_ms": pct(lat_ms, 50), "p99_ms": pct(lat_ms, 99)}


# --- the floor: direct calls in this process --------------------------------------------------------

def run_floor(action: str, items: list[Item], threads: int, seconds: float) -> tuple[dict[str, Any], list[Any]]:
    from django.db import connection

    from core.errors import HubError
    from hub.rpc import REGISTRY, Caller

    method = REGISTRY[action.split(":")[0]]
    fn = method.fn
    is_async = method.is_async  # async methods (match.find) run on a loop of each thread's own
    lat: list[float] = []
    errors: Counter[str] = Counter()
    results: list[Any] = [None] * len(items)
    lock = threading.Lock()
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        loop = asyncio.new_event_loop() if is_async else None
        try:
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= len(items):
                    return
                user, role, params = items[i]
                t0 = time.perf_counter()
                code = ""
                try:
                    out = fn(Caller(user, role, TENANT), params)
                    results[i] = loop.run_until_complete(out) if loop is not None else out
                except HubError as exc:
                    code = exc.code
                except Exception as exc:  # noqa: BLE001 - counted, the run goes on
                    code = type(exc).__name__
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    lat.append(ms)
                    if code:
                        errors[code] += 1
        finally:
            if loop is not None:
                loop.close()
            connection.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        for f in [ex.submit(worker) for _ in range(threads)]:
            f.result()
    return summary(lat, errors, time.perf_counter() - t0), results


# --- the hub: rpc over WebSockets --------------------------------------------------------------------

class Sock:
    """One user's socket: calls in flight matched to replies by id; pushes are read and dropped."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                msg = json.loads(frame)
                fut = self.waiting.pop(msg.get("id", -1), None) if "push" not in msg else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except Exception:  # noqa: BLE001 - a closed socket fails its waiting calls below
            pass
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("socket closed"))

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        cid = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[cid] = fut
        await self.ws.send(json.dumps({"id": cid, "cmd": cmd, **fields}))
        return await asyncio.wait_for(fut, 60)


class HubSide:
    def __init__(self, url: str, secret: str) -> None:
        self.url = url
        self.secret = secret
        self.socks: dict[str, Sock] = {}

    async def sock(self, user: str, role: str) -> Sock:
        s = self.socks.get(user)
        if s is None:
            from websockets.asyncio.client import connect

            from hub import auth

            ws = await connect(self.url, max_size=None, open_timeout=30)
            s = Sock(ws)
            reply = await s.call("connect", token=auth.mint(user, role, self.secret, tenant=TENANT, ttl=3600))
            if not reply.get("ok"):
                raise RuntimeError(f"connect refused: {reply}")
            self.socks[user] = s
        return s

    async def run(self, action: str, items: list[Item], callers: int, seconds: float
                  ) -> tuple[dict[str, Any], list[Any]]:
        for user, role, _p in items:  # sockets open before the clock starts
            await self.sock(user, role)
        lat: list[float] = []
        errors: Counter[str] = Counter()
        results: list[Any] = [None] * len(items)
        counter = itertools.count()
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= len(items):
                    return
                user, _role, params = items[i]
                t0 = time.perf_counter()
                try:
                    reply = await self.socks[user].call("rpc", method=action.split(":")[0], params=params)
                except (ConnectionError, TimeoutError) as exc:
                    reply = {"ok": False, "error": {"code": type(exc).__name__}}
                lat.append((time.perf_counter() - t0) * 1000)
                if reply.get("ok"):
                    results[i] = reply.get("result")
                else:
                    errors[str(reply.get("error", {}).get("code"))] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return summary(lat, errors, time.perf_counter() - t0), results

    async def close(self) -> None:
        for s in self.socks.values():
            await s.ws.close()
            s.reader.cancel()


# --- items --------------------------------------------------------------------------------------------

class Plan:
    """Users, rooms and the items of each phase; later phases use the earlier phases' results."""

    def __init__(self, customers: list[str], providers: list[str], rooms: dict[str, str], n: int,
                 seed: int) -> None:
        self.customers = customers
        self.providers = providers
        self.rooms = rooms
        self.n = n
        self.rng = random.Random(seed)

    def items(self, action: str, prior: dict[str, list[Any]]) -> list[Item]:
        rng, cs, ps = self.rng, self.customers, self.providers
        if action == "match.find":
            return [(cs[i % len(cs)], "customer", {"category": CATEGORY, "k": 5,
                                                    **dict(zip(("lat", "lng"), point(rng), strict=True))})
                    for i in range(self.n)]
        if action == "jobs.create":
            return [(cs[i % len(cs)], "customer",
                     {"title": "Fix a leaking tap", "description": "Kitchen tap drips", "category": CATEGORY,
                      "budget": 20_000, "currency": "GBP", **dict(zip(("lat", "lng"), point(rng), strict=True))})
                    for i in range(self.n // 4)]
        if action == "jobs.bid":
            jobs = [r["job"] for r in prior.get("jobs.create", []) if r]
            if not jobs:
                return []
            # Distinct (job, provider) pairs: one live bid each, spread over the jobs.
            pairs = [(j, p) for k, p in enumerate(ps) for j in jobs[k % len(jobs):] + jobs[:k % len(jobs)]]
            return [(p, "provider", {"job": j, "amount": 10_000 + i, "currency": "GBP", "note": "today"})
                    for i, (j, p) in enumerate(pairs[:self.n])]
        if action == "jobs.bid:burst":
            jobs = [r["job"] for r in prior.get("jobs.create", []) if r]
            return [(p, "provider", {"job": j, "amount": 12_000 + i, "currency": "GBP", "note": "now"})
                    for i, (j, p) in enumerate((j, p) for j in jobs for p in ps) if i < self.n]
        if action == "bookings.create":
            return [(cs[i % len(cs)], "customer", {"category": CATEGORY, "mode": "on_demand",
                                                    **dict(zip(("lat", "lng"), point(rng), strict=True))})
                    for i in range(self.n // 2)]
        if action == "offers.accept":
            from matching.models import Offer

            bookings = [r["booking"] for r in prior.get("bookings.create", []) if r and r.get("offered")]
            offered: dict[str, list[str]] = {}
            for booking, provider in (Offer.objects.filter(booking_id__in=bookings, status="pending")
                                      .values_list("booking_id", "provider")):
                offered.setdefault(booking, []).append(provider)
            # One acceptor per booking, spread over the providers (a provider's acceptance counter
            # is one row: a single provider accepting everything would measure only that row).
            load: Counter[str] = Counter()
            out: list[Item] = []
            for booking, offered_to in offered.items():
                p = min(offered_to, key=lambda u: load[u])
                load[p] += 1
                out.append((p, "provider", {"booking": booking}))
            return out
        if action == "calls.start":
            return [(c, "customer", {"room": self.rooms[c], "media": "voice"})
                    for c in (cs[i % len(cs)] for i in range(self.n // 2))]
        raise ValueError(action)


# --- the run ------------------------------------------------------------------------------------------

def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def start_hub(env: dict[str, str], port: int, logdir: Path) -> subprocess.Popen[bytes]:
    out = open(logdir / "hub.log", "wb")
    proc = subprocess.Popen([PY, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited early; see {logdir / 'hub.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the hub did not start in 60 s")


def fmt(v: float, spec: str = ",.0f") -> str:
    return "n/a" if v != v else format(v, spec)


def print_table(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], workers: int, callers: int) -> bool:
    print(f"\nDomain calls: floor = direct calls on {workers} threads in one process; "
          f"hub = rpc over the socket, {callers} in flight.", flush=True)
    head = f"{'action':<16} {'floor/s':>8} {'p50':>6} {'p99':>6} {'hub/s':>8} {'p50':>6} {'p99':>6} " \
           f"{'hub/floor':>9} {'target':>7} result  errors"
    print(head)
    print("-" * len(head))
    all_ok = True
    for action, f, h in rows:
        ratio = h["per_s"] / f["per_s"] if f.get("per_s") else float("nan")
        ok = ratio >= TARGET_RATIO
        all_ok &= ok
        errs = ", ".join(f"{k} {v}" for k, v in {**{f"floor {k}": v for k, v in f["errors"].items()},
                                                 **{f"hub {k}": v for k, v in h["errors"].items()}}.items())
        print(f"{action:<16} {fmt(f['per_s']):>8} {fmt(f['p50_ms'], '.1f'):>6} {fmt(f['p99_ms'], '.0f'):>6} "
              f"{fmt(h['per_s']):>8} {fmt(h['p50_ms'], '.1f'):>6} {fmt(h['p99_ms'], '.0f'):>6} "
              f"{fmt(100 * ratio, '.0f') + ' %':>9} {'>= 70 %':>7} {'PASS' if ok else 'FAIL':<6}  {errs or '-'}")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer calls per phase")
    ap.add_argument("--callers", type=int, default=50, help="hub calls in flight (default 50)")
    ap.add_argument("--seconds", type=float, default=6.0, help="cap per phase and path (default 6)")
    ap.add_argument("--items", type=int, default=0, help="calls per phase (default 1200, quick 300)")
    ap.add_argument("--only", default="", help="comma-separated actions (with the phases they need)")
    args = ap.parse_args(argv)
    n = args.items or (300 if args.quick else 1200)
    secret = secrets.token_urlsafe(32)
    db = f"bench_domain_{os.getpid()}_{secrets.token_hex(2)}"
    logdir = Path(tempfile.mkdtemp(prefix="bench-domain-"))
    env = dict(os.environ, HUB_ENV="test", HUB_SECRET=secret, DATABASE_URL=f"{PG}/{db}", REDIS_URL=REDIS,
               HUB_COMMANDS_PER_S="1000000", HUB_COMMAND_BURST="1000000", PYTHONDONTWRITEBYTECODE="1",
               # Every bench socket comes from one address: the per-address socket budgets would refuse them.
               HUB_MAX_SOCKETS_PER_ADDRESS="1000000", HUB_NEW_SOCKETS_PER_ADDRESS_PER_S="1000000",
               # Per-user domain budgets off (0): 50 users make thousands of calls in seconds here.
               HUB_MAX_OPEN_BOOKINGS_PER_USER="0", HUB_MAX_OPEN_JOBS_PER_USER="0", HUB_BIDS_PER_MIN="0",
               HUB_CALL_INVITES_PER_MIN="0", HUB_MATCH_FIND_PER_MIN="0")
    import psycopg
    import redis

    with psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    redis.Redis.from_url(REDIS, socket_connect_timeout=3).flushdb()
    hub: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([PY, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        setup_django(env)
        from django.conf import settings

        from hub.rpc import REGISTRY, Caller
        from matching.actions.providers import update_provider

        workers = settings.HUB_DOMAIN_WORKERS
        ring = [[BOX[1] - 0.05, BOX[0] - 0.05], [BOX[3] + 0.05, BOX[0] - 0.05], [BOX[3] + 0.05, BOX[2] + 0.05],
                [BOX[1] - 0.05, BOX[2] + 0.05], [BOX[1] - 0.05, BOX[0] - 0.05]]
        REGISTRY["zones.create"].fn(Caller("bench-admin", "admin", TENANT), {
            "name": "central", "categories": [CATEGORY], "geometry": {"type": "Polygon", "coordinates": [ring]}})
        port = free_port()
        hub = start_hub(env, port, logdir)  # loads the zone at start
        rng = random.Random(7)
        run = secrets.token_hex(3)
        customers = [f"bd-{run}-c{i}" for i in range(50)]
        providers = [f"bd-{run}-p{i}" for i in range(50)]
        places = {p: point(rng) for p in providers}
        rooms = {c: REGISTRY["rooms.create"].fn(Caller(c, "customer", TENANT),
                                                 {"members": [providers[i]], "kind": "direct"})["room"]
                 for i, c in enumerate(customers)}
        for p, (lat, lng) in places.items():  # this process's matcher, for the floor
            update_provider(p, lat, lng, True, [CATEGORY], 3)
        side = HubSide(f"ws://127.0.0.1:{port}/ws", secret)
        loop = asyncio.new_event_loop()

        async def hub_providers() -> None:
            for p, (lat, lng) in places.items():
                s = await side.sock(p, "provider")
                reply = await s.call("rpc", method="providers.update", params={
                    "lat": lat, "lng": lng, "available": True, "categories": [CATEGORY], "capacity": 3})
                if not reply.get("ok"):
                    raise RuntimeError(f"providers.update refused: {reply}")

        loop.run_until_complete(hub_providers())
        log(f"hub pid {hub.pid} on port {port}; {len(providers)} providers online; {n} calls per phase, "
            f"cap {args.seconds:.0f} s")
        plans = {"floor": Plan(customers, providers, rooms, n, 1), "hub": Plan(customers, providers, rooms, n, 1)}
        prior: dict[str, dict[str, list[Any]]] = {"floor": {}, "hub": {}}
        rows = []
        need = {"jobs.bid": "jobs.create", "jobs.bid:burst": "jobs.create", "offers.accept": "bookings.create"}
        only = {a for a in args.only.split(",") if a}
        only |= {need[a] for a in only if a in need}
        for action in ACTIONS:
            if only and action not in only:
                continue
            items = plans["floor"].items(action, prior["floor"])
            floor, prior["floor"][action] = run_floor(action, items, workers, args.seconds)
            items = plans["hub"].items(action, prior["hub"])
            hubr, prior["hub"][action] = loop.run_until_complete(side.run(action, items, args.callers, args.seconds))
            log(f"{action}: floor {floor['per_s']:.0f}/s ({floor['ok']} ok), hub {hubr['per_s']:.0f}/s "
                f"({hubr['ok']} ok)")
            rows.append((action, floor, hubr))
        loop.run_until_complete(side.close())
        print_table(rows, workers, args.callers)
        print(f"\nload: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs; hub log {logdir / 'hub.log'}")
    finally:
        if hub is not None and hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(20)
            except subprocess.TimeoutExpired:
                hub.kill()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up
            pass
        with psycopg.connect(f"{PG}/test", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
