"""hub.privacy: a person's share of the streams (export, erasure by tombstone or pseudonym) and
erasures learnt from the audit log by a process that could not hear them."""
from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from django.db import transaction

from core.models import AuditLog
from hub import privacy, store
from hub.models import Publication
from tests.support import uid


def rows(channel: str) -> list[tuple[str | None, object]]:
    return [(r.sender, orjson.loads(r.data) if r.data is not None else None)
            for r in Publication.objects.filter(channel=channel).order_by("offset")]


def test_like_needles_match_a_json_string_and_nothing_wider() -> None:
    assert privacy.like_needle("a_b%c") == '%"a\\_b\\%c"%'
    assert privacy.user_channels_like("u_1") == "%/user:u\\_1"


def test_export_then_erase_tombstones_what_they_wrote_and_renames_them_elsewhere() -> None:
    u, other = uid("u"), uid("o")
    chat, job, mine = f"t1/chat:{uid('r')}", f"t1/job:{uid('j')}", f"t1/user:{u}"
    with transaction.atomic():
        store.append(chat, {"text": "my address"}, sender=u)
        store.append(chat, {"text": "hi"}, sender=other)
        store.append(mine, {"kind": "offer"})
        store.append(job, {"kind": "bid", "provider": u})  # U acted: tombstone
        store.append(job, {"kind": "assigned", "team": [u, other]})  # U named: pseudonym
    exported = privacy.export(u)
    assert [(m["tenant"], m["channel"], m["data"]) for m in exported["messages"]] == \
        [("t1", chat.partition("/")[2], {"text": "my address"})]
    assert [s["data"] for s in exported["user_stream"]] == [{"kind": "offer"}]
    with transaction.atomic():
        counts = privacy.erase(u, "erased-1")
    assert counts == {"messages_tombstoned": 1, "private_tombstoned": 1, "server_tombstoned": 1,
                      "server_anonymised": 1}
    assert rows(chat) == [(privacy.ERASED, None), (other, {"text": "hi"})]
    assert rows(mine) == [(None, None)]
    assert rows(job) == [(None, None), (None, {"kind": "assigned", "team": ["erased-1", other]})]


@pytest.fixture
def heard() -> Iterator[list[str]]:
    users: list[str] = []
    privacy.on_erased(users.append)
    try:
        yield users
    finally:
        privacy._erased_listeners.remove(users.append)


def test_erasures_in_the_audit_log_reach_a_process_that_did_not_hear_them(heard: list[str]) -> None:
    dropped: list[int] = []
    store.on_invalidate(lambda: dropped.append(1))
    try:
        privacy.erasures_at_start()
        assert privacy.poll_erasures() == 0
        u = uid("u")
        AuditLog.objects.create(actor="ops", action="gdpr.erase", target=f"user:{u}")
        assert privacy.poll_erasures() == 1 and heard == [u] and dropped == [1]
        assert privacy.poll_erasures() == 0
    finally:
        store._invalidate_hooks.pop()
