"""The fake upstream speaks what the SDKs expect (strict validation) and is controllable over HTTP."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import anthropic
import openai

from tests.fakes.ai_upstream import FakeUpstreamServer


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_sdks_parse_the_fake_strictly(fake_server: FakeUpstreamServer) -> None:
    fake_server.reset()

    async def run() -> tuple[str, Any, str, int]:
        oc = openai.AsyncOpenAI(api_key="k1", base_url=fake_server.openai_base_url, max_retries=0,
                                _strict_response_validation=True)
        text, usage = "", None
        async for chunk in await oc.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "a b"}], stream=True,
                stream_options={"include_usage": True}):
            text += "".join(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        ac = anthropic.AsyncAnthropic(api_key="k2", base_url=fake_server.anthropic_base_url, max_retries=0,
                                      _strict_response_validation=True)
        atext, out = "", 0
        async for ev in await ac.messages.create(model="m", max_tokens=10, stream=True,
                                                 messages=[{"role": "user", "content": "a b"}]):
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                atext += ev.delta.text
            if ev.type == "message_delta":
                out = ev.usage.output_tokens
        return text, usage, atext, out

    text, usage, atext, out = asyncio.run(run())
    assert text == atext == "echo a b echo a b echo a b echo a b"
    assert usage is not None and usage.completion_tokens == 12 and out == 12


def test_control_endpoints(fake_server: FakeUpstreamServer) -> None:
    assert _post(fake_server.url + "/_reset", {}) == {"ok": True}
    assert _post(fake_server.url + "/_faults", {"openai": ["429", {"kind": "cut", "after": 1}]}) == {
        "openai": 2, "anthropic": 0}

    async def run() -> list[str]:
        oc = openai.AsyncOpenAI(api_key="k", base_url=fake_server.openai_base_url, max_retries=0)
        seen = []
        for _ in range(2):
            try:
                async for _chunk in await oc.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": "x"}], stream=True):
                    pass
                seen.append("ok")
            except openai.APIStatusError as exc:
                seen.append(str(exc.status_code))
            except openai.APIConnectionError:
                seen.append("cut")
        return seen

    assert asyncio.run(run()) == ["429", "cut"]
    with urllib.request.urlopen(fake_server.url + "/_stats", timeout=5) as r:
        stats = json.loads(r.read())
    assert stats["openai"]["requests"] == 2 and stats["openai"]["cuts"] == 1
    assert stats["openai"]["status"] == {"429": 1}


def test_end_faults_as_the_sdks_see_them(fake_server: FakeUpstreamServer) -> None:
    """`truncate` ends the body cleanly: both SDKs end iteration without an error (so the relay must
    check for the end marker itself); `length` / `filtered` end with the limit or filter reason."""
    fake_server.reset()

    async def openai_run(fault: dict[str, Any]) -> tuple[str, list[str | None], bool]:
        oc = openai.AsyncOpenAI(api_key="k", base_url=fake_server.openai_base_url, max_retries=0,
                                _strict_response_validation=True)
        text, reasons, saw_usage = "", [], False
        async for chunk in await oc.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "a b"}], stream=True,
                stream_options={"include_usage": True}, extra_headers={"X-Fake-Fault": json.dumps(fault)}):
            text += "".join(c.delta.content or "" for c in chunk.choices)
            reasons += [c.finish_reason for c in chunk.choices]
            saw_usage = saw_usage or chunk.usage is not None
        return text, reasons, saw_usage

    async def anthropic_run(fault: dict[str, Any]) -> tuple[str, list[str]]:
        ac = anthropic.AsyncAnthropic(api_key="k", base_url=fake_server.anthropic_base_url, max_retries=0)
        text, events = "", []
        async for ev in await ac.messages.create(model="m", max_tokens=10, stream=True,
                                                 messages=[{"role": "user", "content": "a b"}],
                                                 extra_headers={"X-Fake-Fault": json.dumps(fault)}):
            events.append(ev.type if ev.type != "message_delta" else f"message_delta:{ev.delta.stop_reason}")
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                text += ev.delta.text
        return text, events

    text, reasons, saw_usage = asyncio.run(openai_run({"kind": "truncate", "after": 3}))
    assert text == "echo a b" and not any(reasons) and not saw_usage
    text, reasons, _ = asyncio.run(openai_run({"kind": "truncate", "after": 100}))
    assert text == "echo a b echo a b echo a b echo a b" and not any(reasons)
    assert asyncio.run(openai_run({"kind": "length", "tokens": 2}))[1][-1] == "length"
    assert asyncio.run(openai_run({"kind": "filtered", "tokens": 2}))[1][-1] == "content_filter"

    text, events = asyncio.run(anthropic_run({"kind": "truncate", "after": 3}))
    assert text == "echo a b" and events[-1] == "content_block_delta"
    text, events = asyncio.run(anthropic_run({"kind": "truncate", "after": 100}))
    assert events[-2:] == ["content_block_stop", "message_delta:end_turn"]  # no message_stop
    assert asyncio.run(anthropic_run({"kind": "length"}))[1][-2:] == ["message_delta:max_tokens", "message_stop"]
    assert asyncio.run(anthropic_run({"kind": "filtered"}))[1][-2:] == ["message_delta:refusal", "message_stop"]
    stats = fake_server.stats()
    assert stats["openai"]["truncated"] == 2 and stats["anthropic"]["truncated"] == 2
    assert stats["openai"]["completed"] == 2 and stats["anthropic"]["completed"] == 2
