"""The Locust scenarios load (user classes, step shape) and the loss/duplication tracker is right.

The locustfile is imported in a subprocess: importing Locust monkey-patches the process with
gevent, which must not leak into this test session.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.tracker import StreamTracker, Totals

ROOT = Path(__file__).resolve().parent.parent.parent

_PROBE = """
import json, inspect
import loadtests.locustfile as lf
from locust import LoadTestShape, User
users = {n: c.weight for n, c in vars(lf).items()
         if inspect.isclass(c) and issubclass(c, User) and not c.abstract}
print(json.dumps({"users": users, "shape_abstract": lf.StepLoadShape.abstract,
                  "shape_is_shape": issubclass(lf.StepLoadShape, LoadTestShape),
                  "tick": lf.StepLoadShape().tick()}))
"""


def probe(**env: str) -> dict[str, object]:
    full = {**os.environ, "HUB_SECRET": "x" * 40, **env}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=full, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_locustfile_has_every_flow_and_the_step_shape() -> None:
    info = probe(LOCUST_SHAPE="step", LOCUST_STEP_USERS="4", LOCUST_USERS="10", LOCUST_RUN_TIME="60s")
    users = info["users"]
    assert isinstance(users, dict)
    assert set(users) == {"ChatUser", "ProviderUser", "CustomerUser", "JobPoster", "CallerUser",
                                  "AssistUser"}
    assert info["shape_is_shape"] and info["shape_abstract"] is False
    assert info["tick"] == [4, 5.0]
    # Without LOCUST_SHAPE=step the shape stays abstract, so -u/-r/-t drive the run.
    assert probe()["shape_abstract"] is True


def test_tracker_in_order_is_clean() -> None:
    t = StreamTracker(Totals())
    t.start("chat:r", 5, "e1")
    assert [t.see("chat:r", o) for o in (6, 7, 8)] == ["ok", "ok", "ok"]
    assert (t.lost, t.duplicated) == (0, 0)
    assert t.totals.received == 3
    assert t.see("chat:other", 1) == "untracked"


def test_tracker_counts_gaps_and_duplicates() -> None:
    totals = Totals()
    t = StreamTracker(totals)
    t.start("chat:r", 0, "e1")
    t.see("chat:r", 1)
    assert t.see("chat:r", 4) == "gap"  # 2 and 3 lost: order is guaranteed, they never come
    assert t.see("chat:r", 3) == "dup"
    assert t.see("chat:r", 4) == "dup"
    assert (t.lost, t.duplicated) == (2, 2)
    assert totals.snapshot()["lost"] == 2 and totals.bad


def test_tracker_recovery() -> None:
    t = StreamTracker(Totals())
    t.start("chat:r", 3, "e1")
    t.see("chat:r", 4)
    assert t.since("chat:r") == {"offset": 4, "epoch": "e1"}
    ok = t.recovered("chat:r", {"recovered": True, "epoch": "e1", "offset": 7,
                                "pubs": [{"offset": 5}, {"offset": 6}, {"offset": 7}]})
    assert ok and t.last["chat:r"] == 7 and (t.lost, t.duplicated, t.recovery_failed) == (0, 0, 0)
    # A recovery that skips one offset, and one whose head is past its last pub: both losses.
    t.recovered("chat:r", {"recovered": True, "epoch": "e1", "offset": 9, "pubs": [{"offset": 9}]})
    assert t.lost == 1
    t.recovered("chat:r", {"recovered": True, "epoch": "e1", "offset": 12, "pubs": [{"offset": 10}]})
    assert t.lost == 3 and t.last["chat:r"] == 12
    # Not recovered (or another epoch): a failed recovery; tracking restarts at the head.
    assert not t.recovered("chat:r", {"recovered": False, "epoch": "e2", "offset": 20, "pubs": []})
    assert t.recovery_failed == 1 and t.since("chat:r") == {"offset": 20, "epoch": "e2"}
    assert t.totals.snapshot()["recoveries"] == 4


def test_tracker_tail_and_merge() -> None:
    totals = Totals()
    t = StreamTracker(totals)
    t.start("chat:r", 0, "e")
    t.ack("chat:r", 1)
    t.ack("chat:r", 3)
    t.see("chat:r", 1)
    assert t.tail_missing() == 2
    assert t.finish() == 2 and t.finish() == 0  # counted once
    master = Totals()
    master.merge(totals.snapshot())
    master.merge({"duplicated": 1, "unknown": 5})
    assert master.snapshot()["lost"] == 2 and master.snapshot()["duplicated"] == 1 and master.bad


def test_knee_is_the_first_step_with_a_slow_name() -> None:
    from loadtests.knee import knee, steps

    def row(users: int, ts: int, name: str, p95: str) -> dict[str, str]:
        return {"User Count": str(users), "Timestamp": str(ts), "Name": name, "95%": p95}

    rows = [row(100, 0, "jobs.bid", "900"),  # before the step settled: ignored
            row(100, 20, "jobs.bid", "120"), row(100, 20, "assist", "5000"),  # whole AI answer: left out
            row(200, 40, "jobs.bid", "300"), row(200, 60, "jobs.bid", "1400"), row(200, 60, "publish", "20"),
            row(300, 80, "jobs.bid", "N/A"), row(300, 100, "jobs.bid", "2000"),
            row(100, 120, "jobs.bid", "30000")]  # the run stopping: ignored
    by_users = steps(rows, settle_s=10)
    assert by_users == {100: {"jobs.bid": 120.0}, 200: {"jobs.bid": 1400.0, "publish": 20.0},
                        300: {"jobs.bid": 2000.0}}
    assert knee(by_users, 1000) == (200, "jobs.bid", 1400.0)
    assert knee(by_users, 5000) is None


_HOST_PROBE = """
import json, sys
import gevent
from locust import events
from locust.env import Environment
import loadtests.locustfile as lf
before = [lf.HTTP_URL, lf.WS_URL]
env = Environment(user_classes=[lf.ChatUser], events=events, host="https://hub.example:8443/ws")
env.create_local_runner()
events.init.fire(environment=env, runner=env.runner, web_ui=None)
gevent.sleep(0.5)  # a few progress lines (LOADTEST_PROGRESS_S)
print(json.dumps({"env": before, "host": [lf.HTTP_URL, lf.WS_URL]}))
"""


def test_locust_host_is_the_hub_and_progress_is_printed() -> None:
    full = {**os.environ, "HUB_SECRET": "x" * 40, "LOCUST_HOST": "ws://127.0.0.2:9000/ws", "HUB_URL": "",
            "LOADTEST_PROGRESS_S": "0.1"}
    done = subprocess.run([sys.executable, "-c", _HOST_PROBE], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=120, check=True)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["env"] == ["http://127.0.0.2:9000", "ws://127.0.0.2:9000/ws"]  # LOCUST_HOST
    assert info["host"] == ["https://hub.example:8443", "wss://hub.example:8443/ws"]  # --host
    progress = [line for line in done.stderr.splitlines() if line.startswith("loadtest progress:")]
    assert progress and "users" in progress[0] and "failures" in progress[0] and "lost 0" in progress[0]


def test_run_passes_locust_arguments_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from loadtests import run

    calls: list[list[str]] = []

    def fake_run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(run.subprocess, "run", fake_run)
    monkeypatch.delenv("LOCUST_HOST", raising=False)
    monkeypatch.setenv("HUB_URL", "http://127.0.0.1:8765")  # a running hub: no stack is started
    assert run.main(["-u", "50", "-t", "2m"]) == 0
    args = calls[-1]
    assert args[args.index("--host") + 1] == "http://127.0.0.1:8765"
    assert args[-4:] == ["-u", "50", "-t", "2m"]  # after the defaults: Locust takes the last value
    # --host among the arguments names the hub (and no stack is started either).
    monkeypatch.delenv("HUB_URL")
    assert run.main(["--host=http://10.0.0.5:8000", "-u", "3"]) == 0
    assert "--host=http://10.0.0.5:8000" in calls[-1] and "--host" not in calls[-1]
    assert run.host_option(["-H", "http://h:1"]) == "http://h:1" and run.host_option(["-u", "1"]) == ""
