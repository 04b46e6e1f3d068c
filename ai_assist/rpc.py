"""`assist.ask` and `assist.cancel`: schemas and registration; the rules are in ai_assist.actions.

Over the socket `assist.ask` answers `{assist}` at once and the answer follows as `assist` pushes;
the stream is cancelled when the socket closes or on `assist.cancel`. Over HTTP (no push) the
request runs to completion and the result carries the whole answer:
`{assist, text, provider, usage, finish}`.
"""
from __future__ import annotations

from typing import Any

from ai_assist import actions
from hub.rpc import USERS, Caller, method

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
    context = int(params["context"]) if "context" in params else None
    return await actions.ask(caller, params["prompt"], params.get("room", ""), context)


@method("assist.cancel", roles=USERS,
        params={"type": "object", "additionalProperties": False, "required": ["assist"],
                "properties": {"assist": {"type": "string", "minLength": 1, "maxLength": 64}}},
        summary="Stop a running assist answer; no more pushes for it follow this reply.", http=False,
        result={"type": "object", "properties": {"assist": {"type": "string"},
                                                 "cancelled": {"type": "boolean"}}})
async def cancel(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return await actions.cancel(caller, params["assist"])
