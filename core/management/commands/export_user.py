"""Data-subject export: export_user --user U [--out file.json].

One JSON document with everything the hub holds about U: the messages U published
(hub_publication rows with sender = U), U's private `user:U` stream (the notifications sent to U),
custom jobs U posted, jobs U was chosen for (accepted provider), U's comments/queries/answers and
bids, bookings U made and offers/assignments U received, U's provider state, calls U took part in,
U's AI assist transcripts, and the audit rows about U (U the actor or the target). Domain tables
are optional (an app that is not installed is skipped). Audited as "gdpr.export".
"""
from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.forms.models import model_to_dict

from core import audit


def _row(obj: Any) -> dict[str, Any]:
    out = model_to_dict(obj)
    # model_to_dict skips non-editable fields (auto_now...): add them back.
    for f in obj._meta.concrete_fields:
        if f.attname not in out and f.name not in out:
            out[f.name] = getattr(obj, f.attname)
    return out


def messages(user: str) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute('SELECT channel, "offset", ts, data FROM hub_publication WHERE sender = %s '
                       'ORDER BY ts, channel, "offset"', [user])
        rows = cursor.fetchall()
    return [{"channel": ch, "offset": int(off), "ts": int(ts), "data": orjson.loads(d) if d is not None else None}
            for ch, off, ts, d in rows]


def user_stream(user: str) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute('SELECT "offset", ts, data FROM hub_publication WHERE channel = %s ORDER BY "offset"',
                       [f"user:{user}"])
        rows = cursor.fetchall()
    return [{"offset": int(off), "ts": int(ts), "data": orjson.loads(d) if d is not None else None}
            for off, ts, d in rows]


def audit_rows(user: str) -> list[dict[str, Any]]:
    from django.db.models import Q

    from core.models import AuditLog

    rows = AuditLog.objects.filter(Q(actor=user) | Q(target__in=[user, f"user:{user}"])).order_by("id")
    return [_row(a) for a in rows]


def jobs_and_bids(user: str) -> dict[str, list[dict[str, Any]]]:
    try:
        from rooms.models import Bid, Job
    except ImportError:
        return {}
    out: dict[str, list[dict[str, Any]]] = {
        "jobs": [_row(j) for j in Job.objects.filter(owner=user).order_by("created_at", "id")],
        "bids": [_row(b) for b in Bid.objects.filter(provider=user).order_by("created_at", "id")],
        "jobs_as_provider": [_row(j) for j in Job.objects.filter(provider=user).order_by("created_at", "id")],
    }
    try:
        from rooms.models import JobAnswer, JobComment, JobQuery
    except ImportError:
        return out
    out["job_comments"] = [_row(c) for c in JobComment.objects.filter(author=user).order_by("created_at", "id")]
    out["job_queries"] = [_row(q) for q in JobQuery.objects.filter(author=user).order_by("created_at", "id")]
    out["job_answers"] = [_row(a) for a in JobAnswer.objects.filter(author=user).order_by("created_at", "id")]
    return out


def calls(user: str) -> list[dict[str, Any]]:
    try:
        from rooms.models import Call, CallParticipant
    except ImportError:
        return []
    ids = set(CallParticipant.objects.filter(user=user).values_list("call_id", flat=True))
    ids |= set(Call.objects.filter(caller=user).values_list("id", flat=True))
    out = []
    for c in Call.objects.filter(id__in=ids).order_by("started_at", "id"):
        row = _row(c)
        row["participants"] = [_row(p) for p in c.participants.filter(user=user)]
        out.append(row)
    return out


def rooms(user: str) -> list[dict[str, Any]]:
    try:
        from rooms.models import Room, RoomMember
    except ImportError:
        return []
    ids = RoomMember.objects.filter(user=user).values_list("room_id", flat=True)
    return [_row(r) for r in Room.objects.filter(id__in=ids).order_by("created_at", "id")]


def bookings(user: str) -> dict[str, Any]:
    try:
        from matching.models import Assignment, Booking, Offer, ProviderState
    except ImportError:
        return {}
    state = ProviderState.objects.filter(user=user).first()
    return {
        "bookings": [_row(b) for b in Booking.objects.filter(customer=user).order_by("created_at", "id")],
        "offers": [_row(o) for o in Offer.objects.filter(provider=user).order_by("offered_at", "id")],
        "assignments": [_row(a) for a in Assignment.objects.filter(provider=user).order_by("accepted_at", "id")],
        "provider_state": _row(state) if state is not None else None,
    }


def transcripts(user: str) -> list[dict[str, Any]]:
    try:
        from ai_assist import transcripts as tr
    except ImportError:
        return []
    fn = getattr(tr, "export_user_transcripts", None)
    if fn is not None:
        return list(fn(user))
    try:
        from ai_assist.models import Transcript
    except ImportError:
        return []
    return [_row(t) for t in Transcript.objects.filter(user=user).order_by("created_at", "id")]


def collect(user: str) -> dict[str, Any]:
    """Everything about `user`, JSON-ready (datetimes become ISO strings when dumped)."""
    doc: dict[str, Any] = {
        "user": user,
        "exported_at": datetime.now(UTC).isoformat(),
        "messages": messages(user),
        "user_stream": user_stream(user),
        "audit": audit_rows(user),
        "rooms": rooms(user),
        "calls": calls(user),
        "transcripts": transcripts(user),
    }
    doc.update(jobs_and_bids(user))
    doc.update(bookings(user))
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
        doc = collect(user)
        text = json.dumps(doc, default=str, indent=2, ensure_ascii=False)
        counts = {k: len(v) for k, v in doc.items() if isinstance(v, list)}
        audit.record(opts["actor"], "gdpr.export", f"user:{user}", role="operator",
                     out=opts["out"] or "stdout", counts=counts)
        if opts["out"]:
            with open(opts["out"], "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            sys.stderr.write(f"exported {user}: {counts} -> {opts['out']}\n")
        else:
            self.stdout.write(text)
