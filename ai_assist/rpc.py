"""`assist.ask` and `assist.cancel`: the socket/HTTP face of the relay.

Over the socket `assist.ask` answers `{assist}` at once and the answer follows as `assist` pushes;
the stream is cancelled when the socket closes or on `assist.cancel`. Over HTTP (no push) the
request runs to completion and the result carries the whole answer:
`{assist, text, provider, usage, finish}`.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from ai_assist import config, relay
from core.errors import HubError
from hub.rpc import USERS, Caller, method, run_sync
from rooms import chat

log = logging.getLogger("ai_assist.rpc")


@dataclass
class _Running:
    user: str
    tenant: str
    client: str | None
    task: asyncio.Task[relay.AssistResult]


RUNNING: dict[str, _Running] = {}
_by_client: dict[str, set[str]] = {}


def _cancel_client(client: str) -> None:
    for assist in _by_client.pop(client, set()):
        running = RUNNING.get(assist)
        if running is not None:
            running.task.cancel()


def _track(assist: str, caller: Caller, task: asyncio.Task[relay.AssistResult]) -> None:
    RUNNING[assist] = _Running(caller.user, caller.tenant, caller.client, task)
    if caller.on_close is not None:
        if caller.client:
            first = caller.client not in _by_client
            _by_client.setdefault(caller.client, set()).add(assist)
            if first:  # one close callback per socket, not one per request
                client = caller.client
                caller.on_close(lambda: _cancel_client(client))
        else:
            def _cancel() -> None:
                task.cancel()

            caller.on_close(_cancel)

    def _done(_: asyncio.Task[relay.AssistResult]) -> None:
        RUNNING.pop(assist, None)
        if caller.client and caller.client in _by_client:
            _by_client[caller.client].discard(assist)

    task.add_done_callback(_done)


async def _stream(caller: Caller, prompt: str, context: list[dict[str, Any]], room: str, assist: str
                  ) -> relay.AssistResult:
    # Let the rpc reply carrying the id go out before the first push.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert caller.push is not None
    try:
        return await relay.run_assist(caller, prompt, context, relay.PushSink(caller.push), assist=assist,
                                      room=room)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("assist %s failed", assist)
        relay.PushSink(caller.push).error(assist, "internal", "internal error", False)
        raise


ASK_PARAMS = {
    "type": "object", "additionalProperties": False, "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "minLength": 1, "maxLength": 8000},
        "room": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^:]+$"},
        "context": {"type": "integer", "minimum": 0, "maximum": 50},
    },
}


@method("assist.ask", roles=USERS, params=ASK_PARAMS,
        summary="Ask the AI assistant; the answer streams as `assist` pushes (HTTP: returned whole).",
        result={"type": "object", "properties": {
            "assist": {"type": "string"}, "text": {"type": "string"}, "provider": {"type": "string"},
            "usage": {"type": "object"}, "finish": {"type": "string", "enum": ["stop", "length", "content_filter"]}}})
async def ask(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    prompt: str = params["prompt"]
    room: str = params.get("room", "")
    count = int(params.get("context", config.get().default_context if room else 0))
    if count and not room:
        raise HubError("bad_request", "context needs a room")
    context = await run_sync(chat.recent_messages, room, caller.user, caller.tenant, count) if room else []
    est = relay.AssistRequest(prompt=prompt, context=context, system=config.get().system_prompt)
    await relay.admit(caller.user, caller.tenant, est.estimated_tokens())
    assist = uuid.uuid4().hex
    if caller.push is None:
        sink = relay.CollectSink()
        result = await relay.run_assist(caller, prompt, context, sink, assist=assist, room=room)
        if sink.failure is not None:
            code, message, _ = sink.failure
            raise HubError(code, message)
        return {"assist": assist, "text": result.text, "provider": result.provider,
                "usage": result.usage.as_dict(), "finish": result.finish}
    task = asyncio.get_running_loop().create_task(_stream(caller, prompt, context, room, assist),
                                                  name=f"assist-{assist}")
    _track(assist, caller, task)
    return {"assist": assist}


@method("assist.cancel", roles=USERS,
        params={"type": "object", "additionalProperties": False, "required": ["assist"],
                "properties": {"assist": {"type": "string", "minLength": 1, "maxLength": 64}}},
        summary="Stop a running assist answer; no more pushes for it follow this reply.", http=False,
        result={"type": "object", "properties": {"assist": {"type": "string"},
                                                 "cancelled": {"type": "boolean"}}})
async def cancel(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    assist = params["assist"]
    running = RUNNING.get(assist)
    if (running is None or (running.tenant, running.user) != (caller.tenant, caller.user)
            or running.task.done()):
        return {"assist": assist, "cancelled": False}  # finished, unknown, or someone else's
    running.task.cancel()
    await asyncio.wait([running.task], timeout=5)
    return {"assist": assist, "cancelled": True}
