"""Devices that receive pushes, users' preferences, the durable outbox and its dead letters."""
from __future__ import annotations

import secrets

from django.db import models


def new_id() -> str:
    return secrets.token_hex(8)


class Platform(models.TextChoices):
    WEB = "web"
    ANDROID = "android"
    IOS = "ios"


class Device(models.Model):
    """One app install (or browser) of one user in one tenant."""

    id = models.CharField(primary_key=True, max_length=32, default=new_id, editable=False)
    tenant = models.CharField(max_length=64)
    user = models.CharField(max_length=128)
    platform = models.CharField(max_length=8, choices=Platform.choices)
    # FCM registration token, APNs device token (hex), or the Web Push subscription's endpoint.
    token = models.TextField()
    # Web Push subscription keys {"p256dh", "auth"}; empty for the other platforms.
    keys = models.JSONField(default=dict, blank=True)
    app = models.CharField(max_length=128, blank=True, default="")
    background = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "user"], name="notify_device_owner")]
        constraints = [models.UniqueConstraint(fields=["tenant", "platform", "token"],
                                               name="notify_device_token_unique")]


class Preferences(models.Model):
    """A user's choices; what they never set comes from the tenant's defaults (settings)."""

    tenant = models.CharField(max_length=64)
    user = models.CharField(max_length=128)
    kinds = models.JSONField(default=dict, blank=True)  # kind -> bool, only what the user set
    quiet_start = models.CharField(max_length=5, blank=True, default="")  # "22:00", local time
    quiet_end = models.CharField(max_length=5, blank=True, default="")  # "07:00"
    timezone = models.CharField(max_length=64, blank=True, default="UTC")  # IANA
    # Offers and call invites still push during quiet hours (null: the tenant's default).
    quiet_override = models.BooleanField(null=True, blank=True, default=None)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="notify_prefs_owner")]


class OutboxState(models.TextChoices):
    PENDING = "pending"  # to send at next_at (or being sent: claimed until next_at)
    SENT = "sent"
    DEAD = "dead"  # given up: see DeadLetter
    EXPIRED = "expired"  # its event was over before it could be sent
    CANCELLED = "cancelled"  # the event it announced was withdrawn (offer taken, call ended)
    REPLACED = "replaced"  # a newer push with the same collapse key took its place
    SOCKET = "socket"  # the user had a foreground socket: the event reached them there


class Outbox(models.Model):
    """One push to one device, written in the transaction of the event it announces."""

    tenant = models.CharField(max_length=64)
    user = models.CharField(max_length=128)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="outbox")
    kind = models.CharField(max_length=16)
    payload = models.JSONField()  # {"title", "body", "data"}: lock-screen text and ids only
    collapse_key = models.CharField(max_length=80)
    urgent = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    next_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(max_length=10, choices=OutboxState.choices, default=OutboxState.PENDING)
    last_error = models.CharField(max_length=200, blank=True, default="")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["next_at"], name="notify_outbox_due",
                         condition=models.Q(state="pending")),
            models.Index(fields=["user", "collapse_key"], name="notify_outbox_collapse"),
            models.Index(fields=["done_at"], name="notify_outbox_done"),
        ]


class DeadLetter(models.Model):
    """A push given up on, and why (the service's error, too many attempts, no provider)."""

    outbox_id = models.BigIntegerField()
    tenant = models.CharField(max_length=64)
    user = models.CharField(max_length=128)
    device_id = models.CharField(max_length=32)
    platform = models.CharField(max_length=8)
    kind = models.CharField(max_length=16)
    collapse_key = models.CharField(max_length=80)
    attempts = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "user"], name="notify_dead_owner"),
                   models.Index(fields=["created_at"], name="notify_dead_created")]
