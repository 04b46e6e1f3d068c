"""Fixtures for the AI assist relay: a fake upstream on its own thread and a configured relay."""
from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from ai_assist import breaker, relay, transcripts
from core import ratelimit
from hub.rpc import Caller
from tests.fakes.ai_upstream import FakeUpstreamServer

OPENAI_KEY = "sk-test-openai-" + "a1b2c3d4e5f6a7b8c9d0"
ANTHROPIC_KEY = "sk-ant-test-" + "f0e9d8c7b6a5f4e3d2c1"


# Transcript journals of this session (this process and the hubs it starts) go to a directory of
# its own, removed at the end, instead of piling up under var/ with one directory per test database.
_JOURNALS = tempfile.mkdtemp(prefix="assist-journal-")
os.environ["AI_TRANSCRIPT_JOURNAL_DIR"] = _JOURNALS


@pytest.fixture(scope="session", autouse=True)
def _session_journals() -> Iterator[None]:
    yield
    shutil.rmtree(_JOURNALS, ignore_errors=True)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeUpstreamServer]:
    srv = FakeUpstreamServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def _clear_shared_state() -> None:
    breaker._local.reset()
    ratelimit._local = ratelimit.LocalLimiter()
    breaker._redis.clear()
    ratelimit._redis_limiters.clear()
    from core import redis as hubredis

    # redis.asyncio clients are bound to the loop that made them; each test runs its own loop.
    hubredis._async.clear()
    client = hubredis.sync_client()
    if client is not None:
        for pattern in ("{ai-br:*", "{rl}:*"):
            for key in client.scan_iter(match=pattern, count=500):
                client.delete(key)


@dataclass
class Relay:
    fake: FakeUpstreamServer
    monkeypatch: pytest.MonkeyPatch

    def configure(self, **env: Any) -> None:
        """Set AI_* env vars (None removes one) and the provider settings, then rebuild the relay."""
        for name, value in env.items():
            if name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
                self.monkeypatch.setattr(settings, name, value or "", raising=False)
            elif value is None:
                self.monkeypatch.delenv(name, raising=False)
            else:
                self.monkeypatch.setenv(name, str(value))
        relay.reset()


@pytest.fixture()
def assist(fake_server: FakeUpstreamServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relay]:
    """Both providers pointed at the fake, fast retries, small breaker timings; state cleared."""
    fake_server.reset()
    _clear_shared_state()
    r = Relay(fake_server, monkeypatch)
    for name in list(os.environ):
        if (name.startswith("AI_") or name.endswith("_API_KEY_FILE")) and name != "AI_TRANSCRIPT_JOURNAL_DIR":
            monkeypatch.delenv(name, raising=False)
    r.configure(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake_server.openai_base_url,
                ANTHROPIC_API_KEY=ANTHROPIC_KEY, ANTHROPIC_BASE_URL=fake_server.anthropic_base_url,
                AI_RETRY_BASE_S="0.01", AI_RETRY_MAX_S="0.05", AI_FIRST_TOKEN_TIMEOUT_S="5",
                AI_IDLE_TIMEOUT_S="5")
    try:
        yield r
    finally:
        _clear_shared_state()
        relay.reset()


@pytest.fixture()
def journal(assist: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh transcript writer journaling under tmp_path; returns its journal directory."""
    assist.configure(AI_TRANSCRIPT_JOURNAL_DIR=str(tmp_path / "journal"))
    monkeypatch.setattr(transcripts, "_writer", None)
    return transcripts.journal_dir()


def journaled_ids(directory: Path) -> set[str]:
    return {r.id for path in directory.glob("*.jsonl") for r in transcripts._from_lines(path.read_bytes())}


def new_caller(role: str = "customer") -> Caller:
    """A fresh customer in a fresh tenant."""
    return Caller(f"u{uuid.uuid4().hex[:10]}", role, f"t{uuid.uuid4().hex[:8]}")


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.first_delta = asyncio.Event()

    def delta(self, assist: str, text: str) -> None:
        self.events.append(("delta", text))
        self.first_delta.set()

    def done(self, assist: str, provider: str, usage: dict[str, int], finish: str) -> None:
        self.events.append(("done", {"provider": provider, "usage": usage, "finish": finish}))

    def error(self, assist: str, code: str, message: str, incomplete: bool) -> None:
        self.events.append(("error", {"code": code, "message": message, "incomplete": incomplete}))

    @property
    def text(self) -> str:
        return "".join(v for k, v in self.events if k == "delta")

    @property
    def final(self) -> tuple[str, Any]:
        return self.events[-1]


def ask(prompt: str = "hello relay", who: Caller | None = None, context: list[dict[str, Any]] | None = None
        ) -> tuple[relay.AssistResult, RecordingSink]:
    sink = RecordingSink()
    result = asyncio.run(relay.run_assist(who or new_caller(), prompt, context or [], sink))
    return result, sink


def expected_answer(user_text: str, tokens: int = 12) -> str:
    words = ("echo " + user_text).split()
    return "".join((" " if i else "") + words[i % len(words)] for i in range(tokens))


class SocketCaller:
    """A Caller with a push function and on_close callbacks, like the socket engine builds."""

    def __init__(self, user: str | None = None) -> None:
        self.pushes: list[dict[str, Any]] = []
        self.closers: list[Callable[[], None]] = []
        self.got = asyncio.Event()
        self.caller = Caller(user=user or f"u{uuid.uuid4().hex[:10]}", role="customer", tenant="t1",
                                 client=f"c{uuid.uuid4().hex[:8]}", push=self._push, on_close=self.closers.append)

    def _push(self, frame: dict[str, Any]) -> None:
        self.pushes.append(frame)
        self.got.set()

    async def until(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.pushes):
            self.got.clear()
            await asyncio.wait_for(self.got.wait(), max(0.01, deadline - time.monotonic()))

    def close(self) -> None:
        for cb in self.closers:
            cb()


def final_push(pushes: list[dict[str, Any]]) -> bool:
    return any(p.get("done") or p.get("error") for p in pushes)
