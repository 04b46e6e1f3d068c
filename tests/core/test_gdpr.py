"""GDPR export and erasure, and retention purge, against the real database."""
from __future__ import annotations

import io
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

from core.models import AuditLog
from hub import store


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


TENANT = "t1"  # the tenant of tests.support's tokens


def publish(channel: str, data: object, sender: str | None) -> int:
    """Append on the protocol channel `channel` of TENANT (streams are tenant-qualified)."""
    with transaction.atomic():
        return store.append(f"{TENANT}/{channel}", data, sender=sender).offset


def read_all(channel: str) -> list[store.Pub]:
    _top, epoch = store.head(f"{TENANT}/{channel}")
    return store.read(f"{TENANT}/{channel}", epoch, 0, None, 1000)


@pytest.fixture
def world() -> dict[str, str]:
    """Two users chatting in one room, U's private channel, a job U posted with V's bid, a call, a transcript."""
    u, v = uid("u"), uid("v")
    room = f"chat:{uid('r')}"
    publish(room, {"text": "hi from u"}, u)
    publish(room, {"text": "hi from v"}, v)
    publish(room, {"text": "u again"}, u)
    publish(room, {"text": "v again"}, v)
    publish(f"user:{u}", {"kind": "booking.assigned", "providers": [v]}, None)
    publish(f"user:{v}", {"kind": "call.invite", "from": u}, None)  # a notification about U, to V
    publish(f"user:{v}", {"kind": "booking.assigned", "providers": [u, "someone"]}, None)
    out = {"u": u, "v": v, "room": room}
    try:
        from rooms.models import Bid, Call, CallParticipant, Job

        job = Job.objects.create(tenant="t1", owner=u, owner_role="customer", title="Paint my fence",
                                 description="at 1 Acacia Avenue", category="paint", lat=51.5, lng=-0.1)
        Bid.objects.create(job=job, provider=v, provider_role="provider", amount=1000, currency="GBP", note="v's note")
        their_job = Job.objects.create(tenant="t1", owner=v, owner_role="customer", title="V's job",
                                       category="paint", lat=51.5, lng=-0.1)
        Bid.objects.create(job=their_job, provider=u, provider_role="provider", amount=2000, currency="GBP",
                           note="u's note")
        publish(f"job:{their_job.id}", {"kind": "bid", "job": their_job.id, "provider": u, "amount": 2000}, None)
        publish(f"job:{their_job.id}", {"kind": "comment", "job": their_job.id, "author": v, "text": "thanks"}, None)
        call = Call.objects.create(tenant="t1", caller=u, media="voice", channel=uid("c"))
        CallParticipant.objects.create(call=call, user=u, uid=1, is_caller=True, status="joined")
        CallParticipant.objects.create(call=call, user=v, uid=2, status="ringing")
        out.update(job=job.id, their_job=their_job.id, call=call.id)
    except ImportError:
        pass
    try:
        from ai_assist.models import Transcript

        Transcript.objects.create(id=uid("a"), user=u, prompt="my address is 1 Acacia Avenue", outcome="ok",
                                  created_at=timezone.now())
        Transcript.objects.create(id=uid("a"), user=v, prompt="v's question", outcome="ok", created_at=timezone.now())
    except ImportError:
        pass
    return out


