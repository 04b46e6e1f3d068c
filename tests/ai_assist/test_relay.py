"""The relay core against the fake upstream, through the real openai and anthropic SDKs."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_assist import actions, breaker, relay
from ai_assist.models import Transcript
from core import ratelimit
from tests.ai_assist.conftest import RecordingSink, Relay, ask, expected_answer, journaled_ids, new_caller


def test_streams_answer_and_writes_transcript(assist: Relay) -> None:
    who = new_caller()
    result, sink = ask("draft a reply to alice", who)
    assert sink.final == ("done", {"provider": "openai", "usage": {"input_tokens": result.usage.input_tokens,
                                                                    "output_tokens": 12}, "finish": "stop"})
    assert sink.text == expected_answer("draft a reply to alice")
    assert len([e for e in sink.events if e[0] == "delta"]) == 12
    assert result.transcript_written
    row = Transcript.objects.get(id=result.assist)
    assert (row.user, row.tenant, row.provider, row.outcome) == (who.user, who.tenant, "openai", "ok")
    assert row.model == "gpt-4o-mini" and row.attempts == 1 and row.fallbacks == []
    assert row.answer == sink.text and row.tokens_out == 12 and row.tokens_in > 0
    assert row.first_token_ms is not None and row.latency_ms >= row.first_token_ms


def test_retry_then_success(assist: Relay) -> None:
    assist.fake.inject("openai", "500", {"kind": "429", "retry_after": 0.05})
    t0 = time.monotonic()
    result, sink = ask()
    assert sink.final[0] == "done" and sink.final[1]["provider"] == "openai"
    assert result.attempts == 3 and result.fallbacks == []
    assert time.monotonic() - t0 >= 0.05  # the Retry-After was honoured
    stats = assist.fake.stats()
    assert stats["openai"]["requests"] == 3 and stats["anthropic"]["requests"] == 0


def test_first_token_timeout_is_retried_and_the_stalled_stream_closed(assist: Relay) -> None:
    assist.configure(AI_FIRST_TOKEN_TIMEOUT_S="0.3")
    assist.fake.inject("openai", {"kind": "stall", "seconds": 30})
    result, sink = ask()
    assert sink.final[0] == "done" and result.attempts == 2 and result.provider == "openai"
    deadline = time.monotonic() + 2
    while assist.fake.stats()["openai"]["disconnects"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assist.fake.stats()["openai"]["disconnects"] == 1


def test_anthropic_529_and_overloaded_event_are_retried(assist: Relay) -> None:
    assist.configure(AI_PROVIDERS="anthropic")
    assist.fake.inject("anthropic", "529", {"kind": "error_event", "after": 0})
    result, sink = ask()
    assert sink.final == ("done", {"provider": "anthropic", "usage": {"input_tokens": result.usage.input_tokens,
                                                                       "output_tokens": 12}, "finish": "stop"})
    assert result.attempts == 3


def test_fallback_openai_to_anthropic_and_back(assist: Relay) -> None:
    assist.fake.inject("openai", "500", "503", "500")
    result, sink = ask("summarise the job")
    assert sink.final[0] == "done" and sink.final[1]["provider"] == "anthropic"
    assert sink.text == expected_answer("summarise the job")
    assert result.attempts == 4
    assert result.fallbacks == [{"provider": "openai", "reason": "server", "status": 500}]
    row = Transcript.objects.get(id=result.assist)
    assert row.provider == "anthropic" and row.attempts == 4 and row.fallbacks[0]["provider"] == "openai"
    # OpenAI is healthy again: the next request goes back to it.
    result, sink = ask()
    assert sink.final[1]["provider"] == "openai" and result.fallbacks == []
    assert assist.fake.stats()["anthropic"]["requests"] == 1


def test_anthropic_to_openai_fallback(assist: Relay) -> None:
    assist.configure(AI_PROVIDERS="anthropic,openai")
    assist.fake.inject("anthropic", "529", "529", "529")
    _, sink = ask()
    assert sink.final[1]["provider"] == "openai"


def test_long_retry_after_falls_back_at_once(assist: Relay) -> None:
    assist.configure(AI_RETRY_AFTER_CAP_S="1")
    assist.fake.inject("openai", {"kind": "429", "retry_after": 30})
    t0 = time.monotonic()
    result, sink = ask()
    assert sink.final[1]["provider"] == "anthropic"
    assert result.attempts == 2 and time.monotonic() - t0 < 1


def test_bad_request_is_reported_without_fallback(assist: Relay) -> None:
    assist.fake.inject("openai", "400")
    result, sink = ask()
    assert sink.final[0] == "error"
    assert sink.final[1]["code"] == "bad_request" and not sink.final[1]["incomplete"]
    assert assist.fake.stats()["anthropic"]["requests"] == 0
    assert result.attempts == 1
    assert Transcript.objects.get(id=result.assist).outcome == "error"


def test_bad_key_falls_back_and_opens_the_breaker(assist: Relay) -> None:
    assist.fake.inject("openai", "401")
    result, sink = ask()
    assert sink.final[1]["provider"] == "anthropic" and result.attempts == 2  # 401 is not retried
    # The breaker is open: the next request does not even try OpenAI.
    result, sink = ask()
    assert sink.final[1]["provider"] == "anthropic"
    assert result.fallbacks == [{"provider": "openai", "reason": "breaker_open"}]
    assert assist.fake.stats()["openai"]["requests"] == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Iterator[Clock]:
    c = Clock()
    breaker.set_clock(c)
    yield c
    breaker.set_clock(None)


def test_breaker_opens_after_n_failures_then_half_opens_with_a_single_probe(assist: Relay, clock: Clock) -> None:
    assist.configure(AI_BREAKER_FAILURES="3", AI_BREAKER_OPEN_S="1.5", AI_MAX_ATTEMPTS="3")
    assist.fake.inject("openai", "500", "500", "500")
    result, _ = ask()  # three failed attempts -> open
    assert result.provider == "anthropic"
    result, _ = ask()
    assert result.fallbacks == [{"provider": "openai", "reason": "breaker_open"}]
    assert assist.fake.stats()["openai"]["requests"] == 3
    clock.now += 1.6
    # Half-open: of several concurrent requests exactly one probes OpenAI (a slow answer keeps it busy).
    assist.fake.inject("openai", {"kind": "slow", "delay": 0.05})

    async def many() -> list[relay.AssistResult]:
        return await asyncio.gather(*(relay.run_assist(new_caller(), "hi", [], RecordingSink()) for _ in range(5)))

    results = asyncio.run(many())
    assert sorted(r.provider for r in results) == ["anthropic"] * 4 + ["openai"]
    assert assist.fake.stats()["openai"]["requests"] == 4
    # The probe succeeded: closed again, everyone uses OpenAI.
    results = asyncio.run(many())
    assert [r.provider for r in results] == ["openai"] * 5


def test_failed_probe_reopens_the_breaker(assist: Relay, clock: Clock) -> None:
    assist.configure(AI_BREAKER_FAILURES="1", AI_BREAKER_OPEN_S="1.5")
    assist.fake.inject("openai", "500")
    assert ask()[0].provider == "anthropic"
    clock.now += 1.6
    assist.fake.inject("openai", "500", "500")
    result, _ = ask()  # the probe gets one attempt only, fails, and the breaker opens again
    assert result.provider == "anthropic" and result.attempts == 2
    result, _ = ask()
    assert result.fallbacks == [{"provider": "openai", "reason": "breaker_open"}]


def test_mid_stream_cut_is_incomplete_and_never_spliced(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "cut", "after": 4})
    result, sink = ask("tell me about the booking")
    kind, err = sink.final
    assert kind == "error" and err["incomplete"] is True and err["code"] == "unavailable"
    assert sink.text == expected_answer("tell me about the booking")[: len(sink.text)]
    assert len([e for e in sink.events if e[0] == "delta"]) == 4
    stats = assist.fake.stats()
    assert stats["anthropic"]["requests"] == 0 and stats["openai"]["requests"] == 1  # no retry, no splice
    row = Transcript.objects.get(id=result.assist)
    assert row.outcome == "incomplete" and row.answer == sink.text


def test_malformed_chunk_before_first_token_retries_after_it_is_incomplete(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "malformed", "after": 0})
    result, sink = ask()
    assert sink.final[0] == "done" and result.attempts == 2
    assist.fake.inject("openai", {"kind": "malformed", "after": 3})
    result, sink = ask()
    assert sink.final[0] == "error" and sink.final[1]["incomplete"] is True


def test_idle_timeout_after_first_token_is_incomplete(assist: Relay) -> None:
    assist.configure(AI_IDLE_TIMEOUT_S="0.2")
    assist.fake.inject("anthropic", {"kind": "slow", "delay": 2})
    assist.configure(AI_PROVIDERS="anthropic", AI_IDLE_TIMEOUT_S="0.2")
    result, sink = ask()
    assert sink.final[0] == "error" and sink.final[1]["incomplete"] is True
    assert sink.text == "echo"
    assert result.outcome == "incomplete"


def test_cancellation_closes_the_upstream_stream(assist: Relay) -> None:
    for provider in ("openai", "anthropic"):
        assist.fake.reset()
        assist.configure(AI_PROVIDERS=provider)
        assist.fake.inject(provider, {"kind": "slow", "delay": 0.1, "tokens": 200})
        sink = RecordingSink()

        async def go(sink: RecordingSink = sink) -> relay.AssistResult | None:
            task = asyncio.create_task(relay.run_assist(new_caller(), "hi", [], sink))
            await asyncio.wait_for(sink.first_delta.wait(), 5)
            task.cancel()
            try:
                return await task
            except asyncio.CancelledError:
                return None

        assert asyncio.run(go()) is None
        deadline = time.monotonic() + 3
        while assist.fake.stats()[provider]["disconnects"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = assist.fake.stats()[provider]
        assert stats["disconnects"] == 1 and stats["completed"] == 0 and stats["open"] == 0, stats
        assert all(kind == "delta" for kind, _ in sink.events)  # nothing after a cancel
        assert Transcript.objects.filter(outcome="cancelled", provider="").count() >= 1


def test_offline_provider_only_when_no_real_provider_is_configured(assist: Relay) -> None:
    assist.configure(OPENAI_API_KEY="", ANTHROPIC_API_KEY="")
    result, sink = ask("what time is my booking?")
    assert sink.final[0] == "done" and sink.final[1]["provider"] == "offline"
    assert "what time is my booking?" in sink.text
    assert assist.fake.stats()["openai"]["requests"] == 0
    # With real providers configured but failing, the user gets an error, never the offline answer.
    assist.configure(OPENAI_API_KEY="sk-x-1", ANTHROPIC_API_KEY="sk-y-1")
    assist.fake.inject("openai", "500", "500", "500")
    assist.fake.inject("anthropic", "500", "500", "500")
    result, sink = ask()
    assert sink.final == ("error", {"code": "unavailable", "message": sink.final[1]["message"],
                                    "incomplete": False})
    assert result.provider == "" and "offline" not in sink.text


def test_provider_without_key_is_skipped(assist: Relay) -> None:
    assist.configure(OPENAI_API_KEY="")
    result, sink = ask()
    assert sink.final[1]["provider"] == "anthropic" and result.fallbacks == []


def test_rotated_key_file_is_picked_up_without_restart(assist: Relay, tmp_path: object) -> None:
    from pathlib import Path

    from tests.fakes.ai_upstream import key_fingerprint

    key_file = Path(str(tmp_path)) / "openai.key"
    key_file.write_text("sk-rotate-first-000000000\n")
    assist.configure(OPENAI_API_KEY="", AI_PROVIDERS="openai", OPENAI_API_KEY_FILE=str(key_file))
    assist.fake.configure(valid_keys={"openai": ["sk-rotate-first-000000000"]})
    assert ask()[1].final[0] == "done"
    assist.fake.configure(valid_keys={"openai": ["sk-rotate-second-11111111"]})
    key_file.write_text("sk-rotate-second-11111111\n")
    import os

    st = key_file.stat()
    os.utime(key_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    _, sink = ask()
    assert sink.final[0] == "done"
    assert assist.fake.stats()["openai"]["keys"] == [key_fingerprint("sk-rotate-first-000000000"),
                                                     key_fingerprint("sk-rotate-second-11111111")]
    key_file.unlink()  # a removed key file: the provider is no longer configured -> offline
    assert ask()[1].final[1]["provider"] == "offline"


def test_context_is_sent_to_the_provider(assist: Relay) -> None:
    context = [{"from": "alice", "text": "the plumber comes at nine"}]
    _, sink = ask("when?", context=context)
    assert sink.text.startswith("echo Recent messages")
    assistant = relay.AssistRequest(prompt="when?", context=context)
    assert "alice: the plumber comes at nine" in assistant.user_text()


def test_redis_outage_fails_open(assist: Relay, caplog: pytest.LogCaptureFixture) -> None:
    from django.conf import settings

    from core import redis as hubredis

    saved = settings.REDIS_URL, hubredis._sync
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    hubredis._async.clear()
    breaker._redis.clear()
    ratelimit._redis_limiters.clear()
    try:
        asyncio.run(actions.admit("u-outage", "t-outage", 10))  # limited in-process instead
        result, sink = ask()
    finally:
        settings.REDIS_URL, hubredis._sync = saved
        hubredis._async.clear()
        breaker._redis.clear()
        ratelimit._redis_limiters.clear()
    assert sink.final[0] == "done" and result.provider == "openai"
    assert "breaker state unavailable" in caplog.text and "limiting in-process" in caplog.text


# --- complete only on positive evidence ---------------------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_body_ending_cleanly_mid_answer_is_incomplete(assist: Relay, provider: str) -> None:
    assist.configure(AI_PROVIDERS=provider)
    assist.fake.inject(provider, {"kind": "truncate", "after": 4})
    result, sink = ask("tell me about the booking")
    kind, err = sink.final
    assert kind == "error" and err["incomplete"] is True and err["code"] == "unavailable"
    assert "before the answer was complete" in err["message"]
    assert len([e for e in sink.events if e[0] == "delta"]) == 4
    assert sink.text == expected_answer("tell me about the booking")[: len(sink.text)]
    stats = assist.fake.stats()[provider]
    assert stats["requests"] == 1 and stats["truncated"] == 1  # no retry after the first token
    row = Transcript.objects.get(id=result.assist)
    assert row.outcome == "incomplete" and row.answer == sink.text and row.finish == ""


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_every_token_but_no_end_marker_is_incomplete(assist: Relay, provider: str) -> None:
    # OpenAI: no finish_reason chunk; Anthropic: message_delta with its stop_reason, but no message_stop.
    assist.configure(AI_PROVIDERS=provider)
    assist.fake.inject(provider, {"kind": "truncate", "after": 1000})
    result, sink = ask("all of it")
    assert sink.text == expected_answer("all of it")
    assert sink.final[0] == "error" and sink.final[1]["incomplete"] is True
    assert result.outcome == "incomplete"
    assert Transcript.objects.get(id=result.assist).outcome == "incomplete"


def test_clean_end_before_the_first_token_is_retried_then_falls_back(assist: Relay) -> None:
    assist.fake.inject("openai", {"kind": "truncate", "after": 0})
    result, sink = ask("again")
    assert sink.final[0] == "done" and sink.final[1]["finish"] == "stop" and result.attempts == 2
    assert sink.text == expected_answer("again")  # nothing of the empty attempt reached the user
    assist.fake.inject("openai", *[{"kind": "truncate", "after": 0}] * 3)
    result, sink = ask()
    assert sink.final[0] == "done" and sink.final[1]["provider"] == "anthropic"
    assert result.fallbacks == [{"provider": "openai", "reason": "truncated", "status": None}]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(("fault", "finish"), [("length", "length"), ("filtered", "content_filter")])
def test_limit_or_filter_end_is_done_with_its_finish(assist: Relay, provider: str, fault: str,
                                                     finish: str) -> None:
    assist.configure(AI_PROVIDERS=provider)
    assist.fake.inject(provider, {"kind": fault, "tokens": 5})
    result, sink = ask("cut short")
    assert sink.final[0] == "done" and sink.final[1]["finish"] == finish
    assert sink.text == expected_answer("cut short", 5)
    row = Transcript.objects.get(id=result.assist)
    assert (row.outcome, row.finish) == ("ok", finish) and row.as_dict()["finish"] == finish


class _CheckingSink(RecordingSink):
    """At the final push, looks for the transcript row in the journal or the database (from another
    thread, as another process would)."""

    def __init__(self, journal: Path) -> None:
        super().__init__()
        self.journal = journal
        self.durable_at_final: list[str | None] = []

    def _look(self, assist: str) -> None:
        import threading

        def look() -> None:
            from django.db import connection

            # The journal first: a row leaves it only after its commit, so one of the two has it.
            if assist in journaled_ids(self.journal):
                self.durable_at_final.append("journaled")
            else:
                self.durable_at_final.append(
                    Transcript.objects.filter(id=assist).values_list("outcome", flat=True).first())
            connection.close()

        t = threading.Thread(target=look)
        t.start()
        t.join()

    def done(self, assist: str, provider: str, usage: dict[str, int], finish: str) -> None:
        self._look(assist)
        super().done(assist, provider, usage, finish)

    def error(self, assist: str, code: str, message: str, incomplete: bool) -> None:
        self._look(assist)
        super().error(assist, code, message, incomplete)


def test_final_push_is_sent_only_once_the_transcript_is_on_disk(assist: Relay, journal: Path) -> None:
    assist.fake.inject("openai", "ok", {"kind": "truncate", "after": 2}, "400")
    for expected in ("ok", "incomplete", "error"):
        sink = _CheckingSink(journal)
        result = asyncio.run(relay.run_assist(new_caller(), "hi", [], sink))
        assert sink.durable_at_final in ([expected], ["journaled"])
        assert Transcript.objects.get(id=result.assist).outcome == expected
