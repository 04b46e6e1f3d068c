"""The rules of asking the assistant and of stopping an answer.

`ask` checks the request (context needs a room; the room's messages come from the rooms app's
chat action, which admits members only), charges the caller's budgets, then answers: whole over
HTTP (no socket to push to), or as `assist` pushes from a task tracked per socket, which `cancel`
and the socket's close stop. The relay (relay.py) is the transport-free core both run.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from ai_assist import config, relay
from core import metrics
from core.errors import BAD_REQUEST, RATE_LIMITED, TOO_LARGE, HubError
from core.ratelimit import Limit, limiter
from hub.rpc import Caller, run_sync
from rooms.actions import chat

log = logging.getLogger("ai_assist.actions")


# --- budgets ----------------------------------------------------------------------------------

def _limits(user: str, tenant: str, requests: int, tokens: int) -> list[Limit]:
    cfg = config.get()
    # A user's budget is their tenant's user's: two tenants' `alice` never share one.
    who = f"{tenant}/{user}"
    return [Limit(f"u:{who}:rpm", cfg.user_rpm, requests), Limit(f"t:{tenant}:rpm", cfg.tenant_rpm, requests),
            Limit(f"u:{who}:tpm", cfg.user_tpm, tokens), Limit(f"t:{tenant}:tpm", cfg.tenant_tpm, tokens)]


async def admit(user: str, tenant: str, estimated_tokens: int) -> None:
    """Charge one request and the estimated input tokens, or refuse with rate_limited."""
    limits = _limits(user, tenant, 1, estimated_tokens)
    if any(lim.impossible() for lim in limits if lim.per_minute > 0):
        raise HubError(TOO_LARGE, "the request is larger than the token limit allows")
    wait_ms = await limiter().acquire(limits)
    if wait_ms:
        metrics.rate_limited("assist")
        raise HubError(RATE_LIMITED, "too many assist requests; retry later", retry_after_ms=wait_ms)


async def charge_answer(user: str, tenant: str, result: relay.AssistResult) -> None:
    """The relay's `charge`: output tokens, known only after the answer, are charged unconditionally
    (they slow the next requests) for every answer that reached the user, in part or whole."""
    tokens = result.usage.output_tokens
    if result.outcome in ("ok", "incomplete", "cancelled") and tokens > 0:
        try:
            await limiter().acquire(_limits(user, tenant, 0, tokens), force=True)
        except Exception as exc:  # noqa: BLE001 - accounting must not fail a finished answer
            log.warning("assist token accounting failed: %s", type(exc).__name__)


# --- running answers, per socket ----------------------------------------------------------------

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
                                      room=room, charge=charge_answer)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("assist %s failed", assist)
        relay.PushSink(caller.push).error(assist, "internal", "internal error", False)
        raise


# --- the actions ------------------------------------------------------------------------------

async def ask(caller: Caller, prompt: str, room: str = "", context: int | None = None) -> dict[str, Any]:
    """Start an answer to `prompt`, with the last `context` messages of `room` (default
    AI_DEFAULT_CONTEXT when a room is given). Over a socket returns `{assist}` at once and the
    answer follows as pushes; without one (HTTP) returns the whole answer or raises its error."""
    count = context if context is not None else (config.get().default_context if room else 0)
    if count and not room:
        raise HubError(BAD_REQUEST, "context needs a room")
    messages = await run_sync(chat.recent_messages, room, caller.user, caller.tenant, count) if room else []
    est = relay.AssistRequest(prompt=prompt, context=messages, system=config.get().system_prompt)
    await admit(caller.user, caller.tenant, est.estimated_tokens())
    assist = uuid.uuid4().hex
    if caller.push is None:
        sink = relay.CollectSink()
        result = await relay.run_assist(caller, prompt, messages, sink, assist=assist, room=room,
                                        charge=charge_answer)
        if sink.failure is not None:
            code, message, _ = sink.failure
            raise HubError(code, message)
        return {"assist": assist, "text": result.text, "provider": result.provider,
                "usage": result.usage.as_dict(), "finish": result.finish}
    task = asyncio.get_running_loop().create_task(_stream(caller, prompt, messages, room, assist),
                                                  name=f"assist-{assist}")
    _track(assist, caller, task)
    return {"assist": assist}


async def cancel(caller: Caller, assist: str) -> dict[str, Any]:
    """Stop a running answer of the caller's; once this returns no more pushes for it follow."""
    running = RUNNING.get(assist)
    if (running is None or (running.tenant, running.user) != (caller.tenant, caller.user)
            or running.task.done()):
        return {"assist": assist, "cancelled": False}  # finished, unknown, or someone else's
    running.task.cancel()
    await asyncio.wait([running.task], timeout=5)
    return {"assist": assist, "cancelled": True}
