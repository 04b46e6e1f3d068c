"""devices.* and notify.get_preferences / set_preferences (also POST /api/<method>). Rules in notify.actions."""
from __future__ import annotations

from typing import Any

from hub.rpc import USERS, Caller, method
from notify import actions
from notify.content import KINDS

_DEVICE = {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^[A-Za-z0-9_-]+$"}
_DEVICE_ITEM = {"type": "object", "properties": {
    "device": {"type": "string"}, "platform": {"type": "string"}, "app": {"type": "string"},
    "background": {"type": "boolean"}, "token_hint": {"type": "string"},
    "created_at": {"type": "string"}, "last_seen": {"type": "string"},
    "created_at_ms": {"type": "integer"}, "last_seen_ms": {"type": "integer"}}}
_PREFS = {"type": "object", "properties": {
    "kinds": {"type": "object", "additionalProperties": {"type": "boolean"}},
    "quiet_start": {"type": ["string", "null"]}, "quiet_end": {"type": ["string", "null"]},
    "timezone": {"type": "string"}, "quiet_override": {"type": "boolean"}}}
_CLOCK = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}


@method("devices.register", roles=USERS,
        summary="Register this app install (token) or browser (Web Push subscription) for pushes.",
        params={"type": "object", "additionalProperties": False, "required": ["platform"],
                "properties": {
                    "platform": {"enum": ["web", "android", "ios"]},
                    "token": {"type": "string", "minLength": 1, "maxLength": 4096},
                    "subscription": {"type": "object", "additionalProperties": True,
                                     "required": ["endpoint", "keys"],
                                     "properties": {"endpoint": {"type": "string", "maxLength": 1024},
                                                    "keys": {"type": "object", "maxProperties": 4},
                                                    "expirationTime": {"type": ["number", "null"]}},
                                     "maxProperties": 3},
                    "app": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._-]*$"}}},
        result=_DEVICE_ITEM)
def register(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return actions.register(caller.tenant, caller.user, params["platform"], params.get("token"),
                            params.get("subscription"), params.get("app", ""))


@method("devices.unregister", roles=USERS, summary="Stop pushes to one of your devices.",
        params={"type": "object", "additionalProperties": False, "required": ["device"],
                "properties": {"device": _DEVICE}},
        result={"type": "object", "properties": {"device": {"type": "string"}, "removed": {"type": "boolean"}}})
def unregister(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return actions.unregister(caller.tenant, caller.user, params["device"])


@method("devices.list", roles=USERS, summary="Your registered devices (no credentials).",
        result={"type": "object", "properties": {"devices": {"type": "array", "items": _DEVICE_ITEM},
                                                 "max": {"type": "integer"}}})
def list_devices(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return actions.list_devices(caller.tenant, caller.user)


@method("devices.state", roles=USERS,
        summary="The app went to the background (or came back): events then push instead of using this socket.",
        params={"type": "object", "additionalProperties": False, "required": ["background"],
                "properties": {"background": {"type": "boolean"}, "device": _DEVICE}},
        result={"type": "object", "properties": {"background": {"type": "boolean"},
                                                 "device": {"type": ["string", "null"]}}})
async def state(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return await actions.app_state(caller, bool(params["background"]), params.get("device"))


@method("notify.get_preferences", roles=USERS, summary="Which kinds push, quiet hours and time zone.",
        result=_PREFS)
def preferences_get(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    return actions.get_preferences(caller.tenant, caller.user)


@method("notify.set_preferences", roles=USERS, summary="Change which kinds push, quiet hours, time zone.",
        params={"type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": {
                    "kinds": {"type": "object", "additionalProperties": False,
                              "properties": {k: {"type": "boolean"} for k in KINDS}},
                    "quiet": {"oneOf": [{"type": "null"},
                                        {"type": "object", "additionalProperties": False,
                                         "required": ["start", "end"],
                                         "properties": {"start": _CLOCK, "end": _CLOCK}}]},
                    "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
                    "quiet_override": {"type": "boolean"}}},
        result=_PREFS)
def preferences_set(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    quiet = params.get("quiet", actions.KEEP)
    return actions.set_preferences(
        caller.tenant, caller.user, kinds=params.get("kinds", actions.KEEP),
        quiet=(quiet["start"], quiet["end"]) if isinstance(quiet, dict) else quiet,
        time_zone=params.get("timezone", actions.KEEP), quiet_override=params.get("quiet_override", actions.KEEP))
