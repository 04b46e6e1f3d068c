"""Prometheus metrics for the hub: cheap hook functions for the domain code, exported at /metrics.

Two kinds of numbers:

- The engine's own plain counters (`engine.stats`) and its open sockets (`len(engine.conns)`)
  cost nothing on the hot path: they are read at scrape time. Per-process mode exports them with
  a custom Collector. In multiprocess mode a scrape reaches one process only, so each process
  copies its counters into prometheus_client's multiprocess files (by delta: proper counters that
  survive the process) at each scrape it serves and every HUB_METRICS_SYNC_S seconds once
  `start(engine)` runs.
- Everything else goes through the hook functions below (`command`, `commit_latency`, ...).
  They cache label children so a call is one dict lookup plus one locked add.

Multiprocess mode: set PROMETHEUS_MULTIPROC_DIR (an empty directory, wiped by the supervisor
before the processes start) in the environment of every hub process *before* they start;
prometheus_client reads it at import. Without it each process keeps its own registry.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("core.metrics")

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir") or ""
MULTIPROCESS = bool(MULTIPROC_DIR)
SYNC_S = float(os.environ.get("HUB_METRICS_SYNC_S", "5") or 5)
# Label values from callers are bounded: past this many distinct children a metric folds new ones into "other".
MAX_CHILDREN = 1000

# Per-process registry (also the one hook metrics register in; in multiprocess mode their values go
# to the shared files whatever the registry, and a scrape reads the files instead).
registry = CollectorRegistry(auto_describe=True)

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

COMMANDS = Counter("hub_commands_total", "Protocol commands and rpc methods answered, by name and outcome "
                   "(ok or the error code)", ["command", "outcome"], registry=registry)
COMMIT_LATENCY = Histogram("hub_publish_commit_seconds", "Publish submitted to committed (acknowledged)",
                           buckets=_LATENCY, registry=registry)
DELIVERY_LATENCY = Histogram("hub_publish_delivery_seconds", "Publication committed (its ts) to written to "
                             "local subscribers", buckets=_LATENCY, registry=registry)
MATCH_LATENCY = Histogram("hub_match_seconds", "match.find (and booking matching) latency",
                          buckets=_LATENCY, registry=registry)
OFFERS = Counter("hub_offers_total", "Booking offers by event (offered, accepted, declined, expired, "
                 "conflict, withdrawn)", ["event"], registry=registry)
CALLS = Counter("hub_calls_total", "Calls by outcome (started, answered, missed, declined, cancelled, ended, "
                "abandoned)", ["outcome"], registry=registry)
ASSIST = Counter("hub_assist_total", "AI assist requests answered, by provider and whether a fallback "
                 "provider answered", ["provider", "fallback"], registry=registry)
ASSIST_LATENCY = Histogram("hub_assist_seconds", "AI assist latency (request to done), by provider",
                           ["provider"], buckets=_SLOW, registry=registry)
ASSIST_FALLBACKS = Counter("hub_assist_fallbacks_total", "AI providers given up on (the next one was tried), "
                           "by provider and reason", ["provider", "reason"], registry=registry)
PUSHES = Counter("hub_push_total", "Push notifications by provider (web, android, ios) and outcome (sent, "
                 "retry, failed, dead, unregistered, expired, socket, suppressed)", ["provider", "outcome"],
                 registry=registry)
PUSH_LATENCY = Histogram("hub_push_seconds", "One push request to its provider, by provider",
                         ["provider"], buckets=_LATENCY, registry=registry)
RATE_LIMITED = Counter("hub_rate_limited_total", "Requests refused with rate_limited, by scope",
                       ["scope"], registry=registry)

# Engine counters as multiprocess metrics (only used when MULTIPROCESS: synced by delta).
_MP_COUNTERS: dict[str, Counter] = {}
_MP_RECOVERIES: Counter | None = None
_MP_SOCKETS: Gauge | None = None

ENGINE_COUNTERS = {
    # engine.stats key -> (metric name without _total, help)
    "published": ("hub_publications", "Publications committed by this hub (socket and HTTP publishes)"),
    "delivered": ("hub_deliveries", "Publications written to subscriber sockets"),
    "slow_consumers": ("hub_slow_consumer_cutoffs", "Sockets closed 4009 (slow consumer)"),
    "gap_fills": ("hub_gap_fills", "Offset gaps filled from the database"),
}
RECOVERY_KEYS = {"recovered": "true", "not_recovered": "false"}
# The process's Postgres connection pool (docs/operations.md "Connection budget"), read at scrape time.
DB_POOL_GAUGES = {
    "in_use": ("hub_db_pool_in_use", "Postgres connections of the pool held by a thread"),
    "idle": ("hub_db_pool_idle", "Postgres connections idle in the pool"),
    "max": ("hub_db_pool_max", "The pool's size limit (DB_POOL_MAX)"),
    "waiting": ("hub_db_pool_waiting", "Threads waiting for a pooled Postgres connection"),
}
_MP_POOL: dict[str, Gauge] = {}

if MULTIPROCESS:
    from prometheus_client import multiprocess

    for _key, (_name, _help) in ENGINE_COUNTERS.items():
        _MP_COUNTERS[_key] = Counter(_name, _help, registry=None)
    _MP_RECOVERIES = Counter("hub_recoveries", "Subscribes with `since`, by whether they recovered",
                             ["recovered"], registry=None)
    _MP_SOCKETS = Gauge("hub_open_sockets", "Open WebSockets (summed over live processes)",
                        registry=None, multiprocess_mode="livesum")
    for _key, (_name, _help) in DB_POOL_GAUGES.items():
        _MP_POOL[_key] = Gauge(_name, _help + " (summed over live processes)", registry=None,
                               multiprocess_mode="livesum")
    def _mark_dead(pid: int = os.getpid()) -> None:
        # Live gauges of a process that is gone must not count: drop its files on a clean exit.
        multiprocess.mark_process_dead(pid, MULTIPROC_DIR)

    atexit.register(_mark_dead)


class _Children:
    """label values -> child, so hot hooks skip prometheus_client's own label validation and lock."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.cache: dict[tuple[str, ...], Any] = {}
        self.lock = threading.Lock()

    def get(self, *values: str) -> Any:
        child = self.cache.get(values)
        if child is None:
            with self.lock:
                child = self.cache.get(values)
                if child is None:
                    if len(self.cache) >= MAX_CHILDREN:
                        values = tuple("other" for _ in values)
                        child = self.cache.get(values)
                    if child is None:
                        child = self.metric.labels(*values)
                    self.cache[values] = child
        return child


