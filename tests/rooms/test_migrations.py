"""rooms/migrations: the data migrations that rewrite what older versions stored."""
from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
import types
import uuid

import orjson
import pytest
from django.db import connection

from hub.models import Publication
from hub.store import append, atomic
from rooms.models import pair_key
from tests.support import ROOT, uid


def test_migration_keys_existing_direct_rooms_and_keeps_duplicates(tmp_path):
    """On a database with two direct rooms for one pair, the oldest becomes the pair's room."""
    db = tmp_path / "old.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}"}

    def manage(*args: str) -> None:
        subprocess.run([sys.executable, "manage.py", *args, "--verbosity", "0"], cwd=ROOT, env=env, check=True)

    manage("migrate", "rooms", "0002")
    with sqlite3.connect(db) as conn:
        for rid, at, people in [("old", "2026-01-01", ("a", "b")), ("dup", "2026-02-01", ("b", "a")),
                                ("solo", "2026-01-01", ("c",)), ("book", "2026-01-01", ("a", "b"))]:
            kind = "booking" if rid == "book" else "direct"
            conn.execute("INSERT INTO rooms_room (id, kind, ref, tenant, created_by, created_at) "
                         "VALUES (?, ?, '', 't', 'a', ?)", (rid, kind, at))
            for user in people:
                conn.execute("INSERT INTO rooms_roommember (room_id, user, joined_at) VALUES (?, ?, ?)",
                             (rid, user, at))
    manage("migrate")
    with sqlite3.connect(db) as conn:
        keys = dict(conn.execute("SELECT id, pair_key FROM rooms_room").fetchall())
        assert keys == {"old": pair_key("a", "b"), "dup": None, "solo": None, "book": None}
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO rooms_room (id, kind, ref, tenant, created_by, created_at, pair_key) "
                         "VALUES (?, 'direct', '', 't', 'b', '2026-03-01', ?)",
                         (uuid.uuid4().hex[:20], pair_key("b", "a")))


def test_the_migration_strips_bids_stored_before_bid_privacy() -> None:
    """Old `bid` events (amount, note, provider, sender) become the public shape, offsets kept."""
    migration = importlib.import_module("rooms.migrations.0004_bid_privacy")
    job, p1, p2 = uid("j"), uid("p"), uid("p")
    old = [({"kind": "bid", "job": job, "bid": "b1", "provider": p1, "amount": 500, "currency": "GBP",
             "note": "p1's note", "replaces": None}, p1),
           ({"kind": "comment", "job": job, "comment": "c1", "by": p2, "role": "provider",
             "text": 'quoting {"kind":"bid"} here'}, p2),
           ({"kind": "bid", "job": job, "bid": "b2", "provider": p2, "amount": 400, "currency": "GBP",
             "note": "", "replaces": None}, p2),
           ({"kind": "bid", "job": job, "bid": "b3", "provider": p1, "amount": 450, "currency": "GBP",
             "note": "again", "replaces": "b1"}, p1)]
    # Stored as they were before tenants (migration 0004 runs before core.0004_tenant_channels).
    with atomic():
        for data, sender in old:
            append(f"job:{job}", data, sender=sender)
    migration.strip_bids(None, types.SimpleNamespace(connection=connection))
    rows = list(Publication.objects.filter(channel=f"job:{job}").order_by("offset")
                .values_list("offset", "sender", "data"))
    assert [(o, s, orjson.loads(d)) for o, s, d in rows] == [
        (1, None, {"kind": "bid", "job": job, "bid": "b1", "count": 1}),
        (2, p2, old[1][0]),
        (3, None, {"kind": "bid", "job": job, "bid": "b2", "count": 2}),
        (4, None, {"kind": "bid", "job": job, "bid": "b3", "count": 2})]
    migration.strip_bids(None, types.SimpleNamespace(connection=connection))  # a second run changes nothing
    assert list(Publication.objects.filter(channel=f"job:{job}").order_by("offset")
                .values_list("offset", "sender", "data")) == rows
