"""Postgres connections come from a bounded pool per process, sized to the domain workers."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PG = "postgres://postgres@127.0.0.1:5432/hub"


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """core/settings.py evaluated afresh under `env` (Django's configured settings stay as they are)."""
    for name in ("DB_POOL", "DB_POOL_MAX", "DB_POOL_MIN", "DB_POOL_TIMEOUT_S", "DB_CONNECT_TIMEOUT",
                 "HUB_DOMAIN_WORKERS", "DB_SERVER_SIDE_BINDING", "DB_PREPARE_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("settings_under_test", ROOT / "core" / "settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pool_holds_a_connection_for_every_thread_that_may_use_one(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_with(monkeypatch, DATABASE_URL=PG, HUB_DOMAIN_WORKERS="3")
    db = s.DATABASES["default"]
    io_threads = min(32, (os.cpu_count() or 1) + 4)  # the loop's default executor
    assert db["CONN_MAX_AGE"] == 0  # Django hands connections back to the pool
    assert db["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 3 + io_threads + 8, "timeout": 3.0,
                                     "max_idle": 300, "name": f"hub-{os.getpid()}"}
    assert db["OPTIONS"]["application_name"] == f"hub-{os.getpid()}"


def test_pool_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = settings_with(monkeypatch, DATABASE_URL=PG, DB_POOL_MAX="40", DB_POOL_MIN="4",
                         DB_POOL_TIMEOUT_S="2").DATABASES["default"]["OPTIONS"]["pool"]
    assert (pool["min_size"], pool["max_size"], pool["timeout"]) == (4, 40, 2.0)


def test_without_the_pool_each_thread_keeps_its_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    db = settings_with(monkeypatch, DATABASE_URL=PG, DB_POOL="0").DATABASES["default"]
    assert "pool" not in db["OPTIONS"] and db["CONN_MAX_AGE"] is None


def test_sqlite_has_no_pool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = settings_with(monkeypatch, DATABASE_URL=f"sqlite:///{tmp_path / 'hub.sqlite3'}").DATABASES["default"]
    assert "pool" not in db["OPTIONS"]


def test_parameters_bind_server_side_and_hot_statements_are_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    options = settings_with(monkeypatch, DATABASE_URL=PG).DATABASES["default"]["OPTIONS"]
    assert (options["server_side_binding"], options["prepare_threshold"]) == (True, 5)
    # Behind a pooler without prepared statements: never prepare; or quote parameters as Django does.
    assert settings_with(monkeypatch, DATABASE_URL=PG, DB_PREPARE_THRESHOLD="0").DATABASES["default"][
        "OPTIONS"]["prepare_threshold"] is None
    options = settings_with(monkeypatch, DATABASE_URL=PG, DB_SERVER_SIDE_BINDING="0").DATABASES["default"]["OPTIONS"]
    assert "server_side_binding" not in options and "prepare_threshold" not in options
