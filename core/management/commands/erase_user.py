"""Data-subject erasure: erase_user --user U [--yes].

Removes or anonymises U's personal data while other users' data stays intact and every durable
stream stays recoverable:

- Publications U sent, and everything on U's private `user:U` channel, become tombstones: data
  NULL, sender "erased" (server rows keep sender NULL). Offsets are unchanged, so a subscriber
  recovering with `since` still receives every offset, with data null.
- Server publications elsewhere (job and call events, other users' notifications) that name U:
  those U authored (U in an actor field such as provider/by/author/caller) become tombstones;
  in the others U's id is replaced by the pseudonym.
- Jobs U posted: owner pseudonymised, title/description/cancel reason blanked. Bids, comments,
  queries and answers by U: author pseudonymised, text blanked. Amounts and states stay (the
  other party's record).
- Calls: U's id pseudonymised (caller, ended_by, participant rows).
- Bookings: customer pseudonymised and location cleared; offers/assignments: provider
  pseudonymised; U's provider state (location) and zone assignments deleted.
- Room memberships: U's rows deleted (rooms U created: created_by pseudonymised).
- AI transcripts: deleted (ai_assist.transcripts.erase_user_transcripts).
- Tokens: every token of U issued up to now is revoked in every tenant (hub.revocation), so U's
  open sockets close with 4001 on every process.

The pseudonym is random per erasure ("erased-<hex>"), one per run so rows stay consistent with
each other but cannot be linked back to U. Audit rows are kept (append-only, legal record);
the erasure itself is audited as "gdpr.erase". Everything happens in one transaction.
"""
from __future__ import annotations

import secrets
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from core import audit
from hub import store

ERASED = "erased"
ACTOR_KEYS = ("provider", "by", "author", "caller", "from", "user", "owner", "customer", "sender")
TEXT_KEYS = ("text", "note", "title", "description", "reason", "prompt", "answer")


def _mentions(value: Any, user: str) -> bool:
    if isinstance(value, str):
        return value == user
    if isinstance(value, dict):
        return any(_mentions(v, user) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, user) for v in value)
    return False


