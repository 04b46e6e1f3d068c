"""Transcripts: redaction on write, no secrets anywhere, retention, export and erasure."""
from __future__ import annotations

import fcntl
import io
import logging
import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone

from ai_assist import privacy, relay, transcripts
from ai_assist.models import Transcript
from tests.ai_assist.conftest import ANTHROPIC_KEY, OPENAI_KEY, Relay, ask, journaled_ids, new_caller


def test_prompt_and_answer_are_redacted(assist: Relay) -> None:
    assist.fake.configure(tokens=30)
    result, sink = ask("my card 4111 1111 1111 1111 and mail jo@example.com, phone +44 7700 900123")
    assert "4111 1111 1111 1111" in sink.text  # the user gets the real answer...
    row = Transcript.objects.get(id=result.assist)
    for field in (row.prompt, row.answer):  # ...the database only the redacted one
        assert "4111" not in field and "jo@example.com" not in field and "7700" not in field
    assert row.prompt == "my card [card] and mail [email], phone [phone]"


def test_no_keys_in_logs_or_transcripts(assist: Relay, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    who = new_caller()
    # 401s whose bodies quote the key (as the real APIs do), server errors, cuts, malformed chunks, stalls.
    assist.configure(AI_FIRST_TOKEN_TIMEOUT_S="0.3", AI_BREAKER_FAILURES="100")
    assist.fake.inject("openai", "401")
    assist.fake.inject("anthropic", "500", {"kind": "cut", "after": 1})
    ask(who=who)
    assist.fake.configure(valid_keys={"openai": ["other"], "anthropic": ["other"]})
    ask(who=who)
    assist.fake.configure(valid_keys={})
    assist.fake.reset()
    from ai_assist import breaker

    breaker._local.reset()
    assist.fake.inject("openai", {"kind": "malformed", "after": 0}, {"kind": "stall", "seconds": 5}, "529")
    assist.fake.inject("anthropic", "400")
    ask(who=who)
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    rows = privacy.export(who.user)["transcripts"]
    assert len(rows) == 3
    dumped = repr(rows)
    for key in (OPENAI_KEY, ANTHROPIC_KEY, OPENAI_KEY[-12:], ANTHROPIC_KEY[-12:]):
        assert key not in text and key not in dumped
    assert "Bearer" not in text and "authorization" not in text.lower()
    assert "assist.attempt_failed" in text or "attempt" in text  # the failures were logged


def test_export_and_erase_one_user(assist: Relay) -> None:
    a, b = new_caller(), new_caller()
    ask("first", a)
    ask("second", a)
    ask("other", b)
    rows = privacy.export(a.user)["transcripts"]
    assert [r["prompt"] for r in rows] == ["first", "second"]
    assert set(rows[0]) >= {"assist", "prompt", "context", "answer", "provider", "model", "attempts",
                            "fallbacks", "tokens_in", "tokens_out", "latency_ms", "first_token_ms", "outcome",
                            "created_at"}
    assert privacy.erase(a.user, "erased-x")["transcripts"] == 2
    assert privacy.export(a.user)["transcripts"] == []
    assert len(privacy.export(b.user)["transcripts"]) == 1


def _row(user: str, age_days: float) -> Transcript:
    return Transcript.objects.create(id=uuid.uuid4().hex, user=user, prompt="p", outcome="ok",
                                     created_at=timezone.now() - timedelta(days=age_days))


def test_purge_keeps_transcripts_inside_their_retention() -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    Transcript.objects.filter(created_at__lt=timezone.now() - timedelta(days=5)).delete()
    old, mid, new = _row(user, 40), _row(user, 10), _row(user, 1)
    out = io.StringIO()
    call_command("purge", stdout=out)  # HUB_RETAIN_TRANSCRIPTS_DAYS, 30 by default
    assert '"transcripts":1' in out.getvalue()
    assert set(Transcript.objects.filter(user=user).values_list("id", flat=True)) == {mid.id, new.id}
    with override_settings(HUB_RETAIN_TRANSCRIPTS_DAYS=7):
        call_command("purge", stdout=io.StringIO())
    assert set(Transcript.objects.filter(user=user).values_list("id", flat=True)) == {new.id}
    with pytest.raises(CommandError):
        call_command("purge", transcripts_days=0, stdout=io.StringIO())
    assert Transcript.objects.filter(user=user).exists()
    assert old.id not in set(Transcript.objects.values_list("id", flat=True))


# --- durability: every row is journaled before the final push -----------------------------------

def _refuse_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def refuse(rows: list[Transcript]) -> None:
        calls.append(len(rows))
        raise OperationalError("connection refused")

    monkeypatch.setattr(transcripts, "_insert", refuse)
    monkeypatch.setattr(relay, "COMMIT_WAIT_S", 0.2)
    return calls


def _eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_rows_wait_in_the_journal_while_the_database_refuses_them(journal: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_insert = transcripts._insert
    calls = _refuse_writes(monkeypatch)
    first, sink = ask("the database is down")
    second, _ = ask("still down")
    assert sink.final[0] == "done" and first.transcript_written and second.transcript_written
    assert len(calls) >= 1 and not Transcript.objects.filter(id__in=[first.assist, second.assist]).exists()
    assert journaled_ids(journal) == {first.assist, second.assist}
    (path,) = journal.glob("*.jsonl")
    assert "the database is down" in path.read_text()
    monkeypatch.setattr(transcripts, "_insert", real_insert)  # the database is back: the writer's retry goes in
    assert _eventually(lambda: Transcript.objects.filter(id__in=[first.assist, second.assist]).count() == 2)
    row = Transcript.objects.get(id=first.assist)
    assert (row.outcome, row.answer, row.finish) == ("ok", sink.text, "stop")
    assert _eventually(lambda: path.stat().st_size == 0)  # committed rows leave the journal


def test_journal_segments_rotate_and_go_once_committed(journal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_insert = transcripts._insert
    _refuse_writes(monkeypatch)
    monkeypatch.setattr(transcripts, "_SEGMENT_ROWS", 2)
    results = [ask(f"question {i}")[0] for i in range(5)]
    assert len(list(journal.glob("*.jsonl"))) == 3  # 2 + 2 + 1 rows
    assert journaled_ids(journal) == {r.assist for r in results}
    monkeypatch.setattr(transcripts, "_insert", real_insert)
    assert _eventually(lambda: Transcript.objects.filter(id__in=[r.assist for r in results]).count() == 5)
    assert _eventually(lambda: [p.stat().st_size for p in journal.glob("*.jsonl")] == [0])


def test_no_database_and_no_journal_loses_the_row_but_not_the_answer(
        assist: Relay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a-file").write_text("")
    assist.configure(AI_TRANSCRIPT_JOURNAL_DIR=str(tmp_path / "a-file" / "journal"))
    monkeypatch.setattr(transcripts, "_writer", None)
    real_insert = transcripts._insert
    _refuse_writes(monkeypatch)
    result, sink = ask()
    assert sink.final[0] == "done" and not result.transcript_written
    assert "not journaled" in caplog.text
    monkeypatch.setattr(transcripts, "_insert", real_insert)  # the writer still has it in memory
    assert _eventually(lambda: Transcript.objects.filter(id=result.assist).exists())


def _journal_file(directory: Path, rows: list[Transcript], tail: bytes = b"") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"host-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_bytes(b"".join(transcripts._to_line(r) for r in rows) + tail)
    return path


def _built(user: str, outcome: str = "ok") -> Transcript:
    return transcripts.build(assist=uuid.uuid4().hex, user=user, tenant="t", room="", prompt="p",
                             context=[{"from": "bob", "text": "hi"}], answer="a", provider="openai",
                             model="m", attempts=1, fallbacks=[], tokens_in=1, tokens_out=2, latency_ms=3,
                             first_token_ms=1, outcome=outcome, finish="stop" if outcome == "ok" else "")


def test_recover_journals_writes_a_dead_process_file_once(journal: Path) -> None:
    user = f"u{uuid.uuid4().hex[:8]}"
    rows = [_built(user), _built(user, "incomplete"), _built(user)]
    Transcript.objects.bulk_create([rows[2]])  # already committed before the process died
    dead = _journal_file(journal, rows, tail=b'{"id": "torn-by-the-cr')
    alive = _journal_file(journal, [_built(user)])
    fd = os.open(alive, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live process holds its own files
    try:
        assert transcripts.recover_journals() == 3
        assert transcripts.recover_journals() == 0
    finally:
        os.close(fd)
    assert not dead.exists() and alive.exists()
    got = {r.id: r for r in Transcript.objects.filter(user=user)}
    assert set(got) == {r.id for r in rows}
    assert got[rows[1].id].outcome == "incomplete" and got[rows[0].id].context == [{"from": "bob", "text": "hi"}]
    assert transcripts.recover_journals() == 1  # its owner is gone now
    assert Transcript.objects.filter(user=user).count() == 4


def test_recovery_leaves_this_process_journal_alone(journal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_writes(monkeypatch)
    result, _ = ask()
    assert transcripts.recover_journals() == 0  # our own (flocked) file: the writer inserts it
    assert journaled_ids(journal) == {result.assist}


def test_a_partly_written_line_is_cut_off_and_the_next_row_stays_readable(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    journal = transcripts._Journal(tmp_path)
    first, torn, third = _built("u-torn"), _built("u-torn"), _built("u-torn")
    journal.append(first)
    real_write = os.write

    def disk_full(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transcripts.os, "write", disk_full)
    with pytest.raises(OSError):
        journal.append(torn)
    monkeypatch.setattr(transcripts.os, "write", real_write)
    journal.append(third)
    (path,) = tmp_path.glob("*.jsonl")
    assert [r.id for r in transcripts._from_lines(path.read_bytes())] == [first.id, third.id]


def test_recovery_removes_a_journal_never_named(journal: Path) -> None:
    journal.mkdir(parents=True, exist_ok=True)
    stale = journal / "host-1-abc.new"  # its process died between creating and naming it
    stale.write_bytes(b"")
    assert transcripts.recover_journals() == 0
    assert not stale.exists()
