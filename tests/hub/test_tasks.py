"""Start-up hooks and sweeps registry (hub/tasks.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hub import tasks

ROOT = Path(__file__).resolve().parents[2]
# The modules that declare an app's surface (rpc methods, namespaces, hooks, sweeps, routes).
APP_MODULES = ["hub.revocation", "hub.privacy", "hub.namespaces", "hub.http", "rooms.rpc", "rooms.actions.chat",
               "rooms.actions.jobs", "rooms.actions.calls", "matching.rpc", "matching.actions.bookings",
               "matching.actions.providers", "matching.actions.zones", "matching.matcher", "matching.privacy",
               "matching.urls",
               "ai_assist.rpc", "ai_assist.actions", "ai_assist.providers", "ai_assist.transcripts",
               "notify.rpc", "notify.actions", "notify.worker", "notify.urls", "console.urls"]


def test_startup_hooks_run_in_order_and_a_failure_is_logged_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "STARTUP", [])
    ran: list[str] = []

    def first() -> None:
        ran.append("first")

    def broken() -> None:
        raise RuntimeError("database down")

    def last() -> None:
        ran.append("last")

    tasks.on_start("first", first)
    tasks.on_start("broken", broken)
    tasks.on_start("last", last)

    with caplog.at_level(logging.INFO, logger="hub.tasks"):
        tasks.run_startup()
    assert ran == ["first", "last"]
    assert any("start-up hook broken failed" in r.getMessage() for r in caplog.records)


def test_apps_register_their_startup_and_sweeps() -> None:
    import django

    django.setup()
    assert "matching" in [name for name, _fn in tasks.STARTUP]
    assert {"matching.offers", "calls.sweep"} <= {name for name, _s, _fn in tasks.SWEEPS}


def test_importing_an_app_module_registers_nothing() -> None:
    """Registration happens in AppConfig.ready(), never as a side effect of an import: with every
    ready() switched off, importing the modules that declare methods, namespaces, hooks and routes
    leaves every registry empty."""
    code = textwrap.dedent("""
        import importlib, json
        import django
        import ai_assist.apps, console.apps, core.apps, hub.apps, matching.apps, notify.apps, rooms.apps
        for cls in (ai_assist.apps.AiAssistConfig, console.apps.ConsoleConfig, core.apps.CoreConfig, hub.apps.HubConfig,
                    matching.apps.MatchingConfig, notify.apps.NotifyConfig, rooms.apps.RoomsConfig):
            cls.ready = lambda self: None
        django.setup()
        for name in MODULES:
            importlib.import_module(name)
        from core import privacy
        from hub import channels, ready, routes, rpc, store, tasks
        print(json.dumps([len(rpc.REGISTRY), len(channels.NAMESPACES), len(tasks.STARTUP), len(tasks.SWEEPS),
                          len(tasks.SHUTDOWN), len(tasks.LOOPS), len(routes.REGISTRY), len(privacy.REGISTRY),
                          len(store._user_hooks), len(store._publish_hooks)]))
    """).replace("MODULES", repr(APP_MODULES))
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="core.settings")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [0] * 10


def test_shutdown_hooks_run_in_order_and_a_failure_is_logged_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "SHUTDOWN", [])
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("redis down")

    def flush() -> None:
        ran.append("flush")

    tasks.on_stop("broken", broken)
    tasks.on_stop("flush", flush)

    with caplog.at_level(logging.INFO, logger="hub.tasks"):
        tasks.run_shutdown()
    assert ran == ["flush"]
    assert any("shut-down hook broken failed" in r.getMessage() for r in caplog.records)


def test_the_matcher_flushes_its_snapshot_on_drain() -> None:
    from matching import matcher

    assert ("matching", matcher.stop) in tasks.SHUTDOWN