_commands = _Children(COMMANDS)
_offers = _Children(OFFERS)
_calls = _Children(CALLS)
_assist = _Children(ASSIST)
_assist_latency = _Children(ASSIST_LATENCY)
_assist_fallbacks = _Children(ASSIST_FALLBACKS)
_rate_limited = _Children(RATE_LIMITED)
_pushes = _Children(PUSHES)
_push_latency = _Children(PUSH_LATENCY)


# --- hooks (cheap; call them from anywhere, any thread) ------------------------------------------

def command(name: str, outcome: str, n: int = 1) -> None:
    """A command or rpc method answered (`n` of them): outcome "ok" or the error code."""
    _commands.get(name, outcome).inc(n)


def commit_latency(seconds: float) -> None:
    """Publish submitted -> committed, per publication."""
    COMMIT_LATENCY.observe(seconds)


def delivery_latency(seconds: float) -> None:
    """Publication committed (its ts) -> written to a local subscriber, once per publication."""
    DELIVERY_LATENCY.observe(seconds)


def match_latency(seconds: float) -> None:
    MATCH_LATENCY.observe(seconds)


def offer(event: str) -> None:
    """offered, accepted, declined, expired, conflict (a late accept), withdrawn."""
    _offers.get(event).inc()


def call(outcome: str) -> None:
    """started, answered, missed, declined, cancelled, ended, abandoned."""
    _calls.get(outcome).inc()


def assist(provider: str, latency_s: float | None, fallback: bool = False) -> None:
    """An assist request finished on `provider`; `fallback` when it was not the first provider tried."""
    _assist.get(provider, "true" if fallback else "false").inc()
    if latency_s is not None:
        _assist_latency.get(provider).observe(latency_s)


def assist_fallback(provider: str, reason: str = "error") -> None:
    """`provider` was given up on for this request (timeout, error, breaker open, ...)."""
    _assist_fallbacks.get(provider, reason).inc()


def rate_limited(scope: str) -> None:
    """A request refused with rate_limited: scope "command" (per socket), "assist", "http", ..."""
    _rate_limited.get(scope).inc()


def push(provider: str, outcome: str, n: int = 1) -> None:
    """Push notifications that reached an outcome: sent, retry, failed, dead (dead-lettered),
    unregistered (device removed), expired (never sent), socket (the user was reachable on a socket),
    suppressed (preferences or quiet hours)."""
    _pushes.get(provider, outcome).inc(n)


def push_latency(provider: str, seconds: float) -> None:
    """One request to a push provider, answered (whatever the answer)."""
    _push_latency.get(provider).observe(seconds)