def _replace(value: Any, user: str, pseudonym: str) -> Any:
    if isinstance(value, str):
        return pseudonym if value == user else value
    if isinstance(value, dict):
        return {k: _replace(v, user, pseudonym) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, user, pseudonym) for v in value]
    return value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def erase_publications(user: str, pseudonym: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE hub_publication SET data = NULL, sender = %s WHERE sender = %s", [ERASED, user])
        sent = cursor.rowcount
        cursor.execute("UPDATE hub_publication SET data = NULL WHERE channel = %s AND data IS NOT NULL",
                       [f"user:{user}"])
        private = cursor.rowcount
        # Server rows naming U: a LIKE on the JSON string narrows, the parsed JSON decides.
        needle = "%" + _like_escape(orjson.dumps(user).decode()) + "%"
        cursor.execute("SELECT channel, \"offset\", data FROM hub_publication "
                       "WHERE sender IS NULL AND data LIKE %s ESCAPE '\\'", [needle])
        rows = cursor.fetchall()
        tombstoned = anonymised = 0
        for channel, offset, raw in rows:
            data = orjson.loads(raw)
            if not _mentions(data, user):
                continue
            if isinstance(data, dict) and any(data.get(k) == user for k in ACTOR_KEYS):
                cursor.execute('UPDATE hub_publication SET data = NULL WHERE channel = %s AND "offset" = %s',
                               [channel, offset])
                tombstoned += 1
            else:
                cursor.execute('UPDATE hub_publication SET data = %s WHERE channel = %s AND "offset" = %s',
                               [orjson.dumps(_replace(data, user, pseudonym)).decode(), channel, offset])
                anonymised += 1
    return {"messages_tombstoned": sent, "private_tombstoned": private, "server_tombstoned": tombstoned,
            "server_anonymised": anonymised}


def erase_jobs(user: str, pseudonym: str) -> dict[str, int]:
    try:
        from rooms.models import Bid, Job
    except ImportError:
        return {}
    out = {
        "jobs": Job.objects.filter(owner=user).update(owner=pseudonym, title="[erased]", description="",
                                                      cancel_reason=""),
        "bids": Bid.objects.filter(provider=user).update(provider=pseudonym, note=""),
    }
    Job.objects.filter(provider=user).update(provider=pseudonym)
    Job.objects.filter(cancelled_by=user).update(cancelled_by=pseudonym)
    try:
        from rooms.models import JobAnswer, JobComment, JobQuery
    except ImportError:
        return out
    out["job_texts"] = (JobComment.objects.filter(author=user).update(author=pseudonym, text="")
                        + JobQuery.objects.filter(author=user).update(author=pseudonym, text="")
                        + JobAnswer.objects.filter(author=user).update(author=pseudonym, text=""))
    return out


def erase_calls(user: str, pseudonym: str) -> dict[str, int]:
    try:
        from rooms.models import Call, CallParticipant
    except ImportError:
        return {}
    n = Call.objects.filter(caller=user).update(caller=pseudonym)
    Call.objects.filter(ended_by=user).update(ended_by=pseudonym)
    return {"calls": n, "call_participants": CallParticipant.objects.filter(user=user).update(user=pseudonym)}


def erase_rooms(user: str, pseudonym: str) -> dict[str, int]:
    try:
        from rooms.models import Room, RoomMember
    except ImportError:
        return {}
    Room.objects.filter(created_by=user).update(created_by=pseudonym)
    # A direct room's pair key is derived from the user's id: it goes with the membership.
    Room.objects.filter(members__user=user, pair_key__isnull=False).update(pair_key=None)
    deleted, _ = RoomMember.objects.filter(user=user).delete()
    return {"room_memberships": deleted}


def erase_bookings(user: str, pseudonym: str) -> dict[str, int]:
    try:
        from matching.models import Assignment, Booking, Offer, ProviderState
    except ImportError:
        return {}
    out = {
        "bookings": Booking.objects.filter(customer=user).update(customer=pseudonym, lat=0.0, lng=0.0),
        "offers": Offer.objects.filter(provider=user).update(provider=pseudonym),
        "assignments": Assignment.objects.filter(provider=user).update(provider=pseudonym),
        "provider_state": ProviderState.objects.filter(user=user).delete()[0],
    }
    try:
        from matching.models import ZoneAssignment

        out["zone_assignments"] = ZoneAssignment.objects.filter(provider=user).delete()[0]
    except ImportError:
        pass
    return out


def erase_transcripts(user: str) -> dict[str, int]:
    try:
        from ai_assist import transcripts as tr
    except ImportError:
        return {}
    fn = getattr(tr, "erase_user_transcripts", None)
    if fn is not None:
        return {"transcripts": int(fn(user))}
    from ai_assist.models import Transcript

    return {"transcripts": Transcript.objects.filter(user=user).delete()[0]}


def erase(user: str, actor: str = "operator") -> dict[str, Any]:
    """Erase `user` in one transaction; returns the counts (also in the audit row)."""
    pseudonym = f"{ERASED}-{secrets.token_hex(6)}"
    counts: dict[str, Any] = {}
    with transaction.atomic():
        counts.update(erase_publications(user, pseudonym))
        counts.update(erase_jobs(user, pseudonym))
        counts.update(erase_calls(user, pseudonym))
        counts.update(erase_rooms(user, pseudonym))
        counts.update(erase_bookings(user, pseudonym))
        counts.update(erase_transcripts(user))
        # Every token of U, in every tenant: an erased user's open sockets close, and no token
        # issued before the erasure gets back in.
        from hub import revocation

        revocation.revoke_user(revocation.ALL_TENANTS, user, actor)
        # The audit row names the subject (needed to prove the erasure) but holds no personal data.
        audit.record(actor, "gdpr.erase", f"user:{user}", role="operator", pseudonym=pseudonym, **counts)
        # Running hubs hold recent publications in memory: make them forget the erased content.
        transaction.on_commit(store.invalidate_caches)
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
        counts = erase(user, opts["actor"])
        self.stdout.write(orjson.dumps({"user": user, "erased": counts}).decode())
