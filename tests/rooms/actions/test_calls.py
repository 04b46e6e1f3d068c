"""Calls (rooms.actions.calls): the plain domain functions and the sweeper against the real test database."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from core.errors import HubError
from core.models import AuditLog
from hub.models import Publication
from hub.rpc import Caller
from rooms.actions import calls, chat
from rooms.models import Call, CallParticipant
from tests.support import code_of, uid


def pubs(channel: str) -> list[dict[str, Any]]:
    rows = Publication.objects.filter(channel__endswith="/" + channel).order_by("offset")
    data = [orjson.loads(r.data) for r in rows if r.data is not None]
    return [d for d in data if d.get("kind") != "room.new"]  # the room's own announcement, not the call's


def kinds(channel: str) -> list[str]:
    return [d["kind"] for d in pubs(channel)]


@pytest.fixture
def tenant() -> str:
    return uid("t")


def people(tenant: str, n: int) -> list[Caller]:
    return [Caller(uid(f"u{i}"), "customer" if i == 0 else "provider", tenant) for i in range(n)]


def room_of(owner: Caller, *others: Caller) -> str:
    kind = "direct" if len(others) == 1 else "booking"
    return str(chat.create_room(owner, members=[o.user for o in others], kind=kind)["room"])


def later(seconds: float) -> Any:
    return timezone.now() + timedelta(seconds=seconds)


def test_start_invites_the_other_members(tenant: str) -> None:
    alice, bob, carol = people(tenant, 3)
    room = room_of(alice, bob, carol)
    out = calls.start(alice, room_id=room, media="voice")
    call = out["call"]
    assert set(out["agora"]) >= {"app_id", "channel", "uid", "token", "expires_at"}
    assert out["agora"]["uid"] == 1 and out["agora"]["development"] is True  # dev credentials in tests
    for who in (bob, carol):
        [invite] = pubs(f"user:{who.user}")
        assert invite == {"kind": "call.invite", "call": call, "room": room, "media": "voice",
                          "from": alice.user, "busy": False, "ring_s": calls.ring_s()}
    [started] = pubs(f"call:{call}")
    assert started["kind"] == "call.started"
    assert set(started["participants"]) == {alice.user, bob.user, carol.user}
    record = Call.objects.get(pk=call)
    assert (record.caller, record.media, record.status) == (alice.user, "voice", "ringing")
    assert record.outcome == ""
    parts = {p.user: (p.status, p.uid) for p in CallParticipant.objects.filter(call=record)}
    assert parts[alice.user] == ("joined", 1)
    assert {parts[bob.user][0], parts[carol.user][0]} == {"ringing"}
    assert {parts[bob.user][1], parts[carol.user][1]} == {2, 3}
    assert AuditLog.objects.filter(action="calls.start", target=f"call:{call}", actor=alice.user).exists()


def test_calls_started_together_are_the_same_as_one_after_the_other(tenant: str) -> None:
    """One batch (start_calls, one transaction): each call its own result or refusal, in order; the
    caller of an earlier call in the batch is busy for the later ones; each audit row its own."""
    alice, bob, carol, eve = people(tenant, 4)
    alice = Caller(alice.user, alice.role, tenant, request_id="r-alice")
    out = calls.start_calls([
        calls.CallRequest(alice, room_of(alice, bob), "voice"),
        calls.CallRequest(eve, room_of(alice, bob), "voice"),  # not a member: refused
        calls.CallRequest(carol, room_of(carol, alice, bob), "video"),  # alice is in her own call now
        calls.CallRequest(bob, "nope", "voice")])
    codes = [r.code if isinstance(r, HubError) else "ok" for r in out]
    assert codes == ["ok", "forbidden", "ok", "not_found"]
    first, third = (r for r in out if isinstance(r, dict))
    assert first["agora"]["uid"] == 1 and third["agora"]["uid"] == 1
    parts = {(p.call_id, p.user): (p.status, p.busy, p.uid) for p in CallParticipant.objects.filter(
        call_id__in=[first["call"], third["call"]])}
    one, three = first["call"], third["call"]
    assert parts == {(one, alice.user): ("joined", False, 1), (one, bob.user): ("ringing", False, 2),
                     (three, carol.user): ("joined", False, 1), (three, alice.user): ("busy", True, 2),
                     (three, bob.user): ("ringing", False, 3)}
    assert [(d["call"], d["busy"]) for d in pubs(f"user:{bob.user}") if d["kind"] == "call.invite"] == [
        (first["call"], False), (third["call"], False)]
    assert kinds(f"call:{first['call']}") == ["call.started"] and kinds(f"call:{third['call']}") == ["call.started"]
    audit = dict(AuditLog.objects.filter(action="calls.start", target__in=[
        f"call:{first['call']}", f"call:{third['call']}"]).values_list("actor", "detail"))
    assert audit[alice.user]["busy"] == [] and audit[carol.user]["busy"] == [alice.user]
    assert AuditLog.objects.get(actor=alice.user, action="calls.start").request_id == "r-alice"


def test_calls_of_two_tenants_are_never_started_together(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    with pytest.raises(ValueError, match="one tenant"):
        calls.start_calls([calls.CallRequest(alice, room_of(alice, bob), "voice"),
                           calls.CallRequest(Caller(uid("x"), "customer", uid("t")), "r", "voice")])


def test_start_refusals(tenant: str) -> None:
    alice, bob, eve = people(tenant, 3)
    room = room_of(alice, bob)
    assert code_of(calls.start, eve, room_id=room, media="video") == "forbidden"
    assert code_of(calls.start, alice, room_id=room, media="fax") == "bad_request"
    assert code_of(calls.start, alice, room_id="nope", media="video") == "not_found"
    assert code_of(calls.start, Caller(alice.user, "customer", uid("t")), room_id=room, media="video") \
        == "not_found"  # another tenant's room
    solo = str(chat.create_room(alice, members=[alice.user], kind="booking")["room"])
    assert code_of(calls.start, alice, room_id=solo, media="video") == "bad_request"


def test_accept_renew_end(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="video")["call"]
    got = calls.accept(bob, call_id=call)
    assert got["call"] == call and got["agora"]["uid"] == 2
    assert calls.accept(bob, call_id=call)["agora"]["uid"] == 2  # idempotent for a joined participant
    record = Call.objects.get(pk=call)
    assert (record.status, record.outcome) == ("active", "answered") and record.answered_at is not None
    assert [d for d in pubs(f"user:{alice.user}") if d["kind"] == "call.accepted"] == [
        {"kind": "call.accepted", "call": call, "user": bob.user, "uid": 2}]
    renewed = calls.renew(bob, call_id=call)
    assert set(renewed) >= {"token", "expires_at"} and renewed["uid"] == 2
    assert code_of(calls.decline, bob, call_id=call) == "conflict"  # joined: end it instead
    out = calls.end(bob, call_id=call)
    assert out["outcome"] == "ended" and out["duration_s"] >= 0
    record.refresh_from_db()
    assert (record.status, record.outcome, record.ended_by) == ("ended", "ended", bob.user)
    assert record.ended_at is not None and record.duration_s is not None
    assert kinds(f"call:{call}") == ["call.started", "call.accepted", "call.ended"]
    assert pubs(f"call:{call}")[-1] == {"kind": "call.ended", "call": call, "outcome": "ended",
                                        "by": bob.user, "duration_s": record.duration_s}
    for action in ("calls.start", "calls.accept", "calls.end"):
        assert AuditLog.objects.filter(action=action, target=f"call:{call}").exists(), action
    # after the end: conflict for participants, forbidden for strangers
    for fn in (calls.accept, calls.decline, calls.end, calls.renew):
        assert code_of(fn, bob, call_id=call) == "conflict", fn.__name__
    eve = Caller(uid("eve"), "customer", tenant)
    for fn in (calls.accept, calls.decline, calls.end, calls.renew, calls.get_call):
        assert code_of(fn, eve, call_id=call) == "forbidden", fn.__name__
        assert code_of(fn, eve, call_id="missing") == "not_found", fn.__name__


def test_strangers_are_refused_while_live(tenant: str) -> None:
    alice, bob, eve = people(tenant, 3)
    call = calls.start(alice, room_id=room_of(alice, bob), media="video")["call"]
    for fn in (calls.accept, calls.decline, calls.end, calls.renew):
        assert code_of(fn, eve, call_id=call) == "forbidden", fn.__name__
    assert not calls.subscribe_hook(eve, call) and not calls.signal_hook(eve, call)
    assert calls.subscribe_hook(bob, call) and calls.signal_hook(bob, call)
    # a ringing invitee has no token yet and cannot end the call
    assert code_of(calls.renew, bob, call_id=call) == "conflict"
    assert code_of(calls.end, bob, call_id=call) == "conflict"
    assert Call.objects.get(pk=call).status == "ringing"


def test_decline_by_everyone_ends_the_call(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="voice")["call"]
    assert calls.decline(bob, call_id=call)["status"] == "ended"
    record = Call.objects.get(pk=call)
    assert (record.status, record.outcome, record.duration_s) == ("ended", "declined", 0)
    assert kinds(f"call:{call}") == ["call.started", "call.declined", "call.ended"]
    assert "call.declined" in [d["kind"] for d in pubs(f"user:{alice.user}")]
    assert code_of(calls.accept, bob, call_id=call) == "conflict"
    assert not calls.signal_hook(bob, call) and calls.subscribe_hook(bob, call)  # history stays readable


def test_caller_hanging_up_before_an_answer_cancels(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="voice")["call"]
    assert calls.end(alice, call_id=call)["outcome"] == "cancelled"
    assert CallParticipant.objects.get(call_id=call, user=bob.user).status == "missed"
    missed = [d for d in pubs(f"user:{bob.user}") if d["kind"] == "call.missed"]
    assert missed and missed[0]["reason"] == "ended" and missed[0]["from"] == alice.user
    assert kinds(f"call:{call}") == ["call.started", "call.missed", "call.ended"]


def test_ring_timeout_makes_invites_missed_once(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="video")["call"]
    assert calls.expire_invites(later(5), calls=[call]) == 0  # still ringing
    assert calls.expire_invites(later(31), calls=[call]) == 1
    assert calls.expire_invites(later(40), calls=[call]) == 0  # idempotent
    record = Call.objects.get(pk=call)
    assert (record.status, record.outcome) == ("ended", "missed")
    expect = {"kind": "call.missed", "call": call, "room": record.room_id, "media": "video",
              "from": alice.user, "user": bob.user, "busy": False, "reason": "timeout"}
    for channel in (f"call:{call}", f"user:{alice.user}", f"user:{bob.user}"):
        assert [d for d in pubs(channel) if d["kind"] == "call.missed"] == [expect], channel
    assert kinds(f"call:{call}") == ["call.started", "call.missed", "call.ended"]
    assert code_of(calls.accept, bob, call_id=call) == "conflict"


def test_accept_after_the_ring_window_is_refused_before_the_sweep(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="video")["call"]
    CallParticipant.objects.filter(call_id=call, user=bob.user).update(invited_at=later(-60))
    assert code_of(calls.accept, bob, call_id=call) == "conflict"


def test_ring_seconds_come_from_settings() -> None:
    assert calls.ring_s() == 30
    with override_settings(HUB_CALL_RING_S=5):
        assert calls.ring_s() == 5


def test_group_call_keeps_going_when_one_invitee_misses(tenant: str) -> None:
    alice, bob, carol = people(tenant, 3)
    call = calls.start(alice, room_id=room_of(alice, bob, carol), media="video")["call"]
    calls.accept(bob, call_id=call)
    assert calls.expire_invites(later(31), calls=[call]) == 1
    assert Call.objects.get(pk=call).status == "active"
    assert CallParticipant.objects.get(call_id=call, user=carol.user).status == "missed"
    assert [d["user"] for d in pubs(f"user:{alice.user}") if d["kind"] == "call.missed"] == [carol.user]


def test_busy_invitee(tenant: str) -> None:
    alice, bob, carol = people(tenant, 3)
    first = calls.start(carol, room_id=room_of(carol, bob), media="voice")["call"]
    calls.accept(bob, call_id=first)
    second = calls.start(alice, room_id=room_of(alice, bob), media="video")["call"]
    invite = [d for d in pubs(f"user:{bob.user}") if d["kind"] == "call.invite" and d["call"] == second]
    assert invite and invite[0]["busy"] is True
    p = CallParticipant.objects.get(call_id=second, user=bob.user)
    assert (p.status, p.busy) == ("busy", True)
    # a busy callee may still pick up (call waiting)
    assert calls.accept(bob, call_id=second)["agora"]["uid"] == 2
    # nobody else is busy
    other = calls.start(alice, room_id=room_of(alice, Caller(uid("z"), "provider", tenant)), media="voice")["call"]
    assert CallParticipant.objects.get(call_id=other, is_caller=False).busy is False


def test_concurrent_sweepers_move_each_invite_once(tenant: str) -> None:
    alice, *others = people(tenant, 5)
    call = calls.start(alice, room_id=room_of(alice, *others), media="voice")["call"]
    at = later(31)
    moved: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            moved.append(calls.expire_invites(at, calls=[call]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(moved) == 4
    assert kinds(f"call:{call}").count("call.missed") == 4
    assert kinds(f"call:{call}").count("call.ended") == 1
    assert Call.objects.get(pk=call).outcome == "missed"


def test_sweep_abandoned_with_injected_presence(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="video")["call"]
    calls.accept(bob, call_id=call)

    def offline(tenant: str, user: str) -> bool:
        return False

    def bob_online(tenant: str, user: str) -> bool:
        return user == bob.user

    # Another hub process sweeping the same database may stamp offline_since too (with its real
    # clock); each compound step runs in one transaction, and times are taken from the stamp.
    with transaction.atomic():
        assert calls.sweep_abandoned(timezone.now(), offline, calls=[call]) == 0
        stamp = Call.objects.get(pk=call).offline_since
    assert stamp is not None
    assert calls.sweep_abandoned(stamp + timedelta(seconds=119), offline, calls=[call]) == 0
    with transaction.atomic():
        assert calls.sweep_abandoned(stamp + timedelta(seconds=100), bob_online, calls=[call]) == 0
        assert Call.objects.get(pk=call).offline_since is None  # someone came back: the clock resets
        assert calls.sweep_abandoned(stamp + timedelta(seconds=101), offline, calls=[call]) == 0
        restamp = Call.objects.get(pk=call).offline_since
    assert restamp == stamp + timedelta(seconds=101)
    assert calls.sweep_abandoned(stamp + timedelta(seconds=200), offline, calls=[call]) == 0
    assert calls.sweep_abandoned(restamp + timedelta(seconds=121), offline, calls=[call]) == 1
    assert calls.sweep_abandoned(restamp + timedelta(seconds=300), offline, calls=[call]) == 0
    record = Call.objects.get(pk=call)
    assert (record.status, record.outcome, record.ended_by) == ("ended", "abandoned", "")
    assert pubs(f"call:{call}")[-1]["outcome"] == "abandoned"
    assert AuditLog.objects.filter(action="calls.end", target=f"call:{call}", actor="system").exists()


def test_sweep_runs_both_timers_and_accepts_epoch_seconds(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="voice")["call"]
    out = calls.sweep(timezone.now().timestamp())
    assert set(out) == {"missed", "abandoned"}
    assert Call.objects.get(pk=call).status == "ringing"
    # outside a hub process there is no presence: treated as online, nothing is abandoned
    assert calls.default_is_online(tenant, alice.user) is True


def test_describe_is_the_call_record(tenant: str) -> None:
    alice, bob = people(tenant, 2)
    call = calls.start(alice, room_id=room_of(alice, bob), media="voice")["call"]
    calls.decline(bob, call_id=call)
    got = calls.get_call(alice, call_id=call)
    assert got["outcome"] == "declined" and got["caller"] == alice.user and got["duration_s"] == 0
    assert [(p["user"], p["status"], p["caller"]) for p in got["participants"]] == [
        (alice.user, "joined", True), (bob.user, "declined", False)]


def test_group_calls_ringing_the_same_people_at_once(tenant: str) -> None:
    """Concurrent group calls to overlapping members all ring; each member's channel stays gap-free."""
    members = people(tenant, 4)
    rooms = [(m, room_of(m, *[o for o in members if o is not m])) for m in members]
    barrier = threading.Barrier(len(rooms))
    codes: list[str] = []

    def ring(caller: Caller, room: str) -> None:
        try:
            barrier.wait()
            codes.append(code_of(calls.start, caller, room_id=room, media="voice"))
        finally:
            connection.close()

    threads = [threading.Thread(target=ring, args=r) for r in rooms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == ["ok"] * len(rooms)
    for m in members:  # everyone was invited by the three others; offsets gap-free
        rows = list(Publication.objects.filter(channel__endswith="/" + f"user:{m.user}").order_by("offset")
                    .values_list("offset", "data"))
        assert [o for o, _ in rows] == list(range(1, len(rows) + 1))
        assert sum(orjson.loads(d)["kind"] == "call.invite" for _, d in rows) == len(members) - 1
