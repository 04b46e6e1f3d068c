"""Rooms, custom jobs and calls in a data-subject request.

Jobs U posted: owner pseudonymised, title/description/cancel reason blanked, place set to 0, 0;
server publications about them anywhere lose their place and U's text. Bids, comments, queries
and answers by U: author pseudonymised, text blanked; amounts and states stay (the other party's
record). Calls: U's id pseudonymised. Room memberships: deleted (rooms U created keep a
pseudonymised creator). Retention: ended call records (`calls`).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from core import privacy
from hub import privacy as hub_privacy
from rooms.models import Bid, Call, CallParticipant, CallStatus, Job, JobAnswer, JobComment, JobQuery, Room, RoomMember

BATCH = 5000


def export(user: str) -> dict[str, Any]:
    row = privacy.row
    call_ids = set(CallParticipant.objects.filter(user=user).values_list("call_id", flat=True))
    call_ids |= set(Call.objects.filter(caller=user).values_list("id", flat=True))
    calls = []
    for c in Call.objects.filter(id__in=call_ids).order_by("started_at", "id"):
        entry = row(c)
        entry["participants"] = [row(p) for p in c.participants.filter(user=user)]
        calls.append(entry)
    room_ids = RoomMember.objects.filter(user=user).values_list("room_id", flat=True)
    return {
        "rooms": [row(r) for r in Room.objects.filter(id__in=room_ids).order_by("created_at", "id")],
        "calls": calls,
        "jobs": [row(j) for j in Job.objects.filter(owner=user).order_by("created_at", "id")],
        "bids": [row(b) for b in Bid.objects.filter(provider=user).order_by("created_at", "id")],
        "jobs_as_provider": [row(j) for j in Job.objects.filter(provider=user).order_by("created_at", "id")],
        "job_comments": [row(c) for c in JobComment.objects.filter(author=user).order_by("created_at", "id")],
        "job_queries": [row(q) for q in JobQuery.objects.filter(author=user).order_by("created_at", "id")],
        "job_answers": [row(a) for a in JobAnswer.objects.filter(author=user).order_by("created_at", "id")],
    }


def erase(user: str, pseudonym: str) -> dict[str, int]:
    # The job ids first: the owner column is about to change.
    jobs = set(Job.objects.filter(owner=user).values_list("id", flat=True))
    out = {
        "place_publications": hub_privacy.erase_places("job", jobs),
        # The place goes too (coarsened to 0, 0: the columns are not nullable).
        "jobs": Job.objects.filter(owner=user).update(owner=pseudonym, title="[erased]", description="",
                                                      cancel_reason="", lat=0.0, lng=0.0),
        "bids": Bid.objects.filter(provider=user).update(provider=pseudonym, note=""),
    }
    Job.objects.filter(provider=user).update(provider=pseudonym)
    # U's words on someone else's job (U cancelled it as the chosen provider) go too.
    Job.objects.filter(cancelled_by=user).update(cancelled_by=pseudonym, cancel_reason="")
    out["job_texts"] = (JobComment.objects.filter(author=user).update(author=pseudonym, text="")
                        + JobQuery.objects.filter(author=user).update(author=pseudonym, text="")
                        + JobAnswer.objects.filter(author=user).update(author=pseudonym, text=""))
    out["calls"] = Call.objects.filter(caller=user).update(caller=pseudonym)
    Call.objects.filter(ended_by=user).update(ended_by=pseudonym)
    out["call_participants"] = CallParticipant.objects.filter(user=user).update(user=pseudonym)
    Room.objects.filter(created_by=user).update(created_by=pseudonym)
    # A direct room's pair key is derived from the user's id: it goes with the membership.
    Room.objects.filter(members__user=user, pair_key__isnull=False).update(pair_key=None)
    out["room_memberships"] = RoomMember.objects.filter(user=user).delete()[0]
    return out


def purge_calls(days: int, dry_run: bool) -> dict[str, int]:
    cutoff = timezone.now() - timedelta(days=days)
    # Only finished calls: a ringing or live call is never purged, whatever its age.
    old = Call.objects.filter(started_at__lt=cutoff, status=CallStatus.ENDED)
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


ENTRY = privacy.Entry("rooms", export=export, erase=erase,
                      retention=(privacy.Retention("calls", "HUB_RETAIN_CALLS_DAYS", purge_calls),))
