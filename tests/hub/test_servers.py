"""The hub under plain `uvicorn asgi:application` and `daphne asgi:application`, not only
`manage.py serve`: start-up hooks run before the first answer, sweeps run, the socket flows work,
the admin's CSS is served, and SIGTERM drains (sockets closed with 1012, readyz 503, exit)."""
from __future__ import annotations

import gzip
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import django
import pytest

from tests.support import HubClient, HubServer, http_json, mint, uid

pytestmark = pytest.mark.services

SERVERS = {
    # uvicorn speaks the ASGI lifespan protocol: start and drain come from it.
    "uvicorn": ["-m", "uvicorn", "asgi:application", "--host", "127.0.0.1", "--port", "{port}"],
    # daphne has no lifespan: the first scope starts the process.
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "asgi:application"],
}
CSS = "admin/css/base.css"


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collected STATIC_ROOT in miniature: one admin stylesheet and its gzip variant, as
    `collectstatic` (CompressedStaticFilesStorage) leaves them."""
    root = tmp_path_factory.mktemp("static")
    source = Path(django.__file__).parent / "contrib" / "admin" / "static" / CSS
    target = root / CSS
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    target.with_name(target.name + ".gz").write_bytes(gzip.compress(source.read_bytes()))
    return root


@pytest.fixture(scope="module")
def servers(static_root: Path) -> Iterator[dict[str, HubServer]]:
    """Both servers, started side by side (a start is mostly waiting for imports and the hooks)."""
    env = {"HUB_STATIC_ROOT": str(static_root), "HUB_REVOCATION_POLL_S": "1", "HUB_DRAIN_GRACE_S": "3",
           "HUB_DOMAIN_WORKERS": "4"}
    hubs = {name: HubServer(command=command, env=env) for name, command in SERVERS.items()}
    try:
        with ThreadPoolExecutor(len(hubs)) as pool:
            for started in [pool.submit(hub.start, 90) for hub in hubs.values()]:
                started.result()
        yield hubs
    finally:
        for hub in hubs.values():
            hub.stop()


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, servers: dict[str, HubServer]) -> HubServer:
    return servers[request.param]


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_socket_flows_sweeps_static_files_and_drain(server: HubServer) -> None:
    from django.db import connection

    from hub.models import TokenRevocation
    from matching.matcher import provider_key
    from matching.models import ProviderState

    log = server.log()
    # Start-up hooks ran before the first answer (healthz waited for them).
    assert "start-up hook matching done" in log and "hub process" in log, log

    tenant, alice_id, bob_id = uid("t"), uid("a"), uid("b")
    alice = HubClient(server.url, mint(alice_id, "customer", tenant=tenant))
    bob = HubClient(server.url, mint(bob_id, "provider", tenant=tenant))
    try:
        room = alice.rpc("rooms.create", members=[bob_id], kind="direct")["room"]
        channel = f"chat:{room}"
        bob.call("subscribe", channel=channel)
        alice.call("subscribe", channel=channel)
        offset = alice.call("publish", channel=channel, data={"text": "hello"})["offset"]
        got = bob.next_push("pub", channel=channel, timeout=10)
        assert (got["offset"], got["data"]) == (offset, {"text": "hello"})

        bob.rpc("providers.update", lat=51.5, lng=-0.12, available=True)

        # A sweep ran in this process: a revocation stored without its Redis announcement reaches
        # the sockets only through the periodic poll (hub.revocation, every second here).
        TokenRevocation.objects.create(tenant=tenant, user=bob_id, not_before=int(time.time()) + 1,
                                       actor="test")
        assert bob.wait_closed(timeout=15)[0] == 4001

        # The admin's stylesheet, compressed for a client that accepts gzip.
        status, headers, body = get(f"{server.http}/static/{CSS}")
        assert status == 200 and headers["content-type"].startswith("text/css") and b"body" in body
        status, headers, body = get(f"{server.http}/static/{CSS}", **{"Accept-Encoding": "gzip"})
        assert status == 200 and headers.get("content-encoding") == "gzip"
        assert headers["content-type"].startswith("text/css") and b"body" in gzip.decompress(body)
        assert get(f"{server.http}/static/admin/css/nosuch.css")[0] == 404
        assert get(f"{server.http}/static/../core/settings.py")[0] == 404

        if connection.vendor == "postgresql":
            # The pool is the settings' (a sizing of 4 domain workers here), and in use.
            metrics = get(f"{server.http}/metrics")[2].decode()
            pool = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                    if line.startswith("hub_db_pool_")}
            assert pool["hub_db_pool_max"] == 4 + min(32, (os.cpu_count() or 1) + 4) + 8, pool
            assert pool["hub_db_pool_in_use"] >= 1 and pool["hub_db_pool_waiting"] == 0, pool
            # Its connections come from its pool (application_name hub-<pid>): at most one per
            # domain worker, default-executor thread and background thread, plus a few (settings).
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                               [f"hub-{server.proc.pid}" if server.proc else ""])
                assert 1 <= cursor.fetchone()[0] <= 4 + min(32, (os.cpu_count() or 1) + 4) + 8

        # SIGTERM: the socket closes with 1012, readyz answers 503 while draining, then the process exits.
        assert http_json("GET", server.http + "/readyz")[0] == 200
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert alice.wait_closed(timeout=15)[0] == 1012
        status, body = http_json("GET", server.http + "/readyz")
        assert (status, body["draining"]) == (503, True)
        # Other requests are turned away with a retry, not started on a process that is leaving.
        status, body = http_json("POST", server.http + "/api/rooms.create", {"members": [bob_id], "kind": "direct"},
                                 token=mint(alice_id, "customer", tenant=tenant))
        assert (status, body["error"]["code"]) == (503, "unavailable") and body["error"]["retry_after_ms"] > 0
        server.proc.wait(30)
        log = server.log()
        # The drain ran the shut-down hooks: the matcher wrote its provider snapshot to the table
        # (with Redis it does so only every 60 s otherwise).
        assert "shut-down hook matching done" in log and "drained" in log, log
        assert ProviderState.objects.filter(user=provider_key(tenant, bob_id), lat=51.5).exists()
    finally:
        alice.close()
        bob.close()
