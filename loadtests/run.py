"""`make loadtest`: start a hub (or use a running one), run the Locust scenarios headless, judge the run.

    python -m loadtests.run [locust arguments...]      make loadtest ARGS="[locust arguments...]"

Locust's own arguments are passed through after the defaults below, so they win (e.g. `-u 100 -t 2m`,
`--processes 2`). The hub to load is Locust's `--host` / `-H` (or LOCUST_HOST), else HUB_URL; with
none of them it starts, on this machine: a fresh Postgres database (migrated), two hub
processes sharing one port (`manage.py serve --reuse-port`, one Redis), Prometheus multiprocess
metrics, and the fake AI upstream (OPENAI_BASE_URL / ANTHROPIC_BASE_URL point at it). Then
`locust -f loadtests/locustfile.py --headless ...` writes CSV and HTML under loadtests/reports/.
Exit code: non-zero if any request failed or a message was lost or duplicated (or a hub crashed).
While it runs the locustfile prints a progress line every LOADTEST_PROGRESS_S (10) seconds.

Environment: LOCUST_USERS (20), LOCUST_SPAWN_RATE (5), LOCUST_RUN_TIME (30s), LOCUST_SHAPE
(step), HUB_URL, HUB_SECRET, LOADTEST_DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres,
the server to create the fresh database on), LOADTEST_REDIS_URL (redis://127.0.0.1:6379/8, flushed),
LOADTEST_HUBS (2), LOADTEST_PORT (free port), LOADTEST_KEEP_DB (1 keeps the database).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "loadtests" / "reports"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 40) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a process exited early ({p.args!r}, code {p.returncode}); see loadtests/reports")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout}s")


class Stack:
    """The hub processes, the fake upstream and the database this run owns."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.hubs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        self.db_admin_url = ""
        self.db_name = ""
        self.metrics_dir = ""
        self.env: dict[str, str] = {}
        self.http = ""

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(REPORTS / f"{name}.log", "wb")  # closed in stop()
        self.logs.append(log)
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self, secret: str) -> str:
        import psycopg

        admin_url = os.environ.get("LOADTEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        base = admin_url.rpartition("/")[0]
        self.db_admin_url = admin_url
        self.db_name = f"loadtest_{os.getpid()}_{secrets.token_hex(2)}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        redis_url = os.environ.get("LOADTEST_REDIS_URL", "redis://127.0.0.1:6379/8")
        import redis

        redis.Redis.from_url(redis_url, socket_connect_timeout=3).flushdb()
        self.metrics_dir = tempfile.mkdtemp(prefix="hub-metrics-")
        upstream_port = free_port()
        port = int(os.environ.get("LOADTEST_PORT", "0")) or free_port()
        env = dict(os.environ)
        env.update({
            "HUB_ENV": "test", "HUB_SECRET": secret, "DATABASE_URL": f"{base}/{self.db_name}",
            "REDIS_URL": redis_url, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1", "OPENAI_API_KEY": "sk-loadtest-fake-openai",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{upstream_port}",
            "ANTHROPIC_API_KEY": "sk-ant-loadtest-fake-anthropic", "PYTHONDONTWRITEBYTECODE": "1",
            # Every simulated user connects from this one address: per-address socket budgets off.
            "HUB_MAX_SOCKETS_PER_ADDRESS": "1000000", "HUB_NEW_SOCKETS_PER_ADDRESS_PER_S": "1000000",
            # The scenario's providers bid on every job they are told of and customers book and search
            # every few seconds, beyond the per-user domain budgets: those are off (0) here.
            "HUB_MAX_OPEN_BOOKINGS_PER_USER": "0", "HUB_MAX_OPEN_JOBS_PER_USER": "0", "HUB_BIDS_PER_MIN": "0",
            "HUB_CALL_INVITES_PER_MIN": "0", "HUB_MATCH_FIND_PER_MIN": "0",
            # Assist users ask every 2-5 s: about 20 a minute each (AI_USER_RPM's default), and past
            # 350 users the tenant's 600 a minute. The assist budgets have their own tests.
            "AI_USER_RPM": "0", "AI_TENANT_RPM": "0",
        })
        self.env = env
        print(f"loadtest: database {self.db_name}, redis {redis_url}, hubs on port {port}", flush=True)
        subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
        upstream = self.spawn("fake_upstream", [sys.executable, "-m", "tests.fakes.ai_upstream", "--port",
                                                str(upstream_port), "--tokens", "20", "--delay-ms", "5"], env)
        hubs = [self.spawn(f"hub{i}", [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port",
                                       str(port), "--reuse-port"], env)
                for i in range(int(os.environ.get("LOADTEST_HUBS", "2")))]
        self.hubs = hubs
        self.http = f"http://127.0.0.1:{port}"
        wait_http(f"{self.http}/healthz", hubs)
        deadline = time.time() + 20
        while time.time() < deadline:  # the fake upstream answers 404 on / once it listens
            try:
                socket.create_connection(("127.0.0.1", upstream_port), timeout=1).close()
                break
            except OSError:
                if upstream.poll() is not None:
                    raise RuntimeError("fake upstream exited; see loadtests/reports/fake_upstream.log") from None
                time.sleep(0.2)
        time.sleep(1.0)  # both hubs: the second one binds right after the first
        return self.http

    def scrape_metrics(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.http}/metrics", timeout=5) as r:
                (REPORTS / "metrics.txt").write_bytes(r.read())
        except OSError as exc:
            print(f"loadtest: /metrics not scraped ({exc})", flush=True)

    def stop(self) -> int:
        """SIGTERM everything (hubs drain); returns non-zero if a hub exited badly."""
        bad = 0
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                bad = 1
            if proc in self.hubs and proc.returncode not in (0, -signal.SIGTERM):
                print(f"loadtest: hub exited with {proc.returncode}", flush=True)
                bad = 1
        for log in self.logs:
            log.close()
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if self.db_name and os.environ.get("LOADTEST_KEEP_DB") != "1":
            import psycopg

            try:
                with psycopg.connect(self.db_admin_url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"loadtest: could not drop {self.db_name}: {exc}", flush=True)
        return bad


def locust_args() -> list[str]:
    args = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
            "--csv", str(REPORTS / "run"), "--html", str(REPORTS / "report.html"), "--stop-timeout", "10",
            "--only-summary"]
    if os.environ.get("LOCUST_SHAPE") != "step":
        args += ["-u", os.environ.get("LOCUST_USERS", "20"), "-r", os.environ.get("LOCUST_SPAWN_RATE", "5"),
                 "-t", os.environ.get("LOCUST_RUN_TIME", "30s")]
    else:
        args.append("--csv-full-history")  # per-name p95 over time: where the knee is (loadtests.knee)
    return args


