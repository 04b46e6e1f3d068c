"""notify.actions against the real test database: devices, preferences, what an event puts in
the outbox (and in which tenant), room messages through the group commit, the clean-up sweep."""
from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from typing import Any

import pytest
from django.test import override_settings

from hub import store
from notify import actions
from notify.models import Device, Outbox
from tests.fakes.webpush import FakeWebPush
from tests.notify.conftest import emit, offer, rows, web_device
from tests.support import code_of, uid

# --- devices --------------------------------------------------------------------------------------

def test_register_list_unregister_and_ownership(fake: FakeWebPush) -> None:
    t, u, other = uid("t"), uid("u"), uid("u")
    _s, dev = web_device(fake, t, u)
    listed = actions.list_devices(t, u)["devices"]
    assert [d["device"] for d in listed] == [dev] and "token" not in listed[0]
    # Another user, or the same user in another tenant, cannot see or remove it.
    assert actions.list_devices(t, other)["devices"] == []
    assert actions.list_devices(uid("t"), u)["devices"] == []
    assert code_of(actions.unregister, t, other, dev) == "not_found"
    assert code_of(actions.unregister, uid("t"), u, dev) == "not_found"
    assert Device.objects.filter(id=dev).exists()
    assert actions.unregister(t, u, dev)["removed"] is True
    assert not Device.objects.filter(id=dev).exists()


def test_the_same_subscription_again_is_the_same_device(fake: FakeWebPush) -> None:
    t, u, v = uid("t"), uid("u"), uid("u")
    _s, sub = fake.subscription()
    a = actions.register(t, u, "web", subscription=sub)["device"]
    b = actions.register(t, u, "web", subscription=sub)["device"]
    assert a == b
    # The browser changed account: the device moves to the new user.
    assert actions.register(t, v, "web", subscription=sub)["device"] == a
    assert actions.list_devices(t, u)["devices"] == []


@pytest.mark.parametrize("endpoint", [
    "https://10.0.0.5/push/x", "https://169.254.169.254/latest", "https://evil.example.com/push",
    "http://fcm.googleapis.com/fcm/send/x", "ftp://127.0.0.1/x", "https://user:pw@fcm.googleapis.com/x",
    "http://10.1.2.3:8080/x", "not a url",
])
def test_endpoints_outside_the_push_services_are_refused(fake: FakeWebPush, endpoint: str) -> None:
    t, u = uid("t"), uid("u")
    _s, sub = fake.subscription()
    sub["endpoint"] = endpoint
    assert code_of(actions.register, t, u, "web", subscription=sub) == "bad_request"
    assert not Device.objects.filter(user=u).exists()


def test_known_push_service_endpoints_are_accepted(fake: FakeWebPush) -> None:
    _s, sub = fake.subscription()
    sub["endpoint"] = "https://fcm.googleapis.com/fcm/send/abc:def"
    assert actions.register(uid("t"), uid("u"), "web", subscription=sub)["platform"] == "web"


