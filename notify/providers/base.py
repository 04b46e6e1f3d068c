"""What every push provider implements: one asynchronous send with a typed outcome.

The outbox worker owns retries, backoff, dead letters and token removal; a provider only says what
happened to one attempt. Providers never log credentials or payloads.
"""
from __future__ import annotations

import datetime
import email.utils
import enum
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Outcome(enum.Enum):
    SENT = "sent"  # accepted by the service
    RETRY = "retry"  # transient (5xx, 429, timeout, connection loss): try again later
    UNREGISTERED = "unregistered"  # the token or subscription is gone: remove the device
    FAILED = "failed"  # permanent for this message (bad payload, bad credentials): dead letter


@dataclass(frozen=True)
class Target:
    platform: str  # "web" | "android" | "ios"
    # FCM registration token, APNs device token (hex), or the Web Push subscription's endpoint URL.
    token: str
    # Web Push subscription keys ("p256dh", "auth"); empty for the other platforms.
    keys: Mapping[str, str] = field(default_factory=dict)
    # The app the device registered for (APNs topic / bundle id); "" means the configured default.
    app: str = ""


@dataclass(frozen=True)
class Push:
    kind: str  # "offer", "call", "job", "bid", "message", "room_invite", "test"
    title: str  # what a lock screen may show, nothing more
    body: str
    # The ids the app needs to fetch the details over its socket (strings: FCM data is strings only).
    data: Mapping[str, str]
    collapse_key: str  # a newer push with the same key replaces the older one on the device
    expires_at: float  # unix seconds; never delivered after this (TTL / apns-expiration)
    urgent: bool = False  # high priority (offers, call invites)


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    status: int | None = None  # the service's HTTP status, when it answered
    reason: str = ""  # the service's error code or a short description, for dead letters and logs
    retry_after_s: float | None = None  # the service's Retry-After, when it gave one


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, not this machine's zone
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


class Provider(Protocol):
    platform: str  # the Target.platform it serves

    async def send(self, target: Target, push: Push) -> Result: ...

    async def aclose(self) -> None: ...