def host_option(args: list[str]) -> str:
    """The value of Locust's --host / -H among `args` ("" when absent)."""
    for i, arg in enumerate(args):
        if arg.startswith("--host="):
            return arg.partition("=")[2]
        if arg in ("--host", "-H") and i + 1 < len(args):
            return args[i + 1]
    return ""


def main(argv: list[str] | None = None) -> int:
    REPORTS.mkdir(parents=True, exist_ok=True)
    extra = list(sys.argv[1:] if argv is None else argv)
    secret = os.environ.get("HUB_SECRET") or secrets.token_urlsafe(32)
    stack: Stack | None = None
    code = 1
    given_host = host_option(extra)
    hub_url = given_host or os.environ.get("LOCUST_HOST", "") or os.environ.get("HUB_URL", "")
    try:
        if not hub_url:
            stack = Stack()
            hub_url = stack.start(secret)
        env = dict(stack.env if stack else os.environ)
        env.update({"HUB_URL": hub_url, "HUB_SECRET": secret, "LOADTEST_SUMMARY": str(REPORTS / "summary.json")})
        # The locust process needs no database; keep it from touching the hub's.
        args = locust_args() + ([] if given_host else ["--host", hub_url]) + extra
        print(f"loadtest: {' '.join(args[2:])}", flush=True)
        code = subprocess.run(args, cwd=ROOT, env=env).returncode
        if stack is not None:
            stack.scrape_metrics()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"loadtest: setup failed: {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if stack is not None and stack.stop():
            code = code or 3
    summary = REPORTS / "summary.json"
    if summary.exists():
        print(f"loadtest summary: {json.dumps(json.loads(summary.read_text()))}", flush=True)
    print(f"loadtest: reports in {REPORTS} (run_stats.csv, report.html); exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
