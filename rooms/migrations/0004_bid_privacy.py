"""Bid privacy for bids placed before it: stored `bid` events on `job:` streams lose who bid, the
amount, the currency, the note and `replaces`, and their sender (`from` named the bidder).

Each becomes what the hub now publishes, `{kind: "bid", job, bid, count}`, same offset; `count`
is recomputed in offset order (a bid that replaced another leaves the count as it was; no bids come
after an acceptance). The owner still reads every bid in `jobs.get`. Nothing is copied to `user:`
channels (the old bids are history there is no live reader for). Running hubs are told to drop
their hot caches, as an erasure does, so recovery reads the rewritten rows.
"""
from typing import Any

import orjson
from django.db import migrations, transaction

BATCH = 1000
PUBLIC = {"kind", "job", "bid", "count"}


def _drop_caches() -> None:
    from hub import store

    store.invalidate_caches()


def strip_bids(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    last: tuple[str, int] = ("", -1)
    channel_now, live, changed = "", 0, 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                'SELECT channel, "offset", data FROM hub_publication '
                'WHERE channel LIKE %s AND data LIKE %s AND (channel > %s OR (channel = %s AND "offset" > %s)) '
                'ORDER BY channel, "offset" LIMIT %s',
                ["job:%", '%"kind":"bid"%', last[0], last[0], last[1], BATCH])
            rows = cursor.fetchall()
            if not rows:
                break
            last = (rows[-1][0], int(rows[-1][1]))
            updates: list[list[Any]] = []
            for channel, offset, raw in rows:
                data = orjson.loads(raw)
                if not isinstance(data, dict) or data.get("kind") != "bid":
                    continue  # a comment that merely quotes the words
                if channel != channel_now:
                    channel_now, live = channel, 0
                if set(data) <= PUBLIC:  # already public (a second run): keep its count
                    live = data.get("count", live) if isinstance(data.get("count"), int) else live
                    continue
                if not data.get("replaces"):
                    live += 1
                public = {"kind": "bid", "job": data.get("job", channel[4:]), "bid": data.get("bid"),
                          "count": live}
                updates.append([orjson.dumps(public).decode(), channel, offset])
            if updates:
                cursor.executemany('UPDATE hub_publication SET data = %s, sender = NULL '
                                   'WHERE channel = %s AND "offset" = %s', updates)
                changed += len(updates)
    if changed:
        transaction.on_commit(_drop_caches, using=connection.alias)


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial"), ("rooms", "0003_room_pair_key")]
    operations = [migrations.RunPython(strip_bids, migrations.RunPython.noop, elidable=True)]
