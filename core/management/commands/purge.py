"""Retention: purge [--<kind>-days N ...] [--dry-run].

Deletes, per kind of data, what is older than its period. The kinds come from the apps'
`privacy.py` entries (core.privacy): today `messages` (hub publications and idempotency keys),
`transcripts` (AI assist) and `calls` (ended call records), each with its setting
(HUB_RETAIN_<KIND>_DAYS) as the default. Deletes run in batches so a large purge never holds long
locks. Audited as "retention.purge". `-v 2` prints each kind's counts as it goes. Run it daily
(docs/operations.md has cron and systemd examples).
"""
from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core import audit, privacy


def purge(days: dict[str, int], dry_run: bool = False, progress: Any = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in privacy.retentions():
        done = r.purge(days[r.kind], dry_run)
        counts.update(done)
        if progress is not None:
            progress(f"{r.kind} (older than {days[r.kind]} days): {orjson.dumps(done).decode()}")
    return counts


class Command(BaseCommand):
    help = "Delete each kind of data (messages, transcripts, calls, ...) older than its retention period."

    def add_arguments(self, parser: Any) -> None:
        for r in privacy.retentions():
            parser.add_argument(f"--{r.kind}-days", type=int, default=None,
                                help=f"default {r.setting} ({getattr(settings, r.setting)})")
        parser.add_argument("--dry-run", action="store_true", help="count only, delete nothing")

    def handle(self, *args: Any, **opts: Any) -> None:
        days: dict[str, int] = {}
        for r in privacy.retentions():
            given = opts.get(f"{r.kind}_days")
            value = int(given if given is not None else getattr(settings, r.setting))
            if value < 1:
                raise CommandError(f"{r.kind} retention must be at least 1 day, got {value}")
            # Recovery promises its window of every stream: never purge inside it.
            floor = int(getattr(settings, r.floor_setting)) if r.floor_setting else 1
            if value < floor:
                raise CommandError(f"{r.kind} retention must be at least {r.floor_setting} ({floor})")
            days[r.kind] = value
        counts = purge(days, opts["dry_run"], self.stderr.write if opts["verbosity"] >= 2 else None)
        if not opts["dry_run"]:
            audit.record("system", "retention.purge", "", role="operator", days=days, deleted=counts)
        if opts["verbosity"] >= 1:
            self.stdout.write(orjson.dumps({"dry_run": opts["dry_run"], "days": days, "deleted": counts}).decode())
