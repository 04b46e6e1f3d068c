"""AI assist transcripts in a data-subject request, and their retention (`transcripts`).

Export: every transcript of the user, oldest first. Erasure: the user's transcripts are deleted,
and the user's room messages inside other users' transcripts (their context, [{from, text}]) lose
their text and name the pseudonym. A row still waiting in a journal (written during a database
outage) is checked against the erasures when it is finally inserted (ai_assist.transcripts).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from ai_assist.models import Transcript
from core import privacy
from hub.privacy import like_needle


def export(user: str) -> dict[str, Any]:
    return {"transcripts": [t.as_dict() for t in Transcript.objects.filter(user=user).order_by("created_at", "id")]}


def erase(user: str, pseudonym: str) -> dict[str, int]:
    deleted = Transcript.objects.filter(user=user).delete()[0]
    table = connection.ops.quote_name(Transcript._meta.db_table)
    with connection.cursor() as cursor:
        # The JSON text narrows (user ids hold no character JSON escapes), the parsed context decides.
        cursor.execute(f"SELECT id FROM {table} WHERE CAST(context AS TEXT) LIKE %s ESCAPE '\\'", [like_needle(user)])
        ids = [r[0] for r in cursor.fetchall()]
    changed = 0
    for t in Transcript.objects.filter(id__in=ids).exclude(user=user):
        context = t.context if isinstance(t.context, list) else []
        cleaned = [{**m, "from": pseudonym, "text": ""} if isinstance(m, dict) and m.get("from") == user else m
                   for m in context]
        if cleaned != context:
            Transcript.objects.filter(id=t.id).update(context=cleaned)
            changed += 1
    return {"transcripts": int(deleted), "transcript_contexts": changed}


def purge(days: int, dry_run: bool) -> dict[str, int]:
    old = Transcript.objects.filter(created_at__lt=timezone.now() - timedelta(days=days))
    return {"transcripts": old.count() if dry_run else int(old.delete()[0])}


ENTRY = privacy.Entry("ai_assist", export=export, erase=erase,
                      retention=(privacy.Retention("transcripts", "HUB_RETAIN_TRANSCRIPTS_DAYS", purge),))
