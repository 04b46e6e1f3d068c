"""Zones, provider state (the durable fallback snapshot), bookings, offers and assignments."""
from __future__ import annotations

import uuid

from django.db import models


def new_id() -> str:
    return uuid.uuid4().hex[:20]


class Zone(models.Model):
    """A service area: a GeoJSON Polygon/MultiPolygon (lng/lat order) and the categories served there."""

    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    # The marketplace the zone belongs to: searches, bookings and admins of other tenants never see it.
    tenant = models.CharField(max_length=128, default="default", db_index=True)
    name = models.CharField(max_length=200)
    categories = models.JSONField(default=list, help_text="category names served in this zone")
    geometry = models.JSONField(help_text="GeoJSON Polygon or MultiPolygon, [lng, lat] positions")
    active = models.BooleanField(default=True)
    # Bumped on every change so a process can tell an old broadcast from a new one.
    version = models.PositiveIntegerField(default=1)
    created_by = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "matching_zone"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ZoneAssignment(models.Model):
    """An operator's assignment of a provider to a zone, wherever the provider happens to be."""

    zone = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="assignments")
    provider = models.CharField(max_length=128, db_index=True)
    created_by = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "matching_zone_assignment"
        constraints = [models.UniqueConstraint(fields=["zone", "provider"], name="zone_assignment_unique")]

    def __str__(self) -> str:
        return f"{self.provider} -> {self.zone_id}"


class ProviderState(models.Model):
    """Latest known state per provider, written in batches: the restart snapshot without Redis.

    The offer counters and rating are owned by the database (dispatch and operators write them);
    the location fields are owned by the in-memory index and flushed here every few seconds.
    """

    # `<tenant>/<user>` (matching.matcher.provider_key): the same user id in two tenants is two providers.
    user = models.CharField(max_length=200, primary_key=True)
    lat = models.FloatField(default=0.0)
    lng = models.FloatField(default=0.0)
    available = models.BooleanField(default=False)
    categories = models.JSONField(default=list)
    capacity = models.IntegerField(default=1)
    schedule = models.JSONField(null=True, blank=True, help_text="availability windows, see docs/matching.md")
    ts = models.FloatField(default=0.0, help_text="seconds since the epoch of the last location update")
    rating = models.FloatField(default=0.0, help_text="0..5, set by the platform")
    offers_accepted = models.PositiveIntegerField(default=0)
    offers_declined = models.PositiveIntegerField(default=0)
    offers_expired = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "matching_provider_state"

    def __str__(self) -> str:
        return self.user

    @property
    def acceptance(self) -> float:
        return acceptance_rate(self.offers_accepted, self.offers_declined, self.offers_expired)


def acceptance_rate(accepted: int, declined: int, expired: int) -> float:
    """Laplace-smoothed share of answered-or-lapsed offers that were accepted: new providers start at 0.5."""
    return (accepted + 1) / (accepted + declined + expired + 2)


class BookingMode(models.TextChoices):
    ON_DEMAND = "on_demand"
    SCHEDULED = "scheduled"


class BookingStatus(models.TextChoices):
    OFFERING = "offering"  # offers out, crew not yet full
    ASSIGNED = "assigned"  # crew providers accepted
    UNFILLED = "unfilled"  # candidates ran out before the crew filled


class Booking(models.Model):
    id = models.CharField(max_length=32, primary_key=True, default=new_id)
    customer = models.CharField(max_length=128, db_index=True)
    tenant = models.CharField(max_length=128, default="default")
    category = models.CharField(max_length=64)
    lat = models.FloatField()
    lng = models.FloatField()
    mode = models.CharField(max_length=16, choices=BookingMode.choices)
    at = models.DateTimeField(null=True, blank=True, help_text="when the work is wanted (scheduled)")
    crew = models.PositiveSmallIntegerField(default=1)
    zone = models.CharField(max_length=32, null=True, blank=True)
    status = models.CharField(max_length=16, choices=BookingStatus.choices, default=BookingStatus.OFFERING,
                              db_index=True)
    accepted = models.PositiveSmallIntegerField(default=0, help_text="accepted assignments so far")
    created_at = models.DateTimeField(auto_now_add=True)
    first_offered_at = models.DateTimeField(null=True, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    unfilled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "matching_booking"

    def __str__(self) -> str:
        return f"{self.id} {self.category} {self.status}"


class OfferStatus(models.TextChoices):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"  # the crew filled (or the booking closed) before this offer was answered


class Offer(models.Model):
    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="offers")
    provider = models.CharField(max_length=128, db_index=True)
    status = models.CharField(max_length=16, choices=OfferStatus.choices, default=OfferStatus.PENDING)
    round = models.PositiveSmallIntegerField(default=1)
    distance_m = models.FloatField(default=0.0)
    offered_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    declined_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "matching_offer"
        constraints = [
            models.UniqueConstraint(fields=["booking", "provider"], name="offer_once_per_provider")]
        indexes = [models.Index(fields=["status", "expires_at"], name="matching_offer_due")]

    def __str__(self) -> str:
        return f"{self.booking_id} -> {self.provider} {self.status}"


class Assignment(models.Model):
    """A provider who accepted a booking; at most `crew` per booking (enforced under the booking lock)."""

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="assignments")
    provider = models.CharField(max_length=128, db_index=True)
    accepted_at = models.DateTimeField()

    class Meta:
        db_table = "matching_assignment"
        constraints = [models.UniqueConstraint(fields=["booking", "provider"], name="assignment_unique")]

    def __str__(self) -> str:
        return f"{self.booking_id} <- {self.provider}"
