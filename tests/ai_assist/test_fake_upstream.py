"""The fake upstream speaks what the SDKs expect (strict validation) and is controllable over HTTP."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import anthropic
import openai

from ai_assist.fake_upstream import FakeUpstreamServer


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
