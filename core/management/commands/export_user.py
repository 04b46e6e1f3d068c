"""Data-subject export: export_user --user U [--out file.json].

One JSON document with everything the hub holds about U, gathered from every app's `privacy.py`
(registered in core.privacy): the messages U published and U's private `user:U` stream, rooms,
calls, jobs U posted or was chosen for, U's bids and job texts, bookings, offers, assignments,
provider state, AI transcripts, devices and preferences where an app keeps them, and the audit
rows about U. Audited as "gdpr.export". `-v 2` prints each app's section sizes as it goes.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core import audit, privacy


def collect(user: str, progress: Any = None) -> dict[str, Any]:
    """Everything about `user`, JSON-ready (datetimes become ISO strings when dumped)."""
    doc: dict[str, Any] = {"user": user, "exported_at": datetime.now(UTC).isoformat()}
    for entry in privacy.entries():
        if entry.export is None:
            continue
        part = entry.export(user)
        clash = set(part) & set(doc)
        if clash:
            raise RuntimeError(f"{entry.app} exports sections that exist already: {sorted(clash)}")
        doc.update(part)
        if progress is not None:
            progress(f"{entry.app}: " + ", ".join(f"{k} {len(v) if isinstance(v, list) else 1}"
                                                  for k, v in part.items()))
    return doc


class Command(BaseCommand):
    help = "Export everything the hub holds about one user as JSON (GDPR access request)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", required=True)
        parser.add_argument("--out", default="", help="file to write (default: stdout)")
        parser.add_argument("--actor", default="operator", help="who runs the export (audit)")

    def handle(self, *args: Any, **opts: Any) -> None:
        user: str = opts["user"]
        if not user or ":" in user:
            raise CommandError("--user must be a user id")
        doc = collect(user, self.stderr.write if opts["verbosity"] >= 2 else None)
        text = json.dumps(doc, default=str, indent=2, ensure_ascii=False)
        counts = {k: len(v) for k, v in doc.items() if isinstance(v, list)}
        audit.record(opts["actor"], "gdpr.export", f"user:{user}", role="operator",
                     out=opts["out"] or "stdout", counts=counts)
        if opts["out"]:
            with open(opts["out"], "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            if opts["verbosity"] >= 1:
                self.stderr.write(f"exported {user}: {counts} -> {opts['out']}")
        else:
            self.stdout.write(text)
