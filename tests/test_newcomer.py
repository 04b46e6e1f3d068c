"""A newcomer's first half hour, end to end: `make run` from scratch, the README's commands, a client.

`make run` runs as a subprocess on the embedded default (SQLite in a temporary directory, no Redis,
no Postgres) on a spare port, with none of the test session's settings: it migrates, loads the demo
zones, prints a development token and serves. The test then does what the README tells a newcomer to do.
"""
from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, HubClient, free_port, http_json

VENV_PY = str(ROOT / ".venv" / "bin" / "python")
# The session's own configuration, and a parent make's, must not leak into the newcomer's shell.
SESSION_ONLY = ("DATABASE_URL", "REDIS_URL", "HUB_ENV", "HUB_SECRET", "DJANGO_SECRET_KEY", "PORT", "HOST",
                "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES", "HUB_TEST_EMBEDDED",
                "HUB_TEST_REQUIRE_SERVICES", "DJANGO_SETTINGS_MODULE")


class MakeRun:
    """`make run` in its own session; stdout read line by line, stderr kept in a file."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in SESSION_ONLY}
        self.env.update(DATABASE_URL=f"sqlite:///{tmp / 'hub.sqlite3'}", PORT=str(self.port))
        self.stderr_path = tmp / "make-run.stderr"
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=self.stderr, start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def next_line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty as exc:
            raise AssertionError(f"make run went quiet; so far:\n{self.output()}") from exc
        self.seen.append(line)
        return line

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.time() + timeout
        while True:
            match = re.search(pattern, self.next_line(max(0.1, deadline - time.time())))
            if match:
                return match

    def output(self) -> str:
        return "\n".join(self.seen) + "\n--- stderr ---\n" + self.stderr_path.read_text(errors="replace")[-4000:]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the session this test started, nothing else
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.stderr.close()


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[MakeRun]:
    # `make run` starts with `make install`: already done by `make test`, so a no-op here (no pip).
    fresh = subprocess.run(["make", "-q", ".venv/.installed"], cwd=ROOT, env={**os.environ, "MAKEFLAGS": ""})
    assert fresh.returncode == 0, "the venv is older than requirements.lock: run `make install` first"
    run = MakeRun(tmp_path)
    try:
        yield run
    finally:
        run.stop()


def mint_like_the_readme(env: dict[str, str], user: str, role: str) -> str:
    out = subprocess.run([VENV_PY, "manage.py", "mint_token", "--user", user, "--role", role],
                         cwd=ROOT, env={**env, "HUB_ENV": "development"}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return out.stdout.strip()


def readme_client() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has no Python client example"
    return str(blocks[0])


def test_make_run_then_the_readme(make_run: MakeRun) -> None:
    run = make_run
    run.wait_for(r"^demo: added 3 zones")  # make run loads the demo zones on a fresh database
    run.wait_for(r"^development token")
    token = run.next_line(60).strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), run.output()
    console_url = run.wait_for(r"^console: (http://\S+/console/)").group(1)
    serving = run.wait_for(r"hub serving on http://127\.0\.0\.1:(\d+) .*pid (\d+)")
    assert int(serving.group(1)) == run.port
    serve_pid = int(serving.group(2))
    deadline = time.time() + 30
    while http_json("GET", run.http + "/healthz", timeout=2)[0] != 200:
        assert time.time() < deadline, run.output()
        time.sleep(0.1)

    # The console it printed is served, offering the development sign-in on this loopback hub.
    assert console_url == f"http://127.0.0.1:{run.port}/console/"
    with urllib.request.urlopen(console_url, timeout=10) as page:
        assert page.status == 200 and b'"dev_sign_in": true' in page.read()

    # The printed token connects; the README's user channel is the caller's own.
    me = HubClient(run.ws, token)
    assert me.hello is not None and (me.hello["user"], me.hello["role"]) == ("dev-customer", "customer")
    me.call("subscribe", channel="user:dev-customer")

    # A direct room, asked for twice, is one room; the other member is told and lists it.
    bob = mint_like_the_readme(run.env, "bob", "customer")
    b = HubClient(run.ws, bob)
    b.call("subscribe", channel="user:bob")
    first = me.rpc("rooms.create", members=["bob"], kind="direct")
    again = me.rpc("rooms.create", members=["bob"], kind="direct")
    assert again["room"] == first["room"] and again["created"] is False
    assert b.next_push("pub", channel="user:bob", timeout=10)["data"]["room"] == first["room"]
    assert [r["room"] for r in me.rpc("rooms.list")["rooms"]] == [first["room"]]
    assert [r["room"] for r in b.rpc("rooms.list")["rooms"]] == [first["room"]]

    # The demo data answers a match in central London (no providers yet, but the zone is found).
    found = me.rpc("match.find", lat=51.51, lng=-0.12, category="electrical")
    assert found["zone"] == "demo-central-london"
    assert me.rpc("match.find", lat=51.54, lng=-0.14, category="plumbing")["zone"] == "demo-camden"
    # Empty answers say why: nobody is online in the demo zones, and Paris is in none of them.
    assert found["providers"] == [] and found["reason"] == "no_provider_available"
    assert me.rpc("match.find", lat=48.85, lng=2.35, category="plumbing")["reason"] == "outside_zones"
    job = me.rpc("jobs.create", title="Leaky tap", description="", category="plumbing", lat=51.51, lng=-0.12)
    assert job["notified"] == 0 and job["reason"] == "no_provider_available"

    # A bad frame with an id gets bad_request, and the socket carries on.
    me.send_raw(json.dumps({"id": 999, "cmd": "explode"}))
    assert me.wait_reply(999)["error"]["code"] == "bad_request"
    assert me.call("presence", channel="user:dev-customer")["members"][0]["user"] == "dev-customer"

    # HTTP: unknown /api path 404, GET on a method 405 with Allow, POST works, request ids come back.
    status, body = http_json("GET", run.http + "/api/no.such.method")
    assert status == 404 and body["error"]["code"] == "not_found"
    req = urllib.request.Request(run.http + "/api/rooms.list", method="GET")
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("GET /api/rooms.list was served")
    except urllib.error.HTTPError as e:
        assert e.code == 405 and e.headers["Allow"] == "POST" and e.headers["X-Request-Id"]
    status, body = http_json("POST", run.http + "/api/rooms.list", {}, token=token)
    assert status == 200 and body["result"]["rooms"][0]["room"] == first["room"]

    # The README's client example runs as printed (against this port).
    script = readme_client().replace("127.0.0.1:8000", f"127.0.0.1:{run.port}")
    out = subprocess.run([VENV_PY, "-c", script], cwd=ROOT, env={**run.env, "TOKEN": token},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    replies = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert replies and all(r.get("ok") for r in replies), out.stdout
    assert any(r["result"].get("room") == first["room"] for r in replies if isinstance(r.get("result"), dict))

    # Stop as an operator would: SIGTERM to the server drains (sockets get 1012) and make exits 0.
    os.kill(serve_pid, signal.SIGTERM)
    assert me.wait_closed(timeout=30)[0] == 1012
    assert run.proc.wait(60) == 0, run.output()
    assert "Traceback" not in run.stderr_path.read_text(errors="replace")
