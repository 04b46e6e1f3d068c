"""rooms.*, jobs.* and calls.* (also POST /api/<method>) and the chat/job/call namespaces: schemas and
declarations only; the rules are in rooms.actions (chat, jobs, calls)."""
from __future__ import annotations

from typing import Any

from django.conf import settings

from hub.channels import Namespace
from hub.rpc import PROVIDERS, USERS, Caller, method
from rooms.actions import calls, chat, jobs

# --- namespaces ------------------------------------------------------------------------------

CHAT = Namespace("chat", can_subscribe=chat.member_hook, can_publish=chat.member_hook,
                 can_signal=chat.member_hook, admin_read=True, in_tenant=chat.in_tenant)
# Only the server publishes on job:<id> and call:<id> (can_publish stays `never`).
JOB = Namespace("job", can_subscribe=jobs.subscribe_hook, admin_read=True, in_tenant=jobs.in_tenant)
CALL = Namespace("call", can_subscribe=calls.subscribe_hook, can_signal=calls.signal_hook,
                 window_s=settings.HUB_CALL_WINDOW_S)
NAMESPACES = (CHAT, JOB, CALL)


# --- rooms.* ---------------------------------------------------------------------------------

ROOM_ITEM = {"type": "object", "properties": {
    "room": {"type": "string"}, "kind": {"enum": ["direct", "booking"]}, "ref": {"type": "string"},
    "members": {"type": "array", "items": {"type": "string"}}, "created_by": {"type": "string"},
    "created_at": {"type": "integer", "description": "ms since the epoch"}}}


@method("rooms.create", roles=USERS,
        summary="Create a chat room with members (the caller joins); a direct room is one per pair.",
        params={"type": "object", "additionalProperties": False, "required": ["members", "kind"],
                "properties": {
                    "members": {"type": "array", "minItems": 1, "maxItems": 100,
                                "items": {"type": "string", "minLength": 1, "maxLength": 128,
                                          "pattern": "^[^:]+$"}},
                    "kind": {"enum": ["direct", "booking"]},
                    "ref": {"type": "string", "maxLength": 128}}},
        result={"type": "object", "properties": {
            "room": {"type": "string"}, "members": {"type": "array", "items": {"type": "string"}},
            "created": {"type": "boolean", "description": "false when an existing direct room came back"}}})
def rooms_create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return chat.create_room(caller, params["members"], params["kind"], params.get("ref", ""))


@method("rooms.list", roles=USERS, summary="The caller's rooms, newest first (pages of at most 100).",
        params={"type": "object", "additionalProperties": False, "properties": {
            "limit": {"type": "integer", "minimum": 1, "maximum": chat.LIST_MAX},
            "cursor": {"type": "string", "minLength": 1, "maxLength": 200,
                       "description": "`next` of the previous page"}}},
        result={"type": "object", "properties": {
            "rooms": {"type": "array", "items": ROOM_ITEM},
            "next": {"type": ["string", "null"], "description": "cursor of the next page; null at the end"}}})
def rooms_list(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return chat.list_rooms(caller, params.get("limit", chat.LIST_LIMIT), params.get("cursor"))


# --- jobs.* ----------------------------------------------------------------------------------

_JOB_ID = {"type": "string", "minLength": 1, "maxLength": 32}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 4000}
_JOB = {"type": "object", "additionalProperties": False, "required": ["job"], "properties": {"job": _JOB_ID}}
_RESULT_STATUS = {"type": "object", "properties": {"job": {"type": "string"}, "status": {"type": "string"}}}


@method("jobs.create", roles=jobs.POSTERS, summary="Post a custom job; matched providers get job.new.",
        serial=jobs.job_queue,
        batch=lambda calls: jobs.create_jobs([jobs.JobRequest(
            c, p["title"], p.get("description", ""), p["category"], p["lat"], p["lng"], p.get("budget"),
            p.get("currency")) for c, p in calls]),
        params={"type": "object", "additionalProperties": False,
                "required": ["title", "description", "category", "lat", "lng"],
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": {"type": "string", "maxLength": 5000},
                    "category": {"type": "string", "minLength": 1, "maxLength": 64},
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "lng": {"type": "number", "minimum": -180, "maximum": 180},
                    "budget": {"type": "integer", "minimum": 1, "maximum": jobs.MAX_AMOUNT},
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}},
        result=_RESULT_STATUS)
def jobs_create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.create_job(caller, params["title"], params.get("description", ""), params["category"],
                           params["lat"], params["lng"], params.get("budget"), params.get("currency"))


