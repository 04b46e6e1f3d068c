"""The multi-host drill (bench/drill.py), reduced: 150 clients chat and bid through HAProxy while each
of the two hubs is rolled (SIGTERM, drain, restart) and then one is killed with SIGKILL.

It runs the drill as `make drill` does, on this session's database and Redis, and asserts what the
drill checks: every acknowledged publication reached every member of its room exactly once, in
order; nothing stored twice; every recovery succeeded; every client came back each time; every
acknowledged bid reached its bidder and the job's owner.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.services


def test_two_hubs_rolled_and_killed_behind_haproxy_lose_and_duplicate_nothing() -> None:
    db, redis = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    assert db.startswith(("postgres://", "postgresql://")) and redis, \
        "the drill needs Postgres and Redis (DATABASE_URL, REDIS_URL)"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.drill", "--clients", "150", "--steady", "1", "--pub-interval", "1",
         "--bid-interval", "2", "--back-timeout", "60", "--reconnect-jitter", "0.5", "--no-kill-restart",
         "--database-url", db, "--redis-url", redis],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    result = json.loads(lines[-1])
    report = "\n".join(lines[-25:]) + proc.stderr[-2000:]
    assert "error" not in result, report
    assert result["clients"] == 150
    names = list(result["events"])
    assert names[:2] == ["roll_hub1", "roll_hub2"] and len(names) == 3 and names[2].startswith("kill9_"), report
    for name, event in result["events"].items():
        assert event["affected"] > 0, f"{name} disturbed nobody: {report}"
        assert event["not_back"] == 0 and event["all_back_s"] is not None, f"{name}: {report}"
    assert result["acked_publications"] > 500, report
    assert result["bids_acked"] > 0 and result["bids_in_db"] == result["bids_acked"], report
    for key in ("lost_acked", "gaps", "duplicate_deliveries", "duplicate_publications", "key_mismatch",
                "ack_conflicts", "recover_failed", "streams_behind_head", "bids_missing_for_bidder",
                "bids_missing_for_owner", "load_tasks_unfinished"):
        assert result[key] == 0, f"{key}: {report}"
    assert result["recoveries"] >= 300, report  # every affected client resubscribed both channels with since
    assert result["ok"] and proc.returncode == 0, report
