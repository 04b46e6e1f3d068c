"""`manage.py serve` (hub/management/commands/serve.py) beside a sibling on one port. (Its one-line
start-up errors: test_mint_token.py; plain uvicorn and daphne: test_servers.py.)"""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import HubServer, free_port, http_json

pytestmark = pytest.mark.services


def test_serve_reuse_port_drain_hands_new_connections_to_the_sibling() -> None:
    """`serve --reuse-port`: a draining process stops listening at once, so every new connection to
    the shared address reaches the other process (none meets the drain's 503)."""
    port = free_port()
    draining = HubServer(port=port, reuse_port=True, env={"HUB_DRAIN_GRACE_S": "3"})
    sibling = HubServer(port=port, reuse_port=True)
    try:
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(hub.start, 90) for hub in (draining, sibling)]:
                started.result()
        deadline = time.time() + 90
        while not all("hub serving on" in hub.log() for hub in (draining, sibling)):  # both listen
            assert time.time() < deadline, draining.log() + sibling.log()
            time.sleep(0.2)
        assert draining.proc is not None
        draining.proc.send_signal(signal.SIGTERM)
        while "draining" not in draining.log():
            assert time.time() < deadline, draining.log()
            time.sleep(0.05)
        answers = [http_json("GET", draining.http + "/readyz")[0] for _ in range(30)]
        assert answers == [200] * 30  # the sibling answered each (the draining process says 503)
        assert draining.proc.wait(30) == 0
    finally:
        draining.stop()
        sibling.stop()