@method("jobs.bid", roles=PROVIDERS, summary="Bid on an open job (replaces your earlier bid).",
        serial=lambda caller, params: jobs.bid_queue(caller, params["job"]),
        batch=lambda calls: jobs.place_bids([jobs.BidRequest(c, p["job"], p["amount"], p["currency"],
                                                             p.get("note", "")) for c, p in calls]),
        params={"type": "object", "additionalProperties": False, "required": ["job", "amount", "currency"],
                "properties": {"job": _JOB_ID,
                               "amount": {"type": "integer", "minimum": 1, "maximum": jobs.MAX_AMOUNT},
                               "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                               "note": {"type": "string", "maxLength": 2000}}},
        result={"type": "object", "properties": {"bid": {"type": "string"},
                                                 "replaces": {"type": ["string", "null"]}}})
def jobs_bid(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.bid(caller, params["job"], params["amount"], params["currency"],
                    params.get("note", ""))


@method("jobs.accept", roles=jobs.POSTERS, summary="Accept one bid (owner only); bidders are told.",
        params={"type": "object", "additionalProperties": False, "required": ["job", "bid"],
                "properties": {"job": _JOB_ID, "bid": {"type": "string", "minLength": 1, "maxLength": 32}}},
        result=_RESULT_STATUS)
def jobs_accept(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.accept(caller, params["job"], params["bid"])


@method("jobs.start", roles=PROVIDERS, summary="The accepted provider starts work.", params=_JOB,
        result=_RESULT_STATUS)
def jobs_start(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.start(caller, params["job"])


@method("jobs.complete", roles=USERS, summary="Owner or accepted provider completes the job.", params=_JOB,
        result=_RESULT_STATUS)
def jobs_complete(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.complete(caller, params["job"])


@method("jobs.cancel", roles=USERS, summary="Cancel with a reason (owner, accepted provider, admin).",
        params={"type": "object", "additionalProperties": False, "required": ["job", "reason"],
                "properties": {"job": _JOB_ID, "reason": {"type": "string", "minLength": 1, "maxLength": 1000}}},
        result=_RESULT_STATUS)
def jobs_cancel(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.cancel(caller, params["job"], params["reason"])


@method("jobs.comment", roles=USERS, summary="Comment on a job you are on (owner, bidders, askers, admins).",
        params={"type": "object", "additionalProperties": False, "required": ["job", "text"],
                "properties": {"job": _JOB_ID, "text": _TEXT}},
        result={"type": "object", "properties": {"comment": {"type": "string"},
                                                 "offset": {"type": "integer"}}})
def jobs_comment(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.comment(caller, params["job"], params["text"])


@method("jobs.ask", roles=PROVIDERS, summary="Ask the owner a question about a job (providers).",
        params={"type": "object", "additionalProperties": False, "required": ["job", "text"],
                "properties": {"job": _JOB_ID, "text": _TEXT}},
        result={"type": "object", "properties": {"query": {"type": "string"}}})
def jobs_ask(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.ask(caller, params["job"], params["text"])


@method("jobs.answer", roles=jobs.POSTERS, summary="The owner answers a query.",
        params={"type": "object", "additionalProperties": False, "required": ["job", "query", "text"],
                "properties": {"job": _JOB_ID, "query": {"type": "string", "minLength": 1, "maxLength": 32},
                               "text": _TEXT}},
        result={"type": "object", "properties": {"answer": {"type": "string"}}})
def jobs_answer(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.answer(caller, params["job"], params["query"], params["text"])


@method("jobs.get", roles=USERS, summary="A job's current state and live bids (members and admins).", params=_JOB)
def jobs_get(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return jobs.get_job(caller, params["job"])


# --- calls.* ---------------------------------------------------------------------------------

_CALL = {"type": "object", "additionalProperties": False, "required": ["call"],
         "properties": {"call": {"type": "string", "minLength": 1, "maxLength": 32}}}
_AGORA_RESULT = {"type": "object", "properties": {
    "call": {"type": "string"},
    "agora": {"type": "object", "properties": {
        "app_id": {"type": "string"}, "channel": {"type": "string"}, "uid": {"type": "integer"},
        "token": {"type": "string"}, "expires_at": {"type": "integer"}, "expires_at_ms": {"type": "integer"},
        "development": {"type": "boolean"}}}}}


@method("calls.start", roles=USERS, summary="Call the other members of a chat room (video or voice).",
        serial=calls.call_queue,
        batch=lambda calls_: calls.start_calls([calls.CallRequest(c, p["room"], p["media"]) for c, p in calls_]),
        params={"type": "object", "additionalProperties": False, "required": ["room", "media"],
                "properties": {"room": {"type": "string", "minLength": 1, "maxLength": 32},
                               "media": {"enum": list(calls.MEDIA)}}},
        result=_AGORA_RESULT)
def calls_start(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return calls.start(caller, params["room"], params["media"])


@method("calls.accept", roles=USERS, summary="Answer a call you were invited to; returns your Agora token.",
        params=_CALL, result=_AGORA_RESULT)
def calls_accept(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return calls.accept(caller, params["call"])


@method("calls.decline", roles=USERS, summary="Decline a call you were invited to.", params=_CALL,
        result={"type": "object", "properties": {"call": {"type": "string"}, "status": {"type": "string"}}})
def calls_decline(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return calls.decline(caller, params["call"])


@method("calls.end", roles=USERS, summary="End the call for everyone (the caller or a joined participant).",
        params=_CALL, result={"type": "object", "properties": {
            "call": {"type": "string"}, "outcome": {"type": "string"}, "duration_s": {"type": "integer"}}})
def calls_end(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return calls.end(caller, params["call"])


@method("calls.renew", roles=USERS, summary="A fresh Agora token for a call you are in.", params=_CALL,
        result={"type": "object", "properties": {"token": {"type": "string"},
                                                 "expires_at": {"type": "integer"},
                                                 "expires_at_ms": {"type": "integer"}}})
def calls_renew(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return calls.renew(caller, params["call"])


@method("calls.get", roles=USERS, summary="A call's record (participants only).", params=_CALL)
def calls_get(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return calls.get_call(caller, params["call"])
