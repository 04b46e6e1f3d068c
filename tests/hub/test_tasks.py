"""Start-up hooks and sweeps registry (hub/tasks.py)."""

from __future__ import annotations

import logging

import pytest

from hub import tasks


def test_startup_hooks_run_in_order_and_a_failure_is_logged_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "STARTUP", [])
    ran: list[str] = []

    @tasks.on_start("first")
    def first() -> None:
        ran.append("first")

    @tasks.on_start("broken")
    def broken() -> None:
        raise RuntimeError("database down")

    @tasks.on_start("last")
    def last() -> None:
        ran.append("last")

    with caplog.at_level(logging.INFO, logger="hub.tasks"):
        tasks.run_startup()
    assert ran == ["first", "last"]
    assert any("start-up hook broken failed" in r.getMessage() for r in caplog.records)


def test_apps_register_their_startup_and_sweeps() -> None:
    import django

    django.setup()
    assert "matching" in [name for name, _fn in tasks.STARTUP]
    assert {"matching.offers", "calls.sweep"} <= {name for name, _s, _fn in tasks.SWEEPS}


def test_shutdown_hooks_run_in_order_and_a_failure_is_logged_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "SHUTDOWN", [])
    ran: list[str] = []

    @tasks.on_stop("broken")
    def broken() -> None:
        raise RuntimeError("redis down")

    @tasks.on_stop("flush")
    def flush() -> None:
        ran.append("flush")

    with caplog.at_level(logging.INFO, logger="hub.tasks"):
        tasks.run_shutdown()
    assert ran == ["flush"]
    assert any("shut-down hook broken failed" in r.getMessage() for r in caplog.records)


def test_the_matcher_flushes_its_snapshot_on_drain() -> None:
    from matching import service

    assert ("matching", service.stop) in tasks.SHUTDOWN