def test_export_then_erase_round_trip(world: dict[str, str], tmp_path: Path) -> None:
    u, v, room = world["u"], world["v"], world["room"]
    out = tmp_path / "export.json"
    call_command("export_user", user=u, out=str(out))
    doc = json.loads(out.read_text())
    assert doc["user"] == u
    assert [m["data"]["text"] for m in doc["messages"]] == ["hi from u", "u again"]
    assert all(m["channel"] == room for m in doc["messages"])
    if "job" in world:
        assert [j["id"] for j in doc["jobs"]] == [world["job"]]
        assert [b["note"] for b in doc["bids"]] == ["u's note"]
        assert [c["id"] for c in doc["calls"]] == [world["call"]]
    assert [t["prompt"] for t in doc["transcripts"]] == ["my address is 1 Acacia Avenue"]
    assert AuditLog.objects.filter(action="gdpr.export", target=f"user:{u}").exists()

    before_room = read_all(room)
    call_command("erase_user", user=u, yes=True, stdout=io.StringIO())

    # Tombstones keep every offset: recovery from 0 still gets 1..n with no gap.
    after_room = read_all(room)
    assert [p.offset for p in after_room] == [p.offset for p in before_room] == [1, 2, 3, 4]
    by_offset = {p.offset: p for p in after_room}
    assert by_offset[1].data is None and by_offset[1].sender == "erased"
    assert by_offset[3].data is None and by_offset[3].sender == "erased"
    # The other user's messages are untouched.
    assert (by_offset[2].data, by_offset[2].sender) == ({"text": "hi from v"}, v)
    assert (by_offset[4].data, by_offset[4].sender) == ({"text": "v again"}, v)
    # A subscriber recovering with `since` (hub.store.read after offset 1) gets offsets 2, 3, 4.
    _top, epoch = store.head(f"{TENANT}/{room}")
    assert [p.offset for p in store.read(f"{TENANT}/{room}", epoch, 1, 5, 10)] == [2, 3, 4]
    # U's private channel: tombstoned. V's notifications naming U: U authored it -> tombstone;
    # U merely listed -> pseudonymised; V's data stays.
    assert [p.data for p in read_all(f"user:{u}")] == [None]
    v_pubs = read_all(f"user:{v}")
    assert [p.offset for p in v_pubs] == [1, 2] and v_pubs[0].data is None
    assert v_pubs[1].data is not None and u not in orjson.dumps(v_pubs[1].data).decode()
    assert "someone" in v_pubs[1].data["providers"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM hub_publication WHERE sender = %s", [u])
        assert cursor.fetchone()[0] == 0

    if "job" in world:
        from rooms.models import Bid, Call, CallParticipant, Job

        job = Job.objects.get(id=world["job"])
        assert job.owner != u and job.owner.startswith("erased-") and job.description == ""
        assert Bid.objects.get(job=job).note == "v's note"  # V's bid on U's job stays
        mine = Bid.objects.get(job_id=world["their_job"])
        assert mine.provider == job.owner and mine.note == "" and mine.amount == 2000
        assert Job.objects.get(id=world["their_job"]).title == "V's job"
        job_pubs = read_all(f"job:{world['their_job']}")
        assert [p.offset for p in job_pubs] == [1, 2]
        assert job_pubs[0].data is None and job_pubs[1].data["author"] == v
        call = Call.objects.get(id=world["call"])
        assert call.caller == job.owner
        assert sorted(CallParticipant.objects.filter(call=call).values_list("user", flat=True)) == sorted(
            [job.owner, v])
    from ai_assist.models import Transcript

    assert not Transcript.objects.filter(user=u).exists()
    assert Transcript.objects.filter(user=v).exists()
    erase = AuditLog.objects.get(action="gdpr.erase", target=f"user:{u}")
    assert erase.detail["messages_tombstoned"] == 2 and erase.detail["transcripts"] == 1

    # After erasure an export holds nothing of U.
    out2 = tmp_path / "export2.json"
    call_command("export_user", user=u, out=str(out2))
    doc2 = json.loads(out2.read_text())
    assert doc2["messages"] == [] and doc2["transcripts"] == [] and doc2.get("jobs", []) == []


def test_erase_needs_confirmation(world: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("builtins.input", lambda prompt: "no")
    with pytest.raises(CommandError):
        call_command("erase_user", user=world["u"])
    assert read_all(world["room"])[0].data == {"text": "hi from u"}


def _old_pub(channel: str, offset: int, days: float) -> None:
    ts = int((time.time() - days * 86400) * 1000)
    with connection.cursor() as cursor:
        cursor.execute('INSERT INTO hub_publication (channel, "offset", ts, sender, data) VALUES (%s, %s, %s, %s, %s)',
                       [f"{TENANT}/{channel}", offset, ts, "x", '{"old": true}'])


def test_purge_by_kind_and_dry_run() -> None:
    channel = f"chat:{uid('p')}"
    _old_pub(channel, 1, 400)
    _old_pub(channel, 2, 10)
    key = uid("k")
    with connection.cursor() as cursor:
        cursor.execute('INSERT INTO hub_pubkey (channel, key, "offset", created_at) VALUES (%s, %s, 1, %s)',
                       [f"{TENANT}/{channel}", key, int((time.time() - 2 * 86400) * 1000)])
    from ai_assist.models import Transcript

    old_t = Transcript.objects.create(id=uid("a"), user="p", prompt="x", outcome="ok",
                                      created_at=timezone.now() - timedelta(days=40))
    new_t = Transcript.objects.create(id=uid("a"), user="p", prompt="x", outcome="ok", created_at=timezone.now())

    out = io.StringIO()
    call_command("purge", messages_days=365, transcripts_days=30, calls_days=365, dry_run=True, stdout=out)
    dry = json.loads(out.getvalue())
    assert dry["dry_run"] and dry["deleted"]["messages"] >= 1 and dry["deleted"]["transcripts"] >= 1
    assert [p.offset for p in read_all(channel)] == [1, 2]

    out = io.StringIO()
    call_command("purge", messages_days=365, transcripts_days=30, calls_days=365, stdout=out)
    assert [p.offset for p in read_all(channel)] == [2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM hub_pubkey WHERE key = %s", [key])
        assert cursor.fetchone()[0] == 0
    assert not Transcript.objects.filter(id=old_t.id).exists()
    assert Transcript.objects.filter(id=new_t.id).exists()
    assert AuditLog.objects.filter(action="retention.purge").exists()
    with pytest.raises(CommandError):
        call_command("purge", messages_days=0, stdout=io.StringIO())


def test_purge_calls() -> None:
    from rooms.models import Call

    old = Call.objects.create(tenant="t1", caller=uid("c"), media="voice", channel=uid("ch"), status="ended")
    live = Call.objects.create(tenant="t1", caller=uid("c"), media="voice", channel=uid("ch"), status="active")
    Call.objects.filter(id__in=[old.id, live.id]).update(started_at=timezone.now() - timedelta(days=500))
    call_command("purge", calls_days=365, stdout=io.StringIO())
    assert not Call.objects.filter(id=old.id).exists()
    assert Call.objects.filter(id=live.id).exists()  # never purge a call that is still live


@pytest.mark.services
def test_erasure_reaches_a_running_hubs_hot_cache(live_hub) -> None:
    """A running hub keeps recent publications in memory; after erasure, recovery must not serve them."""
    from core.management.commands.erase_user import erase
    from tests.support import HubClient, mint
    from tests.support import uid as new_uid

    alice, bob = new_uid("alice"), new_uid("bob")
    a = HubClient(live_hub.url, mint(alice))
    b = HubClient(live_hub.url, mint(bob))
    room = a.rpc("rooms.create", members=[bob], kind="direct")["room"]
    channel = f"chat:{room}"
    sub = b.call("subscribe", channel=channel)  # keeps the channel open (and cached) in the hub
    for i in range(3):
        a.call("publish", channel=channel, data={"text": f"secret {i}"})
    b.next_push("pub", channel=channel)
    erase(alice)
    deadline = time.time() + 5
    while True:
        fresh = HubClient(live_hub.url, mint(bob))
        rec = fresh.call("subscribe", channel=channel, since={"offset": 0, "epoch": sub["epoch"]})
        fresh.close()
        if all(p["data"] is None for p in rec["pubs"]) or time.time() > deadline:
            break
        time.sleep(0.1)
    assert rec["recovered"] is True
    assert [p["offset"] for p in rec["pubs"]] == [1, 2, 3]
    assert all(p["data"] is None and p["from"] == "erased" for p in rec["pubs"])


def test_erasure_drops_the_direct_pair_key() -> None:
    """The pair key is derived from both ids: after erasure a new direct room for the pair is a new room."""
    from core.management.commands.erase_user import erase
    from hub.rpc import Caller
    from rooms.actions import chat
    from rooms.models import Room

    u, v = uid("u"), uid("v")
    room = chat.create_room(Caller(u, "customer", "t1"), members=[v], kind="direct")["room"]
    erase(u)
    assert Room.objects.get(pk=room).pair_key is None
    again = chat.create_room(Caller(u, "customer", "t1"), members=[v], kind="direct")
    assert again["created"] is True and again["room"] != room


def test_erasure_removes_the_users_places_everywhere() -> None:
    """U's job and booking points, and the copies of them on providers' `user:` channels (job.new,
    offer, bid.accepted), go; the rest of those publications and other users' places stay."""
    from core.management.commands.erase_user import erase
    from matching.models import Booking, Offer
    from rooms.models import Job

    u, p, other = uid("u"), uid("p"), uid("o")
    job = Job.objects.create(tenant="t1", owner=u, owner_role="customer", title="Fix my boiler",
                             category="plumbing", lat=51.5012, lng=-0.1419)
    theirs = Job.objects.create(tenant="t1", owner=other, owner_role="customer", title="Other job",
                                category="plumbing", lat=51.6, lng=-0.2)
    booking = Booking.objects.create(customer=u, tenant="t1", category="plumbing", lat=51.5012, lng=-0.1419,
                                     mode="on_demand")
    area = {"lat": 51.501, "lng": -0.142, "area": {"cell": "88195da49bfffff", "radius_m": 590}}
    publish(f"user:{p}", {"kind": "job.new", "job": job.id, "title": "Fix my boiler", "category": "plumbing",
                          **area, "budget": None}, None)
    publish(f"user:{p}", {"kind": "offer", "booking": booking.id, "category": "plumbing", **area,
                          "distance_m": 300.0, "mode": "on_demand"}, None)
    publish(f"user:{p}", {"kind": "bid.accepted", "job": job.id, "bid": "b1", "lat": 51.5012, "lng": -0.1419},
                    None)
    publish(f"user:{p}", {"kind": "job.new", "job": theirs.id, "title": "Other job", **area}, None)
    # U as a provider: the offer's distance places U relative to someone's booking.
    elsewhere = Booking.objects.create(customer=other, tenant="t1", category="plumbing", lat=51.6, lng=-0.2,
                                       mode="on_demand")
    now = timezone.now()
    Offer.objects.create(booking=elsewhere, provider=u, distance_m=412.5, offered_at=now,
                         expires_at=now + timedelta(minutes=1))

    erase(u)

    job.refresh_from_db()
    booking.refresh_from_db()
    assert (job.lat, job.lng) == (0.0, 0.0) and (booking.lat, booking.lng) == (0.0, 0.0)
    assert Offer.objects.get(booking=elsewhere).distance_m == 0.0
    new, offer, accepted, untouched = (pub.data for pub in read_all(f"user:{p}"))
    for data in (new, offer, accepted):
        assert not {"lat", "lng", "area", "distance_m", "title"} & set(data), data
    assert new["kind"] == "job.new" and new["job"] == job.id and offer["booking"] == booking.id
    assert untouched["title"] == "Other job" and untouched["lat"] == 51.501
    theirs.refresh_from_db()
    assert (theirs.lat, theirs.lng) == (51.6, -0.2)


def test_erasure_reaches_the_users_messages_in_other_users_ai_transcripts() -> None:
    """An assist request with room context keeps the room's messages in the asker's transcript:
    U's messages there are erased, the asker's own stay."""
    from ai_assist.models import Transcript
    from core.management.commands.erase_user import erase

    u, v = uid("u"), uid("v")
    t = Transcript.objects.create(id=uid("a"), user=v, room="r1", prompt="summarise", outcome="ok",
                                  context=[{"from": u, "text": "my flat is 3B, door code 1234"},
                                           {"from": v, "text": "see you then"}],
                                  created_at=timezone.now())
    erase(u)
    t.refresh_from_db()
    mine, theirs = t.context
    assert mine["text"] == "" and mine["from"] != u and mine["from"].startswith("erased-")
    assert theirs == {"from": v, "text": "see you then"}
    assert t.prompt == "summarise"


def test_export_holds_jobs_as_provider_the_user_stream_and_audit_rows(tmp_path: Path) -> None:
    from core import audit
    from rooms.models import Job

    u, other = uid("u"), uid("o")
    won = Job.objects.create(tenant="t1", owner=other, owner_role="customer", title="Hang a door",
                             category="joinery", lat=51.5, lng=-0.1, provider=u, status="accepted")
    publish(f"user:{u}", {"kind": "bid.accepted", "job": won.id}, None)
    audit.record("ops1", "providers.rating", u, role="admin", tenant="t1", rating=4.5)
    audit.record("ops1", "zones.create", "z1", role="admin", tenant="t1")  # not about U
    out = tmp_path / "export.json"
    call_command("export_user", user=u, out=str(out))
    doc = json.loads(out.read_text())
    assert [j["id"] for j in doc["jobs_as_provider"]] == [won.id]
    assert [p["data"] for p in doc["user_stream"]] == [{"kind": "bid.accepted", "job": won.id}]
    assert [(a["action"], a["target"]) for a in doc["audit"]] == [("providers.rating", u)]


@pytest.mark.services
def test_erasure_removes_the_provider_from_every_process() -> None:
    """The matcher keeps providers in memory on every process, in the Redis snapshot and its table:
    after the erasure no process matches them, and no snapshot flush brings them back."""
    import redis

    from core.management.commands.erase_user import erase
    from matching.models import ProviderState
    from matching.sync import STATE_HASH
    from tests.support import HubClient, HubServer, mint

    env = {"HUB_MATCH_SNAPSHOT_S": "0.2"}
    a, b = HubServer(env=env), HubServer(env=env)
    a.start()
    b.start()
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        cat, p = uid("cat"), uid("p")
        lat, lng = 51.45, -0.2
        ring = [[lng - 0.05, lat - 0.05], [lng + 0.05, lat - 0.05], [lng + 0.05, lat + 0.05],
                [lng - 0.05, lat + 0.05], [lng - 0.05, lat - 0.05]]
        with HubClient(a.url, mint(uid("ops"), "admin")) as ops:
            ops.rpc("zones.create", name="Erasure zone", categories=[cat],
                    geometry={"type": "Polygon", "coordinates": [ring]})
        with HubClient(a.url, mint(p, "provider")) as prov:
            prov.rpc("providers.update", lat=lat, lng=lng, available=True, categories=[cat])

        def found(hub: HubServer) -> list[str]:
            with HubClient(hub.url, mint(uid("c"), "admin")) as cust:
                return [m["user"] for m in cust.rpc("match.find", lat=lat, lng=lng, category=cat)["providers"]]

        deadline = time.time() + 10
        key = f"{TENANT}/{p}"  # the snapshot is keyed <tenant>/<user>
        while not (found(a) == [p] and found(b) == [p] and client.hexists(STATE_HASH, key)):
            assert time.time() < deadline, "the provider never reached both processes and the snapshot"
            time.sleep(0.2)

        erase(p)

        deadline = time.time() + 10
        while found(a) or found(b) or client.hexists(STATE_HASH, key):
            assert time.time() < deadline, "an erased provider is still matched or in the snapshot"
            time.sleep(0.2)
        time.sleep(1.0)  # several snapshot flushes later, nothing came back
        assert not client.hexists(STATE_HASH, key)
        assert not ProviderState.objects.filter(user__endswith=f"/{p}").exists()
        assert found(a) == [] and found(b) == []
    finally:
        a.stop()
        b.stop()


def test_audit_rows_hold_no_free_text_and_a_cancel_reason_is_erased() -> None:
    """Audit rows are never erased (append-only, the legal record), so they must not hold a user's
    words: `jobs.cancel` records that a reason was given; the reason itself stays on the job, where
    the erasure blanks it, also when the canceller was the chosen provider rather than the owner."""
    from core.management.commands.erase_user import erase
    from hub.rpc import Caller
    from rooms.actions import jobs
    from rooms.models import Job

    owner, prov = uid("o"), uid("p")
    job = Job.objects.create(tenant="t1", owner=owner, owner_role="customer", title="Tile the bathroom",
                             category="tiling", lat=51.5, lng=-0.1, provider=prov, status="accepted")
    jobs.cancel(Caller(prov, "provider", "t1"), job_id=job.id, reason="my van broke down on Elm Road")
    row = AuditLog.objects.get(action="jobs.cancel", target=f"job:{job.id}")
    assert "Elm Road" not in orjson.dumps(row.detail).decode() and row.detail["reason_given"] is True
    job.refresh_from_db()
    assert job.cancel_reason == "my van broke down on Elm Road"
    erase(prov)
    job.refresh_from_db()
    assert job.cancel_reason == "" and job.cancelled_by.startswith("erased-")


@pytest.mark.services
def test_erasure_reaches_a_hub_that_has_no_redis() -> None:
    """The embedded default: `erase_user` runs in another process than the hub and no Redis
    carries its news. The hub learns it from the erasures' audit rows (hub.privacy.poll_erasures):
    its hot cache and its matcher forget the erased user within a poll."""
    from core.management.commands.erase_user import erase
    from tests.support import HubClient, mint, running_hubs
    from tests.support import uid as new_uid

    alice, bob, ops, cat = new_uid("alice"), new_uid("bob"), new_uid("ops"), new_uid("cat")
    lat, lng = 51.44, -0.21
    ring = [[lng - 0.05, lat - 0.05], [lng + 0.05, lat - 0.05], [lng + 0.05, lat + 0.05],
            [lng - 0.05, lat + 0.05], [lng - 0.05, lat - 0.05]]
    with running_hubs(env={"REDIS_URL": "", "HUB_REVOCATION_POLL_S": "1"}) as (hub,), \
            HubClient(hub.url, mint(alice, "provider")) as a, HubClient(hub.url, mint(bob)) as b, \
            HubClient(hub.url, mint(ops, "admin")) as admin:
        admin.rpc("zones.create", name="No Redis", categories=[cat],
                  geometry={"type": "Polygon", "coordinates": [ring]})
        a.rpc("providers.update", lat=lat, lng=lng, available=True, categories=[cat])
        assert [p["user"] for p in admin.rpc("match.find", lat=lat, lng=lng, category=cat)["providers"]] == [alice]
        room = a.rpc("rooms.create", members=[bob], kind="direct")["room"]
        channel = f"chat:{room}"
        sub = b.call("subscribe", channel=channel)  # keeps the channel open (and cached) in the hub
        for i in range(3):
            a.call("publish", channel=channel, data={"text": f"secret {i}"})
        b.next_push("pub", channel=channel)
        erase(alice)  # this process has Redis configured; the hub does not listen to it
        deadline = time.time() + 10
        while True:
            with HubClient(hub.url, mint(bob)) as fresh:
                rec = fresh.call("subscribe", channel=channel, since={"offset": 0, "epoch": sub["epoch"]})
            found = admin.rpc("match.find", lat=lat, lng=lng, category=cat)["providers"]
            if (all(p["data"] is None for p in rec["pubs"]) and not found) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert [p["offset"] for p in rec["pubs"]] == [1, 2, 3]
        assert all(p["data"] is None for p in rec["pubs"]), rec["pubs"]
        assert found == []


def test_a_journaled_transcript_that_outlived_an_erasure_is_not_written() -> None:
    """A transcript journaled during a database outage reaches the database after its user was
    erased: it is dropped on the way in, and the erased user's words in another's context blanked."""
    from ai_assist import transcripts
    from ai_assist.models import Transcript
    from core.management.commands.erase_user import erase

    u, v = uid("u"), uid("v")

    def row(user: str, context: list[dict[str, object]]) -> Transcript:
        return transcripts.build(assist=uid("a"), user=user, tenant="t1", room="r", prompt=f"from {user}",
                                 context=context, answer="ok", provider="fake", model="m", attempts=1,
                                 fallbacks=[], tokens_in=1, tokens_out=1, latency_ms=1, first_token_ms=1,
                                 outcome="ok")

    mine = row(u, [])
    theirs = row(v, [{"from": u, "text": "my address is 1 Acacia Avenue"}, {"from": v, "text": "thanks"}])
    erase(u)
    transcripts._insert([mine, theirs])  # what the writer or a journal replay does after the outage
    assert not Transcript.objects.filter(id=mine.id).exists()
    pseudonym = AuditLog.objects.filter(action="gdpr.erase", target=f"user:{u}").get().detail["pseudonym"]
    assert Transcript.objects.get(id=theirs.id).context == [{"from": pseudonym, "text": ""},
                                                            {"from": v, "text": "thanks"}]
    later = row(u, [])  # the same id used again after the erasure (a new account): kept
    transcripts._insert([later])
    assert Transcript.objects.filter(id=later.id).exists()


def test_old_cancel_audit_rows_lose_their_free_text() -> None:
    """`jobs.cancel` audit rows from before the audit held no personal text: the migration rewrites
    their reason to `reason_given`, and the table is append-only again afterwards."""
    import importlib
    from types import SimpleNamespace

    from core import audit

    migration = importlib.import_module("rooms.migrations.0005_audit_cancel_reason")
    actor = uid("u")
    audit.record(actor, "jobs.cancel", "job:x", role="customer", tenant="t1", status="cancelled",
                 reason="my neighbour at number 4 is noisy")
    audit.record(actor, "jobs.cancel", "job:y", role="customer", tenant="t1", status="cancelled", reason="")
    with transaction.atomic():
        migration.strip_reasons(None, SimpleNamespace(connection=connection))
    rows = list(AuditLog.objects.filter(actor=actor).order_by("id").values_list("detail", flat=True))
    assert [("reason" in d, d["reason_given"]) for d in rows] == [(False, True), (False, False)]
    with pytest.raises(Exception), transaction.atomic():  # noqa: B017 - the trigger's error, any driver
        AuditLog.objects.filter(actor=actor).update(action="tampered")
