"""Delete AI assist transcripts older than --days (default AI_TRANSCRIPT_DAYS, 30)."""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ai_assist import config
from ai_assist.transcripts import purge


class Command(BaseCommand):
    help = "Purge AI assist transcripts older than N days (default AI_TRANSCRIPT_DAYS, 30)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None,
                            help="keep this many days (default: AI_TRANSCRIPT_DAYS or 30)")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else config.reload().transcript_days
        if days < 0:
            self.stderr.write("--days must be 0 or more")
            raise SystemExit(2)
        deleted = purge(days)
        self.stdout.write(f"purged {deleted} transcript(s) older than {days} day(s)")
