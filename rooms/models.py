"""Chat rooms and their members (jobs and calls live beside them)."""
from __future__ import annotations

import hashlib
import uuid
from typing import ClassVar

from django.db import models


def new_id() -> str:
    return uuid.uuid4().hex[:20]


class RoomKind(models.TextChoices):
    DIRECT = "direct"
    BOOKING = "booking"


class Room(models.Model):
    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    kind = models.CharField(max_length=16, choices=RoomKind.choices)
    ref = models.CharField(max_length=128, blank=True, default="")
    tenant = models.CharField(max_length=128, default="default")
    created_by = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    # Direct rooms only: a digest of the two members in sorted order, so one pair has one room even
    # when both ask at once. Null for booking rooms, and for duplicates made before the constraint.
    pair_key = models.CharField(max_length=64, null=True, blank=True, default=None)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["tenant", "pair_key"], condition=models.Q(pair_key__isnull=False),
                                    name="room_direct_pair_unique"),
        ]


def pair_key(a: str, b: str) -> str:
    """The same key for (a, b) and (b, a); a digest keeps it short whatever the ids' length."""
    first, second = sorted((a, b))
    return hashlib.sha256(f"{len(first)}:{first}{second}".encode()).hexdigest()


class RoomMember(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members")
    user = models.CharField(max_length=128, db_index=True)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="room_member_unique")]


# --- custom jobs (rooms/jobs.py) -------------------------------------------------------------

class JobStatus(models.TextChoices):
    OPEN = "open"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Job(models.Model):
    """A customer's custom job. Money is integer minor units (pence) with an ISO 4217 currency."""

    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    tenant = models.CharField(max_length=128, db_index=True)
    owner = models.CharField(max_length=128, db_index=True)
    owner_role = models.CharField(max_length=32)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    category = models.CharField(max_length=64)
    lat = models.FloatField()
    lng = models.FloatField()
    budget = models.BigIntegerField(null=True, blank=True, help_text="minor units, e.g. pence")
    currency = models.CharField(max_length=3, blank=True, default="")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.OPEN, db_index=True)
    accepted_bid = models.CharField(max_length=32, blank=True, default="")
    provider = models.CharField(max_length=128, blank=True, default="", db_index=True,
                                help_text="the accepted provider")
    cancel_reason = models.TextField(blank=True, default="")
    cancelled_by = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.CheckConstraint(
                condition=models.Q(budget__isnull=True)
                | (models.Q(budget__gt=0) & models.Q(budget__lte=10**12)),
                name="job_budget_range"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.status})"


class BidStatus(models.TextChoices):
    LIVE = "live"
    REPLACED = "replaced"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Bid(models.Model):
    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="bids")
    provider = models.CharField(max_length=128, db_index=True)
    provider_role = models.CharField(max_length=32)
    amount = models.BigIntegerField(help_text="minor units, e.g. pence")
    currency = models.CharField(max_length=3)
    note = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=BidStatus.choices, default=BidStatus.LIVE)
    replaces = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            # One live bid per provider per job, even under concurrent bids.
            models.UniqueConstraint(fields=["job", "provider"], condition=models.Q(status="live"),
                                    name="bid_one_live_per_provider"),
            models.CheckConstraint(condition=models.Q(amount__gt=0) & models.Q(amount__lte=10**12),
                                   name="bid_amount_range"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.amount} {self.currency} ({self.status})"


class JobComment(models.Model):
    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="comments")
    author = models.CharField(max_length=128)
    author_role = models.CharField(max_length=32)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)


class JobQuery(models.Model):
    """A provider's question about a job; the owner answers with JobAnswer rows."""

    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="queries")
    author = models.CharField(max_length=128, db_index=True)
    author_role = models.CharField(max_length=32)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)


class JobAnswer(models.Model):
    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    query = models.ForeignKey(JobQuery, on_delete=models.CASCADE, related_name="answers")
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="answers")
    author = models.CharField(max_length=128)
    text = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)


# --- calls (rooms/calls.py) ------------------------------------------------------------------

class CallMedia(models.TextChoices):
    VIDEO = "video"
    VOICE = "voice"


class CallStatus(models.TextChoices):
    RINGING = "ringing"
    ACTIVE = "active"
    ENDED = "ended"


class CallOutcome(models.TextChoices):
    ANSWERED = "answered"  # interim, while an answered call is live
    MISSED = "missed"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    ENDED = "ended"
    ABANDONED = "abandoned"


class Call(models.Model):
    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    tenant = models.CharField(max_length=128, db_index=True)
    room = models.ForeignKey(Room, on_delete=models.SET_NULL, null=True, related_name="calls")
    caller = models.CharField(max_length=128, db_index=True)
    media = models.CharField(max_length=8, choices=CallMedia.choices)
    channel = models.CharField(max_length=64, help_text="the Agora channel name")
    status = models.CharField(max_length=16, choices=CallStatus.choices, default=CallStatus.RINGING,
                              db_index=True)
    outcome = models.CharField(max_length=16, choices=CallOutcome.choices, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=128, blank=True, default="")
    duration_s = models.IntegerField(null=True, blank=True, help_text="answered to ended, seconds")
    # First sweep that saw every joined participant offline; cleared when one is back.
    offline_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.media} call {self.id} ({self.status})"


class ParticipantStatus(models.TextChoices):
    JOINED = "joined"
    RINGING = "ringing"
    BUSY = "busy"  # invited while in another active call; still ringing, may accept or decline
    DECLINED = "declined"
    MISSED = "missed"


class CallParticipant(models.Model):
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="participants")
    user = models.CharField(max_length=128, db_index=True)
    uid = models.PositiveBigIntegerField(help_text="Agora uid, 32-bit unsigned, nonzero, unique per call")
    is_caller = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=ParticipantStatus.choices)
    busy = models.BooleanField(default=False, help_text="was in another call when invited")
    invited_at = models.DateTimeField(auto_now_add=True)
    joined_at = models.DateTimeField(null=True, blank=True)
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["call", "user"], name="call_participant_unique"),
            models.UniqueConstraint(fields=["call", "uid"], name="call_participant_uid_unique"),
        ]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["status", "invited_at"], name="call_part_status_invited")]