class timer:  # lower-case: used like a function, `with metrics.timer(metrics.match_latency): ...`
    """Context manager that reports its duration in seconds to a latency hook."""

    __slots__ = ("hook", "t0")

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.t0 = 0.0

    def __enter__(self) -> timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hook(time.perf_counter() - self.t0)


# --- engine stats ----------------------------------------------------------------------------

# Where this process's engines are (objects with `.stats` and `.conns`): the hub sets it in its
# ready(); the kernel knows nothing of the hub.
_engine_source: Callable[[], Iterable[Any]] = tuple


def set_engine_source(source: Callable[[], Iterable[Any]]) -> None:
    global _engine_source
    _engine_source = source


def _engines() -> list[Any]:
    return list(_engine_source())


def engine_totals() -> tuple[dict[str, int], int]:
    """Summed engine.stats of this process's engines and their open sockets (plain reads)."""
    totals: dict[str, int] = {k: 0 for k in (*ENGINE_COUNTERS, *RECOVERY_KEYS)}
    sockets = 0
    for engine in _engines():
        stats = dict(engine.stats)  # a copy: the loop thread may add keys meanwhile
        for key in totals:
            totals[key] += int(stats.get(key, 0))
        sockets += len(engine.conns)
    return totals, sockets


def db_pool_stats() -> dict[str, int]:
    """This process's Postgres pool (DB_POOL_GAUGES keys); empty when there is none (yet)."""
    try:
        from django.db import connections

        wrapper = connections["default"]
        # The pool as it is: asking `wrapper.pool` would create one.
        pool = getattr(type(wrapper), "_connection_pools", {}).get(wrapper.alias)
        if pool is None:
            return {}
        stats = pool.get_stats()
    except Exception:  # metrics must never break a scrape
        log.debug("pool stats unavailable", exc_info=True)
        return {}
    size, idle = int(stats.get("pool_size", 0)), int(stats.get("pool_available", 0))
    return {"in_use": max(0, size - idle), "idle": idle, "max": int(stats.get("pool_max", 0)),
            "waiting": int(stats.get("requests_waiting", 0))}


class EngineCollector(Collector):
    """Per-process mode: engine counters read at scrape time (no hot-path cost)."""

    def collect(self) -> Iterator[Metric]:
        totals, sockets = engine_totals()
        yield GaugeMetricFamily("hub_open_sockets", "Open WebSockets", value=sockets)
        for key, (name, help_text) in ENGINE_COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=totals[key])
        rec = CounterMetricFamily("hub_recoveries", "Subscribes with `since`, by whether they recovered",
                                  labels=["recovered"])
        for key, label in RECOVERY_KEYS.items():
            rec.add_metric([label], totals[key])
        yield rec
        pool = db_pool_stats()
        for key, (name, help_text) in DB_POOL_GAUGES.items():
            if key in pool:
                yield GaugeMetricFamily(name, help_text, value=pool[key])

    def describe(self) -> Iterable[Metric]:
        return []


_sync_lock = threading.Lock()
_synced: dict[str, int] = {}


def sync_engine() -> None:
    """Multiprocess mode: add this process's engine counters since the last sync to the shared files."""
    if not MULTIPROCESS or _MP_SOCKETS is None or _MP_RECOVERIES is None:
        return
    totals, sockets = engine_totals()
    with _sync_lock:
        for key, value in totals.items():
            delta = value - _synced.get(key, 0)
            if delta <= 0:
                continue  # an engine was replaced (tests): never count down
            _synced[key] = value
            if key in RECOVERY_KEYS:
                _MP_RECOVERIES.labels(RECOVERY_KEYS[key]).inc(delta)
            else:
                _MP_COUNTERS[key].inc(delta)
        _MP_SOCKETS.set(sockets)
        for key, value in db_pool_stats().items():
            _MP_POOL[key].set(value)


_sync_task: asyncio.Task[None] | None = None


def start(engine: Any = None) -> None:
    """Call once per process on the engine's loop (serve's warm-up). Multiprocess mode: sync every SYNC_S."""
    global _sync_task
    if not MULTIPROCESS or _sync_task is not None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    async def run() -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                sync_engine()
            except Exception:  # metrics must never take the hub down
                log.exception("metrics sync failed")

    _sync_task = loop.create_task(run())


if not MULTIPROCESS:
    registry.register(EngineCollector())


# --- exposition ------------------------------------------------------------------------------

def render() -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text exposition for this hub (all processes if multiprocess)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        sync_engine()
        scrape = CollectorRegistry()
        multiprocess.MultiProcessCollector(scrape, path=MULTIPROC_DIR)
        return generate_latest(scrape), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST
