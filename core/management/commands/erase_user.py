"""Data-subject erasure: erase_user --user U [--yes].

Removes or anonymises U's personal data while other users' data stays intact and every durable
stream stays recoverable:

- Publications U sent, and everything on U's private `user:U` channel, become tombstones: data
  NULL, sender "erased" (server rows keep sender NULL). Offsets are unchanged, so a subscriber
  recovering with `since` still receives every offset, with data null.
- Server publications elsewhere (job and call events, other users' notifications) that name U:
  those U authored (U in an actor field such as provider/by/author/caller) become tombstones;
  in the others U's id is replaced by the pseudonym.
- Jobs U posted: owner pseudonymised, title/description/cancel reason blanked, place set to 0, 0.
  Server publications about U's jobs and bookings anywhere (job.new and offer copies on providers'
  `user:` channels, bid.accepted, job events) lose their place and U's job text. Bids, comments,
  queries and answers by U: author pseudonymised, text blanked. Amounts and states stay (the
  other party's record).
- Calls: U's id pseudonymised (caller, ended_by, participant rows).
- Bookings: customer pseudonymised and location cleared; offers/assignments: provider
  pseudonymised (an offer's distance zeroed); U's provider state (location) and zone assignments
  deleted; U leaves every hub process's matcher index and the Redis snapshot
  (matching.sync.erase_provider).
- Room memberships: U's rows deleted (rooms U created: created_by pseudonymised).
- AI transcripts: deleted (ai_assist.transcripts.erase_user_transcripts); U's room messages in
  other users' transcripts (their context) blanked and pseudonymised.
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
# What a server publication about a job or booking says of its place, and of the job, in U's words.
PLACE_KEYS = frozenset({"lat", "lng", "area", "distance_m", "title", "description"})
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
        # The place goes too (coarsened to 0, 0: the columns are not nullable).
        "jobs": Job.objects.filter(owner=user).update(owner=pseudonym, title="[erased]", description="",
                                                      cancel_reason="", lat=0.0, lng=0.0),
        "bids": Bid.objects.filter(provider=user).update(provider=pseudonym, note=""),
    }
    Job.objects.filter(provider=user).update(provider=pseudonym)
    # U's words on someone else's job (U cancelled it as the chosen provider) go too.
    Job.objects.filter(cancelled_by=user).update(cancelled_by=pseudonym, cancel_reason="")
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
        # An offer's distance places its provider relative to a known booking.
        "offers": Offer.objects.filter(provider=user).update(provider=pseudonym, distance_m=0.0),
        "assignments": Assignment.objects.filter(provider=user).update(provider=pseudonym),
        "provider_state": ProviderState.objects.filter(user=user).delete()[0],
    }
    try:
        from matching.models import ZoneAssignment

        out["zone_assignments"] = ZoneAssignment.objects.filter(provider=user).delete()[0]
    except ImportError:
        pass
    return out


def places_of(user: str) -> tuple[set[str], set[str]]:
    """U's job and booking ids, read before the rows are pseudonymised."""
    jobs: set[str] = set()
    bookings: set[str] = set()
    try:
        from rooms.models import Job

        jobs = set(Job.objects.filter(owner=user).values_list("id", flat=True))
    except ImportError:
        pass
    try:
        from matching.models import Booking

        bookings = set(Booking.objects.filter(customer=user).values_list("id", flat=True))
    except ImportError:
        pass
    return jobs, bookings


def erase_places(jobs: set[str], bookings: set[str]) -> dict[str, int]:
    """Server publications about U's jobs and bookings, wherever they are (offers and `job.new` copies
    on providers' `user:` channels, events on `job:` channels) lose the place and U's job text."""
    ids = sorted(jobs | bookings)
    changed = 0
    with connection.cursor() as cursor:
        for i in range(0, len(ids), 100):
            chunk = ids[i:i + 100]
            where = " OR ".join(["data LIKE %s ESCAPE '\\'"] * len(chunk))
            cursor.execute(f'SELECT channel, "offset", data FROM hub_publication WHERE sender IS NULL '
                           f"AND data IS NOT NULL AND ({where})",
                           ["%" + _like_escape(orjson.dumps(x).decode()) + "%" for x in chunk])
            for channel, offset, raw in cursor.fetchall():
                data = orjson.loads(raw)
                if not isinstance(data, dict) or not (data.get("job") in jobs or data.get("booking") in bookings):
                    continue
                kept = {k: v for k, v in data.items() if k not in PLACE_KEYS}
                if kept != data:
                    cursor.execute('UPDATE hub_publication SET data = %s WHERE channel = %s AND "offset" = %s',
                                   [orjson.dumps(kept).decode(), channel, offset])
                    changed += 1
    return {"place_publications": changed}


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


def erase_from_contexts(user: str, pseudonym: str) -> dict[str, int]:
    """Other users' AI transcripts keep the room messages sent as context ([{from, text}]): U's
    messages there lose their text and name the pseudonym."""
    try:
        from ai_assist.models import Transcript
    except ImportError:
        return {}
    table = connection.ops.quote_name(Transcript._meta.db_table)
    needle = "%" + _like_escape(orjson.dumps(user).decode()) + "%"
    with connection.cursor() as cursor:
        # The JSON text narrows (user ids hold no character JSON escapes), the parsed context decides.
        cursor.execute(f"SELECT id FROM {table} WHERE CAST(context AS TEXT) LIKE %s ESCAPE '\\'", [needle])
        ids = [row[0] for row in cursor.fetchall()]
    changed = 0
    for t in Transcript.objects.filter(id__in=ids).exclude(user=user):
        context = t.context if isinstance(t.context, list) else []
        cleaned = [{**m, "from": pseudonym, "text": ""} if isinstance(m, dict) and m.get("from") == user else m
                   for m in context]
        if cleaned != context:
            Transcript.objects.filter(id=t.id).update(context=cleaned)
            changed += 1
    return {"transcript_contexts": changed}


def _forget_provider(user: str) -> None:
    try:
        from matching.sync import erase_provider
    except ImportError:
        return
    erase_provider(user)


def erase(user: str, actor: str = "operator") -> dict[str, Any]:
    """Erase `user` in one transaction; returns the counts (also in the audit row)."""
    pseudonym = f"{ERASED}-{secrets.token_hex(6)}"
    counts: dict[str, Any] = {}
    with transaction.atomic():
        jobs, bookings = places_of(user)
        counts.update(erase_publications(user, pseudonym))
        counts.update(erase_places(jobs, bookings))
        counts.update(erase_jobs(user, pseudonym))
        counts.update(erase_calls(user, pseudonym))
        counts.update(erase_rooms(user, pseudonym))
        counts.update(erase_bookings(user, pseudonym))
        counts.update(erase_transcripts(user))
        counts.update(erase_from_contexts(user, pseudonym))
        # Every token of U, in every tenant: an erased user's open sockets close, and no token
        # issued before the erasure gets back in.
        from hub import revocation

        revocation.revoke_user(revocation.ALL_TENANTS, user, actor)
        # The audit row names the subject (needed to prove the erasure) but holds no personal data.
        audit.record(actor, "gdpr.erase", f"user:{user}", role="operator", pseudonym=pseudonym, **counts)
        # Running hubs hold recent publications in memory: make them forget the erased content.
        transaction.on_commit(store.invalidate_caches)
        # And U as a provider: every process's matcher index, pending snapshot writes, the snapshot.
        transaction.on_commit(lambda: _forget_provider(user))
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
