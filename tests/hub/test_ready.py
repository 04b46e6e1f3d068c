"""hub.ready: readiness checks registered by apps, as readyz runs them."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from hub import ready


@pytest.fixture()
def registry() -> Iterator[None]:
    saved = dict(ready._checks)
    ready._checks.clear()
    try:
        yield
    finally:
        ready._checks.clear()
        ready._checks.update(saved)


def test_critical_failure_fails_non_critical_only_reports(registry: None) -> None:
    ready.register_check("db", lambda: True)
    ready.register_check("zones", lambda: (False, {"bad_zones": ["z1"]}), critical=False)
    assert ready.run_checks() == (True, {"db": True, "zones": False}, {"bad_zones": ["z1"]})
    ready.register_check("db", lambda: False)  # replaced by name
    ok, checks, _ = ready.run_checks()
    assert ok is False and checks == {"db": False, "zones": False}


def test_a_raising_check_fails_instead_of_breaking_readyz(registry: None) -> None:
    def broken() -> bool:
        raise RuntimeError(uuid.uuid4().hex)

    ready.register_check("broken", broken, critical=False)
    ready.register_check("fine", lambda: True)
    assert ready.run_checks() == (True, {"broken": False, "fine": True}, {})
    ready.register_check("broken", broken)
    assert ready.run_checks()[0] is False


def test_readyz_answers_while_every_shared_worker_is_busy() -> None:
    """A process busy with a reconnect storm (every worker thread blocked on recovery reads) still
    answers its load balancer's probe: the probe has a thread of its own."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.test import RequestFactory

    from hub import http

    release = threading.Event()

    async def run() -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(2))
        busy = [loop.run_in_executor(None, release.wait, 30) for _ in range(4)]
        try:
            resp = await asyncio.wait_for(http.readyz(RequestFactory().get("/readyz")), 10)
            return resp.status_code
        finally:
            release.set()
            await asyncio.gather(*busy)

    assert asyncio.run(run()) in (200, 503)  # answered, whatever the checks say
