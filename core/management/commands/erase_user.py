"""Data-subject erasure: erase_user --user U [--yes].

Removes or anonymises U's personal data while other users' data stays intact and every durable
stream stays recoverable. What each app does is its `privacy.py` (registered in core.privacy);
this command runs every entry in one transaction with one pseudonym. The pseudonym is random per
erasure ("erased-<hex>"), so rows stay consistent with each other but cannot be linked back to
U. Audit rows are kept (append-only, legal record); the erasure itself is audited as
"gdpr.erase" with the counts. `-v 2` prints each app's counts as it goes.
"""
from __future__ import annotations

import secrets
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core import audit, privacy

ERASED = privacy.ERASED


def erase(user: str, actor: str = "operator", progress: Any = None) -> dict[str, Any]:
    """Erase `user` in one transaction; returns the counts (also in the audit row)."""
    pseudonym = f"{ERASED}-{secrets.token_hex(6)}"
    counts: dict[str, Any] = {}
    with transaction.atomic():
        for entry in privacy.entries():
            if entry.erase is None:
                continue
            done = entry.erase(user, pseudonym)
            counts.update(done)
            if progress is not None:
                progress(f"{entry.app}: {orjson.dumps(done).decode()}")
        # The audit row names the subject (needed to prove the erasure) but holds no personal data.
        audit.record(actor, "gdpr.erase", f"user:{user}", role="operator", pseudonym=pseudonym, **counts)
    return counts


class Command(BaseCommand):
    help = "Erase or anonymise one user's data (GDPR erasure); streams keep their offsets as tombstones."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", required=True)
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--actor", default="operator", help="who runs the erasure (audit)")

    def handle(self, *args: Any, **opts: Any) -> None:
        user: str = opts["user"]
        if not user or ":" in user or user == ERASED or user.startswith(f"{ERASED}-"):
            raise CommandError("--user must be a real user id")
        if not opts["yes"]:
            answer = input(f"Erase all personal data of {user!r}? This cannot be undone. Type the user id: ")
            if answer.strip() != user:
                raise CommandError("not confirmed; nothing erased")
        progress = self.stderr.write if opts["verbosity"] >= 2 else None
        counts = erase(user, opts["actor"], progress)
        if opts["verbosity"] >= 1:
            self.stdout.write(orjson.dumps({"user": user, "erased": counts}).decode())
