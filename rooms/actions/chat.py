"""Chat rooms: creating and listing rooms, membership, and who may use `chat:<room>`.

A new room is announced to its other members with a `room.new` publication on their `user:`
channels, committed with the room. A direct room is one per pair of users: asking again (in either
order) returns the existing room and announces nothing.
"""
from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from core.errors import bad_request, forbidden
from core.times import epoch_ms
from hub import store
from hub.channels import qualify
from hub.rpc import Caller
from hub.store import append
from rooms.models import Room, RoomKind, RoomMember, pair_key

LIST_LIMIT = 50
LIST_MAX = 100


def is_member(room_id: str, user: str, tenant: str) -> bool:
    """`user` of `tenant` is in the room (a room of another tenant has no members for them)."""
    return RoomMember.objects.filter(room_id=room_id, user=user, room__tenant=tenant).exists()


def members(room_id: str, tenant: str) -> list[str]:
    return list(RoomMember.objects.filter(room_id=room_id, room__tenant=tenant).values_list("user", flat=True))


def _text(data: Any) -> str:
    if isinstance(data, dict):
        text = data.get("text")
        return text if isinstance(text, str) else ""
    return "" if data is None else str(data)


def recent_messages(room: str, user: str, tenant: str, count: int) -> list[dict[str, Any]]:
    """The last `count` text messages of a room `user` (of `tenant`) belongs to, oldest first, as
    [{from, text}] (the AI assistant's context); forbidden for anyone else. Sync: ORM."""
    if not is_member(room, user, tenant):
        raise forbidden("you are not a member of that room")
    if count <= 0:
        return []
    channel = qualify(tenant, f"chat:{room}")
    top, epoch = store.head(channel)
    pubs = store.read(channel, epoch, after=max(0, top - count), limit=count)
    return [{"from": p.sender, "text": _text(p.data)} for p in pubs if p.data is not None and _text(p.data)]


def member_hook(caller: Caller, ident: str) -> bool:
    """`chat:<room>` subscribe, publish and signal: members of the room only."""
    return is_member(ident, caller.user, caller.tenant)


def in_tenant(caller: Caller, ident: str) -> bool:
    return Room.objects.filter(pk=ident, tenant=caller.tenant).exists()


def _room_item(room: Room, people: list[str]) -> dict[str, Any]:
    return {"room": room.id, "kind": room.kind, "ref": room.ref, "members": sorted(people),
            "created_by": room.created_by, "created_at": epoch_ms(room.created_at)}


def create_room(caller: Caller, members: list[str], kind: str, ref: str = "") -> dict[str, Any]:
    """A room of `members` and the caller; the other members hear `room.new`. A direct room is one
    per pair: asking again (in either order) returns it with `created: false` and tells nobody."""
    people = sorted(set(members) | {caller.user})
    if kind == RoomKind.DIRECT:
        if len(people) != 2:
            raise bad_request("a direct room has exactly two members")
        key = pair_key(*people)
        existing = Room.objects.filter(tenant=caller.tenant, pair_key=key).first()
        if existing is not None:
            return {"room": existing.id, "members": people, "created": False}
        try:
            room = _create(caller, kind, ref, people, key)
        except IntegrityError:
            # The other member asked at the same moment and committed first: theirs is the room.
            existing = Room.objects.filter(tenant=caller.tenant, pair_key=key).first()
            if existing is None:
                raise
            return {"room": existing.id, "members": people, "created": False}
    else:
        room = _create(caller, kind, ref, people, None)
    return {"room": room.id, "members": people, "created": True}


def _create(caller: Caller, kind: str, ref: str, people: list[str], key: str | None) -> Room:
    with transaction.atomic():
        room = Room.objects.create(kind=kind, ref=ref, tenant=caller.tenant, created_by=caller.user,
                                   pair_key=key)
        RoomMember.objects.bulk_create([RoomMember(room=room, user=u) for u in people])
        item = _room_item(room, people)
        note = {"kind": "room.new", "room": room.id, "room_kind": room.kind, "ref": room.ref,
                "members": item["members"], "by": caller.user, "created_at": item["created_at"]}
        for user in people:
            if user != caller.user:
                append(qualify(room.tenant, f"user:{user}"), note)
    return room


def _cursor(room: Room) -> str:
    raw = f"{room.created_at.isoformat()}|{room.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, room_id = raw.partition("|")
        parsed = datetime.fromisoformat(when)
    except ValueError as exc:
        raise bad_request("cursor is not one this server gave") from exc
    if not room_id or parsed.tzinfo is None:
        raise bad_request("cursor is not one this server gave")
    return parsed, room_id


def list_rooms(caller: Caller, limit: int = LIST_LIMIT, cursor: str | None = None) -> dict[str, Any]:
    """The caller's rooms, newest first; `cursor` is the `next` of the previous page."""
    rooms = Room.objects.filter(tenant=caller.tenant, members__user=caller.user)
    if cursor is not None:
        when, room_id = _parse_cursor(cursor)
        rooms = rooms.filter(Q(created_at__lt=when) | Q(created_at=when, id__lt=room_id))
    page = list(rooms.order_by("-created_at", "-id")[:limit + 1])
    more = len(page) > limit
    page = page[:limit]
    people: dict[str, list[str]] = {}
    for room_id, user in RoomMember.objects.filter(room__in=[r.id for r in page]).values_list("room_id", "user"):
        people.setdefault(room_id, []).append(user)
    return {"rooms": [_room_item(r, people.get(r.id, [])) for r in page],
            "next": _cursor(page[-1]) if more else None}
