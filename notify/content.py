"""What a `user:` event becomes on a lock screen: its kind, short text, ids, expiry, collapse key.

Privacy: a push says only what a lock screen may show and the ids the app needs to fetch the rest
over its socket. Never a place (no lat/lng/area/distance), never an amount, never a user's free
text (job titles, bid notes, messages); categories and call media are fixed vocabularies.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

# Kinds a user can switch on or off (preferences), and those that may override quiet hours.
KINDS = ("offer", "call", "job", "bid", "message", "room_invite")
URGENT_KINDS = ("offer", "call")
_WORD = re.compile(r"[A-Za-z0-9 _-]{1,40}")


@dataclass
class Spec:
    kind: str
    title: str
    body: str
    data: dict[str, str]
    collapse_key: str
    expires_at: float  # unix seconds
    urgent: bool = False


@dataclass
class Effect:
    """An event's effect on the outbox: pushes to cancel (by collapse key), then one to send."""

    cancel: list[str] = field(default_factory=list)
    push: Spec | None = None


def _category(value: Any) -> str:
    """A category is a short service word ("plumbing"); anything else is not shown."""
    if isinstance(value, str) and _WORD.fullmatch(value):
        return value.replace("_", " ").replace("-", " ").strip()
    return ""


def _id(value: Any) -> str:
    return value if isinstance(value, str) and 0 < len(value) <= 128 else ""


def _offer(user: str, d: dict[str, Any], now: float) -> Effect | None:
    booking = _id(d.get("booking"))
    expires = d.get("expires_at_ms")
    if not booking or not isinstance(expires, (int, float)):
        return None
    what = _category(d.get("category"))
    title = f"New {what} job near you" if what else "New job near you"
    return Effect(push=Spec("offer", title, "Tap to see the offer before it expires",
                            {"booking": booking, "expires_at_ms": str(int(expires))},
                            f"offer:{booking}", expires / 1000, urgent=True))


def _offer_over(user: str, d: dict[str, Any], now: float) -> Effect | None:
    booking = _id(d.get("booking"))
    return Effect(cancel=[f"offer:{booking}"]) if booking else None


def _call_invite(user: str, d: dict[str, Any], now: float) -> Effect | None:
    call, caller = _id(d.get("call")), _id(d.get("from"))
    if not call:
        return None
    media = "video" if d.get("media") == "video" else "voice"
    ring_s = d.get("ring_s")
    ring = float(ring_s) if isinstance(ring_s, (int, float)) else 30.0
    return Effect(push=Spec("call", f"Incoming {media} call", f"Call from {caller}" if caller else "Incoming call",
                            {"call": call, "room": _id(d.get("room")), "caller": caller, "media": media},
                            f"call:{call}", now + ring, urgent=True))


def _call_missed(user: str, d: dict[str, Any], now: float) -> Effect | None:
    call = _id(d.get("call"))
    if not call:
        return None
    if d.get("user") != user:
        return None  # the caller's copy: nothing to tell them on the lock screen
    # The invite (if still waiting) is cancelled, and the missed call takes its place on the device.
    caller = _id(d.get("from"))
    media = "video" if d.get("media") == "video" else "voice"
    return Effect(cancel=[f"call:{call}"],
                  push=Spec("call", f"Missed {media} call", f"From {caller}" if caller else "Missed call",
                            {"call": call, "room": _id(d.get("room")), "caller": caller, "missed": "1"},
                            f"call:{call}", now + settings.NOTIFY_TTL_S))


def _job_new(user: str, d: dict[str, Any], now: float) -> Effect | None:
    job = _id(d.get("job"))
    if not job:
        return None
    what = _category(d.get("category"))
    return Effect(push=Spec("job", f"New {what} job near you" if what else "New job near you",
                            "Tap to see it and bid", {"job": job}, f"job:{job}",
                            now + settings.NOTIFY_JOB_TTL_S))


def _bid_placed(user: str, d: dict[str, Any], now: float) -> Effect | None:
    job, bid = _id(d.get("job")), _id(d.get("bid"))
    if not job or not bid or d.get("provider") == user:
        return None  # the bidder's own copy
    return Effect(push=Spec("bid", "New bid on your job", "Tap to compare the bids", {"job": job, "bid": bid},
                            f"bid:{job}", now + settings.NOTIFY_TTL_S))


def _bid_accepted(user: str, d: dict[str, Any], now: float) -> Effect | None:
    job, bid = _id(d.get("job")), _id(d.get("bid"))
    if not job or not bid:
        return None
    return Effect(push=Spec("bid", "Your bid was accepted", "Tap to see the job", {"job": job, "bid": bid},
                            f"bid:{job}", now + settings.NOTIFY_TTL_S))


def _room_new(user: str, d: dict[str, Any], now: float) -> Effect | None:
    room = _id(d.get("room"))
    if not room:
        return None
    return Effect(push=Spec("room_invite", "New conversation", "You were added to a conversation",
                            {"room": room}, f"room:{room}", now + settings.NOTIFY_TTL_S))


def message(room: str, now: float) -> Spec:
    """A room message: that there is one, never its text."""
    return Spec("message", "New message", "Tap to read it", {"room": room}, f"room:{room}",
                now + settings.NOTIFY_TTL_S)


RULES: dict[str, Callable[[str, dict[str, Any], float], Effect | None]] = {
    "offer": _offer,
    "offer.withdrawn": _offer_over,
    "offer.expired": _offer_over,
    "call.invite": _call_invite,
    "call.missed": _call_missed,
    "job.new": _job_new,
    "bid.placed": _bid_placed,
    "bid.accepted": _bid_accepted,
    "room.new": _room_new,
}


def effect_of(user: str, data: Any, now: float | None = None) -> Effect | None:
    if not isinstance(data, dict):
        return None
    rule = RULES.get(data.get("kind"))  # type: ignore[arg-type]
    if rule is None:
        return None
    return rule(user, data, time.time() if now is None else now)


def test_spec(now: float) -> Spec:
    return Spec("test", "Test notification", "Notifications reach this device", {"test": "1"},
                f"test:{int(now)}", now + 600)
