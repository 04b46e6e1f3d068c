"""assist.ask end to end: a real hub process, a real WebSocket client, the fake upstream via the SDK."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from ai_assist.models import Transcript
from tests.ai_assist.conftest import OPENAI_KEY, expected_answer
from tests.fakes.ai_upstream import FakeUpstreamServer
from tests.support import HubClient, HubServer, mint, uid


@pytest.fixture(scope="module")
def assist_hub(fake_server: FakeUpstreamServer) -> Iterator[HubServer]:
    server = HubServer(env={"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake_server.openai_base_url,
                            "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY_FILE": "", "ANTHROPIC_API_KEY_FILE": "",
                            "AI_PROVIDERS": "openai,anthropic", "AI_USER_RPM": "100"})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _collect(client: HubClient, assist: str, timeout: float = 10) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.time() + timeout
    while True:
        msg = client.next_push("assist", timeout=max(0.1, deadline - time.time()))
        if msg.get("assist") != assist:
            continue
        out.append(msg)
        if msg.get("done") or msg.get("error"):
            return out


def _row(assist: str) -> Transcript:
    # Journaled before the final push; committed by the hub's writer a moment later.
    deadline = time.time() + 5
    while not Transcript.objects.filter(id=assist).exists() and time.time() < deadline:
        time.sleep(0.02)
    return Transcript.objects.get(id=assist)


def _disconnects(fake: FakeUpstreamServer, want: int) -> int:
    deadline = time.time() + 5
    while fake.stats()["openai"]["disconnects"] < want and time.time() < deadline:
        time.sleep(0.05)
    return int(fake.stats()["openai"]["disconnects"])


def test_ask_over_the_socket(assist_hub: HubServer, fake_server: FakeUpstreamServer) -> None:
    fake_server.reset()
    with HubClient(assist_hub.url, mint(uid())) as client:
        res = client.rpc("assist.ask", prompt="draft a polite reply")
        pushes = _collect(client, res["assist"])
    assert "".join(p.get("delta", "") for p in pushes) == expected_answer("draft a polite reply")
    assert pushes[-1]["done"] is True and pushes[-1]["provider"] == "openai"
    assert pushes[-1]["usage"]["output_tokens"] == 12


def test_cancel_and_close_stop_the_upstream(assist_hub: HubServer, fake_server: FakeUpstreamServer) -> None:
    fake_server.reset()
    fake_server.inject("openai", {"kind": "slow", "delay": 0.1, "tokens": 100},
                       {"kind": "slow", "delay": 0.1, "tokens": 100})
    client = HubClient(assist_hub.url, mint(uid()))
    res = client.rpc("assist.ask", prompt="long")
    client.next_push("assist", timeout=5)
    assert client.rpc("assist.cancel", assist=res["assist"]) == {"assist": res["assist"], "cancelled": True}
    assert _disconnects(fake_server, 1) == 1
    client.rpc("assist.ask", prompt="long again")
    client.next_push("assist", timeout=5)
    client.close()  # the socket goes away: the hub's on_close cancels the stream
    assert _disconnects(fake_server, 2) == 2
    assert fake_server.stats()["openai"]["completed"] == 0


def test_room_context_refused_for_non_members(assist_hub: HubServer) -> None:
    alice, eve = uid("alice"), uid("eve")
    with HubClient(assist_hub.url, mint(alice)) as a, HubClient(assist_hub.url, mint(eve)) as e:
        room = a.rpc("rooms.create", members=[uid("bob")], kind="direct")["room"]
        from tests.support import ReplyError

        with pytest.raises(ReplyError) as info:
            e.rpc("assist.ask", prompt="what did they say?", room=room, context=5)
        assert info.value.code == "forbidden"
        res = a.rpc("assist.ask", prompt="what did they say?", room=room, context=5)
        assert _collect(a, res["assist"])[-1]["done"] is True


def test_clean_end_mid_answer_reaches_the_user_as_incomplete(assist_hub: HubServer,
                                                             fake_server: FakeUpstreamServer) -> None:
    fake_server.reset()
    fake_server.inject("openai", {"kind": "truncate", "after": 3})
    with HubClient(assist_hub.url, mint(uid())) as client:
        res = client.rpc("assist.ask", prompt="where is my plumber")
        pushes = _collect(client, res["assist"])
    final = pushes[-1]
    assert [p for p in pushes if "delta" in p] == pushes[:-1] and len(pushes) == 4
    assert final["incomplete"] is True and final["error"]["code"] == "unavailable" and "done" not in final
    text = "".join(p["delta"] for p in pushes[:-1])
    assert text == expected_answer("where is my plumber")[: len(text)]
    row = _row(res["assist"])
    assert row.outcome == "incomplete" and row.answer == text


def test_length_limited_answer_is_done_with_its_finish(assist_hub: HubServer,
                                                       fake_server: FakeUpstreamServer) -> None:
    fake_server.reset()
    fake_server.inject("openai", {"kind": "length", "tokens": 4})
    with HubClient(assist_hub.url, mint(uid())) as client:
        res = client.rpc("assist.ask", prompt="go on")
        pushes = _collect(client, res["assist"])
    assert pushes[-1]["done"] is True and pushes[-1]["finish"] == "length"
    row = _row(res["assist"])
    assert (row.outcome, row.finish, row.answer) == ("ok", "length", expected_answer("go on", 4))
