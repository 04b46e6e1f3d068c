"""Test session: real database (Postgres under `make test`, SQLite otherwise) and real Redis.

Under CI (CI=true) or with HUB_TEST_REQUIRE_SERVICES=1 a missing Postgres or Redis fails the run.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("HUB_ENV", "test")
os.environ.setdefault("HUB_SECRET", "test-secret-0123456789-0123456789-abcdef")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
# Metrics in this process are per-process (a developer's exported multiprocess dir must not leak in).
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
# The suite opens sockets from one address far faster than any client would; the tests of the
# address budgets start their own hubs with these set.
os.environ.setdefault("HUB_MAX_SOCKETS_PER_ADDRESS", "0")
os.environ.setdefault("HUB_NEW_SOCKETS_PER_ADDRESS_PER_S", "0")
os.environ.setdefault("HUB_HTTP_ANON_PER_MIN", "0")
# Hubs started by tests deliver no pushes unless the test asks (NOTIFY_WORKER=1): the notify tests'
# outbox rows are sent by their own workers, never by another test's hub polling the same database.
os.environ.setdefault("NOTIFY_WORKER", "0")
# Django's test client calls itself "testserver".
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")


def _pid_alive(pid: str) -> bool:
    # Other test sessions may run beside this one; only their dead predecessors' data goes.
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _worker_redis(url: str, worker: str) -> str:
    """The Redis database after the session's one for parallel worker `gwN`: keys live in it, and
    the hub names its pub/sub channels after it (core.redis.pubsub_name), so workers never meet."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    db = parts.path.strip("/")
    number = (int(db) if db.isdigit() else 0) + int(worker.removeprefix("gw"))
    if number > 15:
        pytest.exit(f"REDIS_URL's database leaves no room for worker {worker}: use 0-14", returncode=3)
    return urlunsplit(parts._replace(path=f"/{number}"))


def _prepare_database() -> None:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg

        base, _, name = url.rpartition("/")
        test_name = f"{name or 'test'}_hub_{os.getpid()}"
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
                # Earlier runs' databases are dropped so they do not pile up.
                rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                     [f"{name or 'test'}_hub_%"]).fetchall()
                for (old,) in rows:
                    if not _pid_alive(old.rpartition("_")[2]):
                        admin.execute(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{test_name}"')
        except psycopg.OperationalError as exc:
            pytest.exit(f"Postgres is not reachable at DATABASE_URL: {exc}", returncode=3)
        os.environ["DATABASE_URL"] = f"{base}/{test_name}"
    else:
        path = ROOT / "var" / f"test-{os.getpid()}.sqlite3"
        path.parent.mkdir(exist_ok=True)
        for old in path.parent.glob("test-*.sqlite3*"):
            if not _pid_alive(old.name.split("-")[1].split(".")[0]):
                old.unlink(missing_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{path}"
    redis_url = os.environ.get("REDIS_URL", "")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if redis_url and worker:  # parallel workers (`make test` runs two), each flushing its own
        redis_url = os.environ["REDIS_URL"] = _worker_redis(redis_url, worker)
    if redis_url:
        import redis

        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=3).flushdb()
        except redis.RedisError as exc:
            pytest.exit(f"Redis is not reachable at REDIS_URL: {exc}", returncode=3)
    elif os.environ.get("CI") == "true" or os.environ.get("HUB_TEST_REQUIRE_SERVICES") == "1":
        if os.environ.get("HUB_TEST_EMBEDDED") != "1":
            pytest.exit("CI needs REDIS_URL and DATABASE_URL (Postgres); refusing to skip", returncode=3)


_prepare_database()

import django  # noqa: E402

# This process runs ORM code on short-lived threads of its own, which a hub never does: a pool would
# count each such thread's connection as in use for ever. It keeps one connection per thread; the hub
# processes the tests start (running_hubs, the servers' smoke tests) use the pool.
_pool_env = os.environ.get("DB_POOL")
os.environ["DB_POOL"] = "0"
django.setup()
if _pool_env is None:
    del os.environ["DB_POOL"]
else:
    os.environ["DB_POOL"] = _pool_env

from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0, interactive=False)


@pytest.fixture(scope="session")
def live_hub() -> Iterator[object]:
    from tests.support import HubServer

    server = HubServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
