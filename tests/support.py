"""Test helpers: a real daphne hub in a subprocess and a real WebSocket client."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
from django.conf import settings
from websockets.sync.client import ClientConnection, connect

from core.errors import HubError
from hub import auth

ROOT = Path(__file__).resolve().parent.parent


def uid(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def code_of(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The code of the HubError `fn(*args, **kwargs)` raises, "ok" when it raises none."""
    try:
        fn(*args, **kwargs)
    except HubError as exc:
        return exc.code
    return "ok"


def mint(user: str, role: str = "customer", tenant: str = "t1", ttl: int = 3600) -> str:
    return auth.mint(user, role, settings.HUB_SECRET, tenant=tenant, ttl=ttl)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubServer:
    """`python manage.py serve` on a spare port, with this test session's database and Redis."""

    def __init__(self, port: int | None = None, env: dict[str, str] | None = None,
                 reuse_port: bool = False, command: list[str] | None = None) -> None:
        self.port = port or free_port()
        # Another server instead of `manage.py serve`: its arguments after the interpreter, with
        # "{port}" standing for the port (e.g. ["-m", "uvicorn", "asgi:application", "--port", "{port}"]).
        self.command = command
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.reuse_port = reuse_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = ROOT / "var" / f"hub-{self.port}-{uuid.uuid4().hex[:6]}.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.log_path.parent.mkdir(exist_ok=True)
        args = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.reuse_port:
            args.append("--reuse-port")
        if self.command is not None:
            args = [sys.executable, *(a.replace("{port}", str(self.port)) for a in self.command)]
        self.logfile = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=self.logfile,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.http + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        log = self.log()
        self.stop(signal.SIGKILL)  # a hub left running after a failed start would outlive the test
        raise RuntimeError(f"hub did not start:\n{log}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@contextlib.contextmanager
def running_hubs(count: int = 1, env: dict[str, str] | None = None) -> Iterator[list[HubServer]]:
    """`count` hub processes with the same extra settings, all stopped on the way out (also when one
    fails to start)."""
    hubs: list[HubServer] = []
    try:
        for _ in range(count):
            hub = HubServer(env=env)
            hubs.append(hub)
            hub.start()
        yield hubs
    finally:
        for hub in hubs:
            hub.stop()


class ReplyError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.error = error


class HubClient:
    """A protocol v1 client over a real WebSocket: replies by id, pushes queued."""

    def __init__(self, url: str, token: str | None = None, binary: bool = False, connect_now: bool = True,
                 open_timeout: float = 10) -> None:
        self.binary = binary
        self.ws: ClientConnection = connect(url, open_timeout=open_timeout, max_size=None,
                                            close_timeout=2)
        self.ids = itertools.count(1)
        self.replies: dict[int, dict[str, Any]] = {}
        self.pushes: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed: tuple[int | None, str] | None = None
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.hello: dict[str, Any] | None = None
        if token is not None and connect_now:
            self.hello = self.call("connect", token=token)

    def _read(self) -> None:
        try:
            for frame in self.ws:
                msg = msgpack.unpackb(frame, raw=False) if isinstance(frame, bytes) else json.loads(frame)
                if "id" in msg and "push" not in msg:
                    with self.cond:
                        self.replies[msg["id"]] = msg
                        self.cond.notify_all()
                else:
                    self.pushes.put(msg)
        except Exception:
            pass
        rcvd = getattr(self.ws.protocol, "close_rcvd", None)
        with self.cond:
            self.closed = (rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "")
            self.cond.notify_all()

    def send_raw(self, frame: str | bytes) -> None:
        self.ws.send(frame)

    def send(self, cmd: str, **fields: Any) -> int:
        cid = next(self.ids)
        frame = {"id": cid, "cmd": cmd, **fields}
        self.ws.send(msgpack.packb(frame, use_bin_type=True) if self.binary else json.dumps(frame))
        return cid

    def wait_reply(self, cid: int, timeout: float = 10) -> dict[str, Any]:
        deadline = time.time() + timeout
        with self.cond:
            while cid not in self.replies:
                if self.closed is not None:
                    raise ConnectionError(f"closed {self.closed}")
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"no reply to {cid}")
                self.cond.wait(left)
            return self.replies.pop(cid)

    def request(self, cmd: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        return self.wait_reply(self.send(cmd, **fields), timeout)

    def call(self, cmd: str, timeout: float = 10, **fields: Any) -> Any:
        reply = self.request(cmd, timeout=timeout, **fields)
        if not reply.get("ok"):
            raise ReplyError(reply["error"])
        return reply["result"]

    def rpc(self, method: str, timeout: float = 10, **params: Any) -> Any:
        return self.call("rpc", timeout=timeout, method=method, params=params)

    def next_push(self, kind: str | None = None, timeout: float = 5, channel: str | None = None,
                  **match: Any) -> dict[str, Any]:
        """The next push of that kind (others stay skipped); TimeoutError when none arrives."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"no {kind} push")
            try:
                msg = self.pushes.get(timeout=left)
            except queue.Empty as exc:
                raise TimeoutError(f"no {kind} push") from exc
            if kind is not None and msg.get("push") != kind:
                continue
            if channel is not None and msg.get("channel") != channel:
                continue
            data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
            if any(data.get(k) != v and msg.get(k) != v for k, v in match.items()):
                continue
            return msg

    def wait_closed(self, timeout: float = 10) -> tuple[int | None, str]:
        deadline = time.time() + timeout
        with self.cond:
            while self.closed is None:
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError("socket not closed")
                self.cond.wait(left)
            return self.closed

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout: float = 10) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


class ThrowawayRedis:
    """A redis-server of the test's own on a spare port: drills may stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("throwaway redis did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class ThrowawayPostgres:
    """initdb + pg_ctl on a spare port, owned by the postgres user (initdb refuses root)."""

    def __init__(self) -> None:
        import glob
        import tempfile

        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="hubpg-")
        self.data = os.path.join(self.dir, "data")
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if self.as_user:
            subprocess.run(["chown", "postgres", self.dir], check=True)
        subprocess.run(self.as_user + [f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        subprocess.run(self.as_user + [f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-l",
                                       os.path.join(self.dir, "log"), "-o",
                                       f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                                       "-c fsync=off", "start"],
                       check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run(self.as_user + [f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def destroy(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT,
                   env={**os.environ, **env}, check=True)


_own_db_seq = itertools.count(1)


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    """DATABASE_URL of a fresh, migrated database beside the session's (same server, or a new
    SQLite file), dropped afterwards. For hub processes whose sweeps must not meet the rows of
    other tests' processes (the session hub sweeps offers with its own settings)."""
    url = os.environ["DATABASE_URL"]
    n = next(_own_db_seq)
    if url.startswith(("postgres://", "postgresql://")):
        import psycopg

        base, _, name = url.rpartition("/")
        # Ends in _<pid> like the session database, so conftest's clean-up of dead runs applies.
        own = f"{name.partition('_hub_')[0]}_hub_own{n}_{os.getpid()}"
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{own}"')
        own_url = f"{base}/{own}"
        try:
            migrate({"DATABASE_URL": own_url})
            yield own_url
        finally:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)')
    else:
        path = ROOT / "var" / f"test-{os.getpid()}-own{n}.sqlite3"
        own_url = f"sqlite:///{path}"
        try:
            migrate({"DATABASE_URL": own_url})
            yield own_url
        finally:
            for p in path.parent.glob(path.name + "*"):
                p.unlink(missing_ok=True)
