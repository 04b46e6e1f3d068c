"""Drills with a real hub process: kill -9 mid-stream and right after the final push, with the
database up and with it stopped (its own throwaway Postgres). Every answer the user was told about
(done or incomplete) has exactly one transcript row; a stream killed mid-way has none claiming it
complete."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ai_assist.models import Transcript
from tests.ai_assist.conftest import OPENAI_KEY
from tests.fakes.ai_upstream import FakeUpstreamServer
from tests.support import HubClient, HubServer, ThrowawayPostgres, migrate, mint, uid

pytestmark = pytest.mark.services


def _env(fake: FakeUpstreamServer, journal: Path) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake.openai_base_url, "ANTHROPIC_API_KEY": "",
            "OPENAI_API_KEY_FILE": "", "ANTHROPIC_API_KEY_FILE": "", "AI_PROVIDERS": "openai",
            "AI_USER_RPM": "100", "AI_TRANSCRIPT_JOURNAL_DIR": str(journal)}


def _final(client: HubClient, assist: str, timeout: float = 10) -> tuple[str, dict[str, Any]]:
    """The text and the final push of one answer."""
    text = ""
    deadline = time.time() + timeout
    while True:
        msg = client.next_push("assist", timeout=max(0.1, deadline - time.time()))
        if msg.get("assist") != assist:
            continue
        if "delta" in msg:
            text += msg["delta"]
        else:
            return text, msg


def _deltas(client: HubClient, assist: str, n: int) -> None:
    for _ in range(n):
        while client.next_push("assist", timeout=10).get("assist") != assist:
            pass


def test_kill_9_mid_stream_and_right_after_the_final_push(fake_server: FakeUpstreamServer,
                                                          tmp_path: Path) -> None:
    fake_server.reset()
    env = _env(fake_server, tmp_path)
    slow = {"kind": "slow", "delay": 0.2, "tokens": 200}
    user = uid("drill")

    # 1. Killed mid-stream: the answer never finished, so no row may claim it did (and none is written).
    hub = HubServer(env=env)
    hub.start()
    try:
        fake_server.inject("openai", slow)
        client = HubClient(hub.url, mint(user))
        cut = client.rpc("assist.ask", prompt="a long answer")["assist"]
        _deltas(client, cut, 2)
        hub.kill()
        client.close()
    finally:
        hub.stop()
    assert not Transcript.objects.filter(id=cut).exists()

    # 2. Killed right after the client got its final pushes (one incomplete, one done), while a
    # third answer is still streaming.
    hub = HubServer(env=env)
    hub.start()
    try:
        fake_server.inject("openai", slow, {"kind": "truncate", "after": 3}, "ok")
        client = HubClient(hub.url, mint(user))
        running = client.rpc("assist.ask", prompt="another long answer")["assist"]
        _deltas(client, running, 1)
        partial = client.rpc("assist.ask", prompt="cut this one short")["assist"]
        partial_text, partial_final = _final(client, partial)
        whole = client.rpc("assist.ask", prompt="answer this one")["assist"]
        whole_text, whole_final = _final(client, whole)
        hub.kill()  # at once: nothing more is written after this
        client.close()
    finally:
        hub.stop()
    assert partial_final["incomplete"] is True and "error" in partial_final
    assert whole_final["done"] is True and whole_final["finish"] == "stop"

    # 3. A new process starts (recovering what the killed one had journaled but not committed):
    # both answers have their row, exactly once; the killed streams have none; nothing is written twice.
    hub = HubServer(env=env)
    hub.start()
    try:
        with HubClient(hub.url, mint(user)) as client:
            after = client.rpc("assist.ask", prompt="still there?")["assist"]
            assert _final(client, after)[1]["done"] is True
    finally:
        hub.stop()
    rows = {r.id: r for r in Transcript.objects.filter(id__in=[cut, running, partial, whole])}
    assert set(rows) == {partial, whole}
    assert (rows[partial].outcome, rows[partial].answer) == ("incomplete", partial_text)
    assert (rows[whole].outcome, rows[whole].answer) == ("ok", whole_text)
    counts = {i: Transcript.objects.filter(id=i).count() for i in (cut, running, partial, whole, after)}
    assert counts == {cut: 0, running: 0, partial: 1, whole: 1, after: 1}
    assert Transcript.objects.filter(user=user).count() == 3


def test_rows_journaled_while_the_database_is_down_are_recovered_at_start_up(
        fake_server: FakeUpstreamServer, tmp_path: Path) -> None:
    import psycopg

    fake_server.reset()
    pg = ThrowawayPostgres()
    pg.init()
    pg.start()
    try:
        migrate({"DATABASE_URL": pg.url})
        env = {**_env(fake_server, tmp_path), "DATABASE_URL": pg.url}
        hub = HubServer(env=env)
        hub.start()
        try:
            client = HubClient(hub.url, mint(uid("drill")))
            pg.stop()
            fake_server.inject("openai", "ok", {"kind": "truncate", "after": 2})
            whole = client.rpc("assist.ask", prompt="the database is down")["assist"]
            whole_text, whole_final = _final(client, whole)
            partial = client.rpc("assist.ask", prompt="and this one is cut")["assist"]
            partial_text, partial_final = _final(client, partial)
            hub.kill()  # the rows exist only in the journal now
            client.close()
        finally:
            hub.stop()
        assert whole_final["done"] is True and partial_final["incomplete"] is True
        (journal,) = tmp_path.glob("*/*.jsonl")
        assert {whole, partial} <= {json.loads(line)["id"] for line in journal.read_text().splitlines()}
        pg.start()
        for _ in range(2):  # a second start-up finds nothing left to write
            hub = HubServer(env=env)
            hub.start()
            hub.stop()
        with psycopg.connect(pg.url) as conn:
            rows = conn.execute("SELECT id, outcome, answer FROM ai_assist_transcript WHERE id = ANY(%s)",
                                [[whole, partial]]).fetchall()
        assert sorted(rows) == sorted([(whole, "ok", whole_text), (partial, "incomplete", partial_text)])
        assert not journal.exists()
    finally:
        pg.destroy()
