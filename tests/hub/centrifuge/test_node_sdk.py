"""The npm `centrifuge` SDK (pinned in package-lock.json) under Node against a live hub, JSON and
Protobuf: connect, the user channel, rpc, subscribe, publish, recovery. Node and the installed
package are required: their absence fails the test (`make install` installs the package)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hub.centrifuge.sdk import path
from tests.support import ROOT, HubServer, mint, uid

SCRIPT = Path(__file__).with_name("sdk_node.mjs")


def node() -> str:
    exe = shutil.which("node")
    assert exe, "node is not installed (Node 20+ is required for the JavaScript SDK tests)"
    assert (ROOT / "node_modules" / "centrifuge" / "package.json").exists(), \
        "node_modules/centrifuge is missing: run `make install` (npm ci)"
    return exe


@pytest.mark.services  # once per suite run: the SDK's behaviour does not depend on the database
@pytest.mark.parametrize("mode", ["json", "protobuf"])
def test_centrifuge_js(live_hub: HubServer, mode: str) -> None:
    tenant = uid("t")
    alice, bob = uid("a"), uid("b")
    # Node 20 has WebSocket behind a flag (a global from Node 22 on); the SDK is given it.
    proc = subprocess.run(
        [node(), "--experimental-websocket", "--no-warnings", str(SCRIPT), path(live_hub.url), mode,
         mint(alice, tenant=tenant), mint(bob, tenant=tenant), bob],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    seen = json.loads(lines[-1])
    assert seen["ok"], seen
    assert seen["data"] == {"user": alice, "role": "customer", "tenant": tenant}
    assert seen["userChannel"] == f"user:{alice}"
    assert seen["recoverable"] and seen["wasRecovering"] and seen["recovered"]
    assert seen["pubs"] == [{"offset": 1, "data": {"n": 1}}, {"offset": 2, "data": {"n": 2}},
                            {"offset": 3, "data": {"n": 3}}]
    assert seen["refused"] == 103
