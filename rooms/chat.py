"""Chat rooms: `rooms.create`, membership, and the `chat:<room>` namespace."""
from __future__ import annotations

from typing import Any

from django.db import transaction

from core.errors import bad_request
from hub.channels import Namespace, register
from hub.rpc import USERS, Caller, method
from rooms.models import Room, RoomMember


def is_member(room_id: str, user: str) -> bool:
    return RoomMember.objects.filter(room_id=room_id, user=user).exists()


def members(room_id: str) -> list[str]:
    return list(RoomMember.objects.filter(room_id=room_id).values_list("user", flat=True))


def _member_hook(caller: Caller, ident: str) -> bool:
    return is_member(ident, caller.user)


register(Namespace("chat", can_subscribe=_member_hook, can_publish=_member_hook,
                   can_signal=_member_hook, admin_read=True))


@method("rooms.create", roles=USERS, summary="Create a chat room with members (the caller joins).",
        params={"type": "object", "additionalProperties": False, "required": ["members", "kind"],
                "properties": {
                    "members": {"type": "array", "minItems": 1, "maxItems": 100,
                                "items": {"type": "string", "minLength": 1, "maxLength": 128,
                                          "pattern": "^[^:]+$"}},
                    "kind": {"enum": ["direct", "booking"]},
                    "ref": {"type": "string", "maxLength": 128}}},
        result={"type": "object", "properties": {"room": {"type": "string"}}})
def create_room(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    people = sorted(set(params["members"]) | {caller.user})
    if params["kind"] == "direct" and len(people) != 2:
        raise bad_request("a direct room has exactly two members")
    with transaction.atomic():
        room = Room.objects.create(kind=params["kind"], ref=params.get("ref", ""), tenant=caller.tenant,
                                   created_by=caller.user)
        RoomMember.objects.bulk_create([RoomMember(room=room, user=u) for u in people])
    return {"room": room.id, "members": people}
