"""Retention: purge [--messages-days N] [--transcripts-days N] [--calls-days N] [--dry-run].

Deletes, per kind, what is older than its period:
- messages: hub_publication rows (by their ts), plus idempotency keys (hub_pubkey) past their
  24 h window. Stream heads (hub_stream) stay, so offsets never restart; a subscriber asking to
  recover from a purged offset gets `recovered: false` as the protocol says.
- transcripts: AI assist transcripts (ai_assist.transcripts).
- calls: ended call records (rooms.models.Call and their participants).
Defaults from HUB_RETAIN_MESSAGES_DAYS (365), HUB_RETAIN_TRANSCRIPTS_DAYS (30),
HUB_RETAIN_CALLS_DAYS (365). Deletes run in batches so a large purge never holds long locks.
Audited as "retention.purge". Run it daily (docs/operations.md has cron and systemd examples).
"""
from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from core import audit

BATCH = 5000


def env_days(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise CommandError(f"{name} must be a whole number of days, got {raw!r}") from exc


def purge_messages(days: int, dry_run: bool) -> dict[str, int]:
    cutoff_ms = int((time.time() - days * 86400) * 1000)
    key_cutoff_ms = int((time.time() - max(settings.HUB_IDEMPOTENCY_S, 24 * 3600)) * 1000)
    with connection.cursor() as cursor:
        if dry_run:
            cursor.execute("SELECT COUNT(*) FROM hub_publication WHERE ts < %s", [cutoff_ms])
            pubs = int(cursor.fetchone()[0])
            cursor.execute("SELECT COUNT(*) FROM hub_pubkey WHERE created_at < %s", [key_cutoff_ms])
            return {"messages": pubs, "pubkeys": int(cursor.fetchone()[0])}
    pubs = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                'DELETE FROM hub_publication WHERE (channel, "offset") IN ('
                'SELECT channel, "offset" FROM hub_publication WHERE ts < %s LIMIT %s)', [cutoff_ms, BATCH])
            n = cursor.rowcount
        pubs += n
        if n < BATCH:
            break
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM hub_pubkey WHERE created_at < %s", [key_cutoff_ms])
        keys = cursor.rowcount
    return {"messages": pubs, "pubkeys": keys}


def purge_transcripts(days: int, dry_run: bool) -> dict[str, int]:
    try:
        from ai_assist.models import Transcript
    except ImportError:
        return {}
    if dry_run:
        cutoff = timezone.now() - timedelta(days=days)
        return {"transcripts": Transcript.objects.filter(created_at__lt=cutoff).count()}
    try:
        from ai_assist import transcripts as tr
    except ImportError:
        tr = None  # type: ignore[assignment]
    fn = getattr(tr, "purge_older_than", None) or getattr(tr, "purge", None)
    if fn is not None:
        return {"transcripts": int(fn(days))}
    cutoff = timezone.now() - timedelta(days=days)
    return {"transcripts": Transcript.objects.filter(created_at__lt=cutoff).delete()[0]}


def purge_calls(days: int, dry_run: bool) -> dict[str, int]:
    try:
        from rooms.models import Call
    except ImportError:
        return {}
    cutoff = timezone.now() - timedelta(days=days)
    # Only finished calls: a ringing or live call is never purged, whatever its age.
    old = Call.objects.filter(started_at__lt=cutoff, status="ended")
    if dry_run:
        return {"calls": old.count()}
    total = 0
    while True:
        ids = list(old.values_list("id", flat=True)[:BATCH])
        if not ids:
            break
        with transaction.atomic():
            Call.objects.filter(id__in=ids).delete()
        total += len(ids)
    return {"calls": total}


def purge(messages_days: int, transcripts_days: int, calls_days: int, dry_run: bool = False) -> dict[str, int]:
    counts: dict[str, int] = {}
    counts.update(purge_messages(messages_days, dry_run))
    counts.update(purge_transcripts(transcripts_days, dry_run))
    counts.update(purge_calls(calls_days, dry_run))
    return counts


class Command(BaseCommand):
    help = "Delete messages, transcripts and call records older than their retention periods."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--messages-days", type=int, default=None,
                            help="default HUB_RETAIN_MESSAGES_DAYS or 365")
        parser.add_argument("--transcripts-days", type=int, default=None,
                            help="default HUB_RETAIN_TRANSCRIPTS_DAYS or 30")
        parser.add_argument("--calls-days", type=int, default=None, help="default HUB_RETAIN_CALLS_DAYS or 365")
        parser.add_argument("--dry-run", action="store_true", help="count only, delete nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        days = {
            "messages": opts["messages_days"] if opts["messages_days"] is not None
            else env_days("HUB_RETAIN_MESSAGES_DAYS", 365),
            "transcripts": opts["transcripts_days"] if opts["transcripts_days"] is not None
            else env_days("HUB_RETAIN_TRANSCRIPTS_DAYS", 30),
            "calls": opts["calls_days"] if opts["calls_days"] is not None else env_days("HUB_RETAIN_CALLS_DAYS", 365),
        }
        for kind, value in days.items():
            if value < 1:
                raise CommandError(f"{kind} retention must be at least 1 day, got {value}")
        # Recovery promises 24 h of every chat/user/job stream: never purge inside the history window.
        if days["messages"] < settings.HUB_HISTORY_DAYS:
            raise CommandError(f"messages retention must be at least HUB_HISTORY_DAYS ({settings.HUB_HISTORY_DAYS})")
        counts = purge(days["messages"], days["transcripts"], days["calls"], opts["dry_run"])
        if not opts["dry_run"]:
            audit.record("system", "retention.purge", "", role="operator", days=days, deleted=counts)
        self.stdout.write(orjson.dumps({"dry_run": opts["dry_run"], "days": days, "deleted": counts}).decode())
