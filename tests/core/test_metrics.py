"""core.metrics: hook counters, the engine collector, the /metrics view, multiprocess mode."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.test import RequestFactory, override_settings
from prometheus_client.parser import text_string_to_metric_families

from core import metrics
from hub import http as hub_http

ROOT = Path(__file__).resolve().parent.parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, ctype = metrics.render()
    assert ctype.startswith("text/plain")
    return samples(body.decode())


def value(snap: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return snap.get((name, tuple(sorted(labels.items()))), 0.0)


# tests/conftest.py clears PROMETHEUS_MULTIPROC_DIR: the suite's own process counts per process; the
# multiprocess tests below start workers that set it.


def test_hooks_count_by_label() -> None:
    before = scrape()
    metrics.command("publish", "ok")
    metrics.command("publish", "ok")
    metrics.command("rpc:jobs.bid", "conflict")
    metrics.offer("accepted")
    metrics.call("missed")
    metrics.rate_limited("command")
    metrics.assist("openai", 0.4)
    metrics.assist("anthropic", 1.2, fallback=True)
    metrics.assist_fallback("openai", "timeout")
    metrics.commit_latency(0.003)
    metrics.delivery_latency(0.004)
    with metrics.timer(metrics.match_latency):
        pass
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("hub_commands_total", command="publish", outcome="ok") == 2
    assert delta("hub_commands_total", command="rpc:jobs.bid", outcome="conflict") == 1
    assert delta("hub_offers_total", event="accepted") == 1
    assert delta("hub_calls_total", outcome="missed") == 1
    assert delta("hub_rate_limited_total", scope="command") == 1
    assert delta("hub_assist_total", provider="anthropic", fallback="true") == 1
    assert delta("hub_assist_fallbacks_total", provider="openai", reason="timeout") == 1
    assert delta("hub_assist_seconds_count", provider="openai") == 1
    assert delta("hub_publish_commit_seconds_count") == 1
    assert delta("hub_publish_delivery_seconds_count") == 1
    assert delta("hub_match_seconds_count") == 1
    assert delta("hub_publish_commit_seconds_bucket", le="0.005") == 1


def test_label_cardinality_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    children = metrics._Children(metrics.RATE_LIMITED)
    monkeypatch.setattr(metrics, "MAX_CHILDREN", 3)
    for i in range(10):
        children.get(f"scope-{i}").inc()
    assert len({id(c) for c in children.cache.values()}) == 4  # three real ones and "other"
    assert value(scrape(), "hub_rate_limited_total", scope="other") >= 7


class FakeEngine:
    def __init__(self, stats: dict[str, int], conns: int) -> None:
        self.stats = stats
        self.conns = {object() for _ in range(conns)}


def test_engine_stats_are_read_at_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    from hub import engine as hub_engine

    fake = FakeEngine({"published": 7, "delivered": 21, "slow_consumers": 1, "recovered": 3, "not_recovered": 2,
                       "gap_fills": 4}, conns=5)
    monkeypatch.setattr(hub_engine, "_engines", {1: fake})
    snap = scrape()
    assert value(snap, "hub_open_sockets") == 5
    assert value(snap, "hub_publications_total") == 7
    assert value(snap, "hub_deliveries_total") == 21
    assert value(snap, "hub_slow_consumer_cutoffs_total") == 1
    assert value(snap, "hub_gap_fills_total") == 4
    assert value(snap, "hub_recoveries_total", recovered="true") == 3
    assert value(snap, "hub_recoveries_total", recovered="false") == 2
    fake.stats["published"] += 1  # live: the next scrape sees it, nothing was pushed
    assert value(scrape(), "hub_publications_total") == 8


def _get(path: str = "/metrics", **headers: Any) -> Any:
    request = RequestFactory().get(path, **headers)
    return asyncio.run(hub_http.metrics_view(request))


@override_settings(HUB_METRICS_TOKEN="")
def test_view_serves_exposition() -> None:
    resp = _get()
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/plain")
    assert b"hub_open_sockets" in resp.content and b"hub_commands_total" in resp.content


@override_settings(HUB_METRICS_TOKEN="scrape-token-0123456789")
def test_view_token() -> None:
    from django.conf import settings

    from hub import auth

    assert _get().status_code == 401
    assert _get(HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert _get(HTTP_AUTHORIZATION="Bearer scrape-token-0123456789").status_code == 200
    admin = auth.mint("ops", "admin", settings.HUB_SECRET)
    customer = auth.mint("c", "customer", settings.HUB_SECRET)
    assert _get(HTTP_AUTHORIZATION=f"Bearer {admin}").status_code == 200
    assert _get(HTTP_AUTHORIZATION=f"Bearer {customer}").status_code == 401


@override_settings(HUB_METRICS_TOKEN="", DEVELOPMENT=False)
def test_view_is_closed_outside_development_without_a_token() -> None:
    from django.conf import settings

    from hub import auth

    assert _get().status_code == 401
    assert _get(HTTP_AUTHORIZATION="Bearer ").status_code == 401
    admin = auth.mint("ops", "admin", settings.HUB_SECRET, tenant="t1")
    assert _get(HTTP_AUTHORIZATION=f"Bearer {admin}").status_code == 200


_WORKER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    os.environ.setdefault("HUB_ENV", "test")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    import django
    django.setup()
    from core import metrics

    class Fake:
        def __init__(self, published, conns):
            self.stats = {{"published": published, "delivered": 0, "slow_consumers": 0, "recovered": 1,
                           "not_recovered": 0, "gap_fills": 0}}
            self.conns = set(range(conns))

    assert metrics.MULTIPROCESS
    mode = sys.argv[1]
    if mode == "write":
        n = int(sys.argv[2])
        metrics._engines = lambda: [Fake(n, n)]
        for _ in range(n):
            metrics.command("publish", "ok")
        metrics.commit_latency(0.01)
        metrics.sync_engine()
        if sys.argv[3] == "exit":
            pass  # atexit marks this process dead: its live gauge must go
        else:
            import time
            print("ready", flush=True)
            time.sleep(30)
    else:
        metrics._engines = lambda: []
        sys.stdout.write(metrics.render()[0].decode())
""")


def test_multiprocess_mode(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(root=str(ROOT)))
    mp = tmp_path / "mp"
    mp.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, str(script), "write", "3", "exit"], env=env, check=True, timeout=60)
    live = subprocess.Popen([sys.executable, str(script), "write", "4", "stay"], env=env, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        out = subprocess.run([sys.executable, str(script), "read"], env=env, check=True, timeout=60,
                             capture_output=True, text=True).stdout
    finally:
        live.kill()
        live.wait()
    snap = samples(out)
    # Counters add up over every process, the dead one included.
    assert value(snap, "hub_commands_total", command="publish", outcome="ok") == 7
    assert value(snap, "hub_publications_total") == 7
    assert value(snap, "hub_recoveries_total", recovered="true") == 2
    assert value(snap, "hub_publish_commit_seconds_count") == 2
    # Open sockets: summed over live processes only (the exited one was marked dead).
    assert value(snap, "hub_open_sockets") == 4
