"""What every push provider implements: one asynchronous send with a typed outcome.

The outbox worker owns retries, backoff, dead letters and token removal; a provider only says what
happened to one attempt. Providers never log credentials or payloads.
"""
from __future__ import annotations

import enum
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


class Provider(Protocol):
    platform: str  # the Target.platform it serves

    async def send(self, target: Target, push: Push) -> Result: ...

    async def aclose(self) -> None: ...