def test_bad_keys_and_tokens_are_refused_and_change_nothing(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    _s, sub = fake.subscription()
    for keys in ({"p256dh": "AAAA", "auth": sub["keys"]["auth"]}, {"p256dh": sub["keys"]["p256dh"], "auth": "x"},
                 {"p256dh": sub["keys"]["p256dh"]}, "nope"):
        assert code_of(actions.register, t, u, "web", subscription={**sub, "keys": keys}) == "bad_request"
    assert code_of(actions.register, t, u, "web", token="abc") == "bad_request"
    assert code_of(actions.register, t, u, "ios", token="not-hex") == "bad_request"
    assert code_of(actions.register, t, u, "android", token="bad token with spaces") == "bad_request"
    assert code_of(actions.register, t, u, "android", subscription=sub) == "bad_request"
    assert code_of(actions.register, t, u, "pager", token="abc") == "bad_request"
    assert not Device.objects.filter(user=u).exists()
    assert actions.register(t, u, "ios", token="ab" * 32)["platform"] == "ios"
    assert actions.register(t, u, "android", token="fcm-token_1:abc")["platform"] == "android"


def test_at_most_the_documented_number_of_devices(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    with override_settings(NOTIFY_MAX_DEVICES_PER_USER=2):
        web_device(fake, t, u)
        web_device(fake, t, u)
        _s, sub = fake.subscription()
        assert code_of(actions.register, t, u, "web", subscription=sub) == "too_large"
    assert Device.objects.filter(tenant=t, user=u).count() == 2


# --- preferences ----------------------------------------------------------------------------------

def test_preferences_defaults_set_and_refusals() -> None:
    t, u = uid("t"), uid("u")
    got = actions.get_preferences(t, u)
    assert all(got["kinds"].values()) and got["quiet_start"] is None and got["quiet_override"] is False
    got = actions.set_preferences(t, u, kinds={"job": False}, quiet=("22:00", "07:00"), time_zone="Europe/London")
    assert got["kinds"]["job"] is False and got["kinds"]["offer"] is True and got["quiet_start"] == "22:00"
    for bad in ({"time_zone": "Mars/Olympus"}, {"time_zone": "../../etc/passwd"}, {"kinds": {"spam": True}},
                {"quiet": ("25:00", "07:00")}, {"quiet": ("07:00", "07:00")}, {"quiet": ("07:00",)},
                {"quiet_override": "yes"}, {"kinds": {"job": True}, "time_zone": "Nowhere/Nope"}):
        assert code_of(actions.set_preferences, t, u, **bad) == "bad_request"
    assert actions.get_preferences(t, u) == got  # nothing changed by the refusals
    assert actions.set_preferences(t, u, quiet=None)["quiet_start"] is None


def test_tenant_defaults_apply_until_the_user_chooses() -> None:
    t, u = uid("t"), uid("u")
    with override_settings(NOTIFY_TENANT_DEFAULTS=f'{{"{t}": {{"kinds": {{"job": false}}, "quiet_override": true}}}}'):
        got = actions.get_preferences(t, u)
        assert got["kinds"]["job"] is False and got["quiet_override"] is True
        assert actions.set_preferences(t, u, kinds={"job": True})["kinds"]["job"] is True
        assert actions.get_preferences(uid("t"), u)["kinds"]["job"] is True  # other tenants: built-in


def quiet_now(tz: str = "UTC") -> dict[str, Any]:
    """Quiet hours around the current time in `tz`."""
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(tz))
    start = f"{(now.hour - 1) % 24:02d}:00"
    end = f"{(now.hour + 2) % 24:02d}:00"
    return {"quiet": (start, end), "time_zone": tz}


# --- the outbox -----------------------------------------------------------------------------------

def test_an_event_puts_one_row_per_device_with_lock_screen_text_only(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    web_device(fake, t, u)
    web_device(fake, t, u)
    emit(t, u, offer("b1"))
    got = rows(u)
    assert len(got) == 2 and {r.kind for r in got} == {"offer"} and all(r.urgent for r in got)
    text = str(got[0].payload)
    assert got[0].payload["title"] == "New plumbing job near you"
    # No place, no distance (1200 m); a millisecond timestamp may hold the digits, so whole numbers only.
    assert "51.5" not in text and not re.search(r"(?<!\d)1200(?!\d)", text) and "area" not in text
    assert got[0].collapse_key == "offer:b1"
    # The push expires with the offer.
    assert abs(got[0].expires_at.timestamp() - time.time() - 30) < 2


def test_a_rolled_back_event_leaves_no_push(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    web_device(fake, t, u)
    with pytest.raises(RuntimeError), store.tenant_scope(t), store.atomic():
        store.append(f"user:{u}", offer("b1"))
        raise RuntimeError("the action failed")
    assert rows(u) == []


def test_pushes_stay_inside_the_event_tenant(fake: FakeWebPush) -> None:
    a, b, u = uid("ta"), uid("tb"), uid("u")
    web_device(fake, a, u)  # the same user id has a device in tenant A only
    emit(b, u, offer("b1"))  # an event of tenant B
    emit(None, u, offer("b2"))  # an event whose tenant is unknown
    assert rows(u) == []
    emit(a, u, offer("b3"))
    assert [r.tenant for r in rows(u)] == [a]


def test_one_transaction_reaches_each_tenants_own_devices(fake: FakeWebPush) -> None:
    """Events of two tenants in one transaction (device look-up for all of them at once): each
    reaches only the devices its user registered in its tenant."""
    a, b, u, v = uid("ta"), uid("tb"), uid("u"), uid("v")
    _s, dev_au = web_device(fake, a, u)
    _s, dev_bu = web_device(fake, b, u)
    _s, dev_bv = web_device(fake, b, v)
    with store.atomic():
        store.append(f"{a}/user:{u}", offer("a1"))
        store.append(f"{b}/user:{u}", offer("b1"))
        store.append(f"{b}/user:{v}", offer("b2"))
    got = {(r.tenant, r.device_id, r.collapse_key) for r in Outbox.objects.filter(user__in=[u, v])}
    assert got == {(a, dev_au, "offer:a1"), (b, dev_bu, "offer:b1"), (b, dev_bv, "offer:b2")}


def test_non_push_kinds_and_own_copies_make_no_rows(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    web_device(fake, t, u)
    emit(t, u, {"kind": "booking.assigned", "booking": "b1"})
    emit(t, u, {"kind": "bid.placed", "job": "j1", "bid": "x1", "provider": u, "amount": 500})  # their own bid
    emit(t, u, {"kind": "call.missed", "call": "c1", "user": uid("other"), "from": u})  # they called
    assert rows(u) == []
    emit(t, u, {"kind": "bid.placed", "job": "j1", "bid": "x2", "provider": uid("p"), "amount": 500, "note": "hi"})
    (r,) = rows(u)
    text = str(r.payload)
    assert r.payload["title"] == "New bid on your job" and not re.search(r"(?<!\d)500(?!\d)", text) and "hi" not in text


def test_expired_offers_are_never_queued_and_withdrawn_ones_are_cancelled(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    web_device(fake, t, u)
    emit(t, u, offer("old", ttl_s=-1))
    assert rows(u) == []
    emit(t, u, offer("b1"))
    emit(t, u, {"kind": "offer.withdrawn", "booking": "b1"})
    assert [r.state for r in rows(u)] == ["cancelled"]


def test_a_missed_call_replaces_its_invite(fake: FakeWebPush) -> None:
    t, u, caller = uid("t"), uid("u"), uid("c")
    web_device(fake, t, u)
    emit(t, u, {"kind": "call.invite", "call": "c1", "room": "r1", "media": "video", "from": caller, "ring_s": 30})
    emit(t, u, {"kind": "call.missed", "call": "c1", "room": "r1", "media": "video", "from": caller, "user": u,
                "reason": "ended"})
    invite, missed = rows(u)
    assert invite.state == "cancelled" and invite.urgent
    assert missed.state == "pending" and missed.payload["title"] == "Missed video call"
    assert missed.collapse_key == invite.collapse_key == "call:c1"


def test_one_transactions_events_act_in_order_with_lookups_shared(fake: FakeWebPush) -> None:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    t, caller = uid("t"), uid("c")
    users = [uid("u") for _ in range(6)]
    for u in users:
        web_device(fake, t, u)
    actions.set_preferences(t, users[1], kinds={"offer": False})
    bystander = uid("u")  # no device: nothing to write for them
    with CaptureQueriesContext(connection) as q, store.tenant_scope(t), store.atomic():
        for u in [*users, bystander]:
            store.append(f"user:{u}", offer("b1"))
        # One user's later events follow their first: the invite is replaced by the missed call.
        store.append(f"user:{users[0]}", {"kind": "call.invite", "call": "c1", "room": "r1", "media": "voice",
                                          "from": caller, "ring_s": 30})
        store.append(f"user:{users[0]}", {"kind": "call.missed", "call": "c1", "room": "r1", "media": "voice",
                                          "from": caller, "user": users[0], "reason": "ended"})
        with pytest.raises(RuntimeError), transaction.atomic():  # undone with its savepoint: never pushed
            store.append(f"user:{users[2]}", {"kind": "room.new", "room": "r9"})
            raise RuntimeError("undone")
        store.append(f"user:{users[3]}", {"kind": "offer.withdrawn", "booking": "b1"})
    assert sorted((r.collapse_key, r.state) for r in rows(users[0])) == [
        ("call:c1", "cancelled"), ("call:c1", "pending"), ("offer:b1", "pending")]
    assert rows(users[1]) == []  # offers switched off
    assert [(r.collapse_key, r.state) for r in rows(users[2])] == [("offer:b1", "pending")]
    assert [r.state for r in rows(users[3])] == ["cancelled"]
    assert [r.state for r in rows(users[4])] == [r.state for r in rows(users[5])] == ["pending"]
    assert rows(bystander) == []
    # Seven users told of one offer: the devices and preferences are read once, not per user.
    assert sum("notify_device" in x["sql"] for x in q.captured_queries) == 1
    assert sum("notify_preferences" in x["sql"] for x in q.captured_queries) == 1


def test_preferences_and_quiet_hours_decide(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    web_device(fake, t, u)
    actions.set_preferences(t, u, kinds={"job": False})
    emit(t, u, {"kind": "job.new", "job": "j1", "title": "Fix my sink", "category": "plumbing"})
    assert rows(u) == []
    actions.set_preferences(t, u, **quiet_now("Asia/Tokyo"))
    emit(t, u, offer("b1"))
    emit(t, u, {"kind": "room.new", "room": "r1"})
    assert rows(u) == []  # quiet hours in their zone: nothing, offers included
    actions.set_preferences(t, u, quiet_override=True)
    emit(t, u, offer("b2"))
    emit(t, u, {"kind": "room.new", "room": "r2"})
    assert [r.collapse_key for r in rows(u)] == ["offer:b2"]  # offers (and calls) only
    actions.set_preferences(t, u, quiet=None)
    emit(t, u, {"kind": "room.new", "room": "r3"})
    assert [r.kind for r in rows(u)] == ["offer", "room_invite"]


# --- the tenant of an event: the caller's for rpc methods, the record's for sweeps ----------------

def test_rpc_calls_append_in_the_callers_tenant(fake: FakeWebPush) -> None:
    from hub import rpc
    from hub.rpc import Caller

    t, owner, member = uid("t"), uid("o"), uid("m")
    web_device(fake, t, member)
    web_device(fake, uid("t"), member)  # the same user id in another tenant: never told
    asyncio.run(rpc.call(Caller(owner, "customer", t), "rooms.create", {"members": [member], "kind": "direct"}))
    (r,) = rows(member)
    assert (r.tenant, r.kind, r.payload["title"]) == (t, "room_invite", "New conversation")


def test_the_missed_call_sweep_pushes_in_the_calls_tenant(fake: FakeWebPush) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from hub.rpc import Caller
    from rooms.actions import calls, chat

    t = uid("t")
    alice, bob = Caller(uid("a"), "customer", t), Caller(uid("b"), "provider", t)
    web_device(fake, t, bob.user)
    with store.tenant_scope(t):  # what hub.rpc.call sets for a caller
        room = chat.create_room(alice, members=[bob.user], kind="direct")["room"]
        call = calls.start(alice, room_id=room, media="voice")["call"]
    calls.expire_invites(timezone.now() + timedelta(seconds=calls.ring_s() + 1), calls=[call])
    by_kind = {(r.kind, r.payload["title"]): r.state for r in rows(bob.user)}
    assert by_kind[("call", "Incoming voice call")] == "cancelled"  # nobody rings for a missed call
    assert by_kind[("call", "Missed voice call")] == "pending"
    assert {r.tenant for r in rows(bob.user)} == {t}


def test_finished_rows_are_purged_after_their_keep_period(fake: FakeWebPush) -> None:
    t, u = uid("t"), uid("u")
    web_device(fake, t, u)
    emit(t, u, offer("b1"))
    emit(t, u, {"kind": "offer.withdrawn", "booking": "b1"})
    emit(t, u, offer("b2"))
    assert [r.state for r in rows(u)] == ["cancelled", "pending"]
    actions.purge_finished(time.time())
    assert len(rows(u)) == 2  # kept for NOTIFY_KEEP_S
    actions.purge_finished(time.time() + 2 * 86400)
    assert [r.state for r in rows(u)] == ["pending"]  # a pending push is never purged


# --- room messages: client publications through the group commit ----------------------------------

class _Conn:
    """A socket's publish as the group commit sees it: the sender, the caller's tenant's channel,
    and where to answer."""

    def __init__(self, user: str, tenant: str) -> None:
        from hub.rpc import Caller

        self.caller = Caller(user, "customer", tenant)
        self.done: asyncio.Future[Any] | None = None

    def publish_done(self, cid: int, result: Any, error: Any, t0: float) -> None:
        assert self.done is not None
        self.done.set_result((result, error))


def publish(channel: str, data: dict[str, Any], conn: _Conn) -> Any:
    import orjson

    from hub.channels import qualify

    async def go() -> Any:
        loop = asyncio.get_running_loop()
        writer = store.Writer(loop, lambda batch: None)
        conn.done = loop.create_future()
        writer.submit(qualify(conn.caller.tenant, channel), data, orjson.dumps(data).decode(), conn.caller.user,
                      None, conn.publish_done, 1)
        try:
            return await conn.done
        finally:
            writer.stop()

    return asyncio.run(go())


def test_a_room_message_pushes_to_the_other_members_without_its_text(fake: FakeWebPush) -> None:
    from hub.rpc import Caller
    from rooms.actions import chat

    t = uid("t")
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    for u in (alice, bob):
        web_device(fake, t, u)
    web_device(fake, uid("t"), carol)  # carol's device is in another tenant
    with store.tenant_scope(t):
        room = chat.create_room(Caller(alice, "customer", t), members=[bob, carol], kind="booking")["room"]
    Outbox.objects.filter(user__in=[alice, bob, carol]).delete()  # the room's own invites
    result, error = publish(f"chat:{room}", {"text": "my address is 1 High St"}, _Conn(alice, t))
    assert error is None and result[0].offset >= 1
    assert rows(alice) == [] and rows(carol) == []  # not the sender; nobody across the tenant wall
    (r,) = rows(bob)
    assert (r.kind, r.payload["title"], r.collapse_key) == ("message", "New message", f"room:{room}")
    assert "High St" not in str(r.payload)
    # A second message replaces the first while it waits; a user who switched messages off gets none.
    actions.set_preferences(t, alice, kinds={"message": False})
    publish(f"chat:{room}", {"text": "hello?"}, _Conn(bob, t))
    assert rows(alice) == []
    publish(f"chat:{room}", {"text": "again"}, _Conn(carol, t))
    assert [x.state for x in rows(bob)] == ["replaced", "pending"]


def test_a_failing_publish_hook_never_loses_the_message(fake: FakeWebPush) -> None:
    def broken(items: list[Any]) -> None:
        Outbox.objects.create()  # fails: missing fields
        raise AssertionError("not reached")

    store.on_publish("chat:", broken)
    try:
        result, error = publish(f"chat:{uid('r')}", {"text": "hi"}, _Conn(uid("a"), uid("t")))
    finally:
        store._publish_hooks.remove(("chat:", broken))
    assert error is None and result[0].offset >= 1
