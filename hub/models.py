"""The hub's tables: durable channel streams, their publications, idempotency keys, revocations."""
from __future__ import annotations

from django.db import models


class Stream(models.Model):
    """One row per durable channel: its newest offset and its epoch."""

    # Tenant-qualified, `<tenant>/<namespace>:<id>` (hub.channels.qualify): up to 64 + 1 + 193.
    name = models.CharField(max_length=260, primary_key=True)
    top = models.BigIntegerField(default=0)
    epoch = models.CharField(max_length=16)
    created_at = models.BigIntegerField(help_text="ms since the epoch")

    class Meta:
        db_table = "hub_stream"


class Publication(models.Model):
    """A publication; (channel, offset) is the key. Erased ones stay as tombstones (data null)."""

    pk = models.CompositePrimaryKey("channel", "offset")
    channel = models.CharField(max_length=260)
    offset = models.BigIntegerField()
    ts = models.BigIntegerField(help_text="ms since the epoch")
    sender = models.CharField(max_length=128, null=True)
    data = models.TextField(null=True, help_text="compact JSON; null for a tombstone")

    class Meta:
        db_table = "hub_publication"
        indexes = [models.Index(fields=["sender"], name="hub_pub_sender"),
                   models.Index(fields=["ts"], name="hub_pub_ts")]


class PubKey(models.Model):
    """Idempotency key of a publish, held for HUB_IDEMPOTENCY_S per channel."""

    pk = models.CompositePrimaryKey("channel", "key")
    channel = models.CharField(max_length=260)
    key = models.CharField(max_length=64)
    offset = models.BigIntegerField()
    created_at = models.BigIntegerField()

    class Meta:
        db_table = "hub_pubkey"


class TokenRevocation(models.Model):
    """A revocation (hub.revocation): with `jti` empty, every token of (tenant, user) issued at or
    before `not_before`; with `jti`, the one token of that tenant carrying it. `tenant` empty means
    every tenant (an erasure, which knows the user id only)."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.CharField(max_length=64, blank=True, default="")
    user = models.CharField(max_length=128, blank=True, default="")
    jti = models.CharField(max_length=128, blank=True, default="")
    not_before = models.BigIntegerField(default=0, help_text="seconds since the epoch")
    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        db_table = "hub_revocation"
