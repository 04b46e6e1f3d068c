"""Voice and video calls over Agora: starting, answering and ending calls, who may use `call:<id>`,
and the sweeper.

A call rings the room's other members (`call.invite` on their `user:` channels); each callee
accepts or declines; an invite unanswered for HUB_CALL_RING_S (default 30 s) becomes `call.missed`;
a live call whose joined participants are all offline for HUB_CALL_ABANDON_S (default 120 s) ends as
`abandoned`. State changes are published on `call:<id>` through hub.store.append.

Timers are not asyncio tasks: `sweep(now)` does the work and the hub runs it every second in
every process. Each transition is a conditional UPDATE (`WHERE status IN (...)`) under a row lock
on the call, so however many sweepers and rpc calls race, every invite and call moves once and
publishes once.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from core import metrics
from core.audit import entry, record, record_all
from core.domain_budgets import per_minute
from core.errors import CONFLICT, TOO_LARGE, HubError, bad_request, conflict, forbidden, not_found, only
from core.times import epoch_ms
from hub import engine
from hub.channels import qualify
from hub.rpc import Caller
from hub.store import append, atomic, tenant_scope
from rooms import agora
from rooms.actions.chat import members
from rooms.models import (
    Call,
    CallMedia,
    CallOutcome,
    CallParticipant,
    CallStatus,
    ParticipantStatus,
    Room,
    new_id,
)

log = logging.getLogger("rooms.calls")

# Short names for the statuses (TextChoices in rooms.models, str values on the wire and in the database).
JOINED, RINGING, BUSY = ParticipantStatus.JOINED, ParticipantStatus.RINGING, ParticipantStatus.BUSY
DECLINED, MISSED = ParticipantStatus.DECLINED, ParticipantStatus.MISSED
PENDING = (RINGING, BUSY)
LIVE = (CallStatus.RINGING, CallStatus.ACTIVE)  # call statuses before ENDED
MEDIA = tuple(CallMedia.values)
SWEEP_BATCH = 500


def ring_s() -> float:
    return float(settings.HUB_CALL_RING_S)


def abandon_s() -> float:
    return float(settings.HUB_CALL_ABANDON_S)


def _as_datetime(now: datetime | float | None) -> datetime:
    if now is None:
        return timezone.now()
    if isinstance(now, datetime):
        return now
    return datetime.fromtimestamp(float(now), tz=UTC)


# --- namespace -------------------------------------------------------------------------------

def is_participant(call_id: str, user: str, tenant: str) -> bool:
    return CallParticipant.objects.filter(call_id=call_id, user=user, call__tenant=tenant).exists()


def subscribe_hook(caller: Caller, ident: str) -> bool:
    """`call:<id>` subscribe: the call's participants (clients never publish there)."""
    return is_participant(ident, caller.user, caller.tenant)


def signal_hook(caller: Caller, ident: str) -> bool:
    """`call:<id>` signal: participants, while the call is live."""
    # Negotiation only makes sense while the call is live; the ended call's history stays readable.
    return CallParticipant.objects.filter(call_id=ident, user=caller.user, call__tenant=caller.tenant,
                                          call__status__in=LIVE).exists()


# --- helpers ---------------------------------------------------------------------------------

def _channel(call: Call) -> str:
    """The call's stream (tenant-qualified, hub.channels.qualify)."""
    return qualify(call.tenant, f"call:{call.id}")


def _user(tenant: str, user: str) -> str:
    return qualify(tenant, f"user:{user}")


def in_active_call(tenant: str, user: str) -> bool:
    """Joined (the caller counts as joined) in a call of the tenant that is still ringing or live."""
    return CallParticipant.objects.filter(user=user, status=JOINED, call__status__in=LIVE,
                                          call__tenant=tenant).exists()


def busy_users(tenant: str, users: Collection[str]) -> set[str]:
    """Those of `users` (of `tenant`) joined in a live call, in one query (in_active_call for many)."""
    return set(CallParticipant.objects.filter(user__in=list(users), status=JOINED, call__status__in=LIVE,
                                              call__tenant=tenant)
               .values_list("user", flat=True))


def _load(caller: Caller, call_id: Any, *, lock: bool = True) -> tuple[Call, CallParticipant]:
    """The call and the caller's participant row: not_found, then forbidden.

    With `lock` (inside a transaction) the call row is locked on Postgres, serialising every change
    to one call across processes; SQLite serialises writers anyway.
    """
    if not isinstance(call_id, str) or not call_id:
        raise bad_request("call must be a call id")
    qs = Call.objects.filter(pk=call_id, tenant=caller.tenant)
    call = (qs.select_for_update() if lock else qs).first()
    if call is None:
        raise not_found(f"no call {call_id}")
    me = CallParticipant.objects.filter(call=call, user=caller.user).first()
    if me is None:
        raise forbidden("you are not a participant of this call")
    return call, me


def _missed(call: Call, p: CallParticipant, reason: str) -> bool:
    """Pending invite -> missed, once (conditional UPDATE). Publishes to both parties and the call."""
    if CallParticipant.objects.filter(pk=p.pk, status__in=PENDING).update(status=MISSED) != 1:
        return False
    metrics.call("missed")
    data = {"kind": "call.missed", "call": call.id, "room": call.room_id, "media": call.media,
            "from": call.caller, "user": p.user, "busy": p.busy, "reason": reason}
    append(_channel(call), data)
    append(_user(call.tenant, call.caller), data)
    append(_user(call.tenant, p.user), data)
    return True


def _finish(call: Call, outcome: str, by: str, now: datetime, *, role: str = "", reason: str = "") -> None:
    """End a live call once: pending invites become missed, then `call.ended`. Conflict if already over."""
    for p in CallParticipant.objects.filter(call=call, status__in=PENDING):
        _missed(call, p, reason="ended")
    duration = int((now - call.answered_at).total_seconds()) if call.answered_at else 0
    changed = Call.objects.filter(pk=call.pk, status__in=LIVE).update(
        status=CallStatus.ENDED, outcome=outcome, ended_at=now, ended_by=by, duration_s=max(0, duration))
    if changed != 1:
        raise conflict("the call has already ended")
    metrics.call(outcome)
    call.status, call.outcome, call.ended_at, call.ended_by, call.duration_s = (
        CallStatus.ENDED, outcome, now, by, max(0, duration))
    record(by or "system", "calls.end", f"call:{call.id}", role=role, tenant=call.tenant, outcome=outcome,
           duration_s=call.duration_s, **({"reason": reason} if reason else {}))
    append(_channel(call), {"kind": "call.ended", "call": call.id, "outcome": outcome, "by": by or None,
                            "duration_s": call.duration_s})


def _settle_unanswered(call: Call, now: datetime) -> None:
    """A still-ringing call with no pending invites left is over: declined by all, or missed."""
    if call.status != CallStatus.RINGING:
        return
    others = list(CallParticipant.objects.filter(call=call, is_caller=False).values_list("status", flat=True))
    if any(s in PENDING or s == JOINED for s in others):
        return
    outcome = CallOutcome.DECLINED if others and all(s == DECLINED for s in others) else CallOutcome.MISSED
    _finish(call, outcome, "", now)


def _token_result(call: Call, me: CallParticipant) -> dict[str, Any]:
    return {"call": call.id, "agora": agora.build_token(call.channel, int(me.uid))}


# --- calls -----------------------------------------------------------------------------------

def start(caller: Caller, room_id: str, media: str) -> dict[str, Any]:
    """Ring the room's other members (`call.invite`, busy ones marked); returns the caller's Agora token."""
    return only(start_calls([CallRequest(caller, room_id, media)]))


@dataclass(frozen=True)
class CallRequest:
    caller: Caller
    room_id: Any
    media: Any


def call_queue(caller: Caller, _params: Any = None) -> str:
    """The queue a new call waits in: one per tenant and process, whose queued calls start together
    (`start_calls`), sharing one transaction's round trips and commit."""
    return qualify(caller.tenant, "calls")


def start_calls(requests: list[CallRequest]) -> list[dict[str, Any] | HubError]:
    """Calls of one tenant started in one transaction: each request gets its own result or refusal,
    in order, as if `start` had started them one after the other (a caller of an earlier call in the
    batch is busy for the later ones)."""
    out: list[dict[str, Any] | HubError] = [conflict("not started")] * len(requests)
    ready: list[tuple[int, Caller, Room, str, list[str]]] = []
    for i, r in enumerate(requests):
        try:
            if ready and r.caller.tenant != ready[0][1].tenant:
                raise ValueError("start_calls takes the calls of one tenant")
            room, others = _callable(r)
        except HubError as exc:
            out[i] = exc
            continue
        ready.append((i, r.caller, room, r.media, others))
    if not ready:
        return out
    tenant = ready[0][1].tenant
    now = timezone.now()
    with atomic():
        busy = busy_users(tenant, {u for *_rest, others in ready for u in others})
        made: list[tuple[int, Call, CallParticipant, list[CallParticipant]]] = []
        for i, caller, room, media, others in ready:
            call_id = new_id()
            call = Call(id=call_id, tenant=tenant, room=room, caller=caller.user, media=media,
                        channel=agora.channel_name(call_id))
            # Agora uids are participant indices: 1 for the caller, then 2.. in user order. Unique per
            # call by construction, nonzero, far below 2^32.
            me = CallParticipant(call=call, user=caller.user, uid=1, is_caller=True, status=JOINED, joined_at=now,
                                 responded_at=now)
            invited = [CallParticipant(call=call, user=u, uid=k + 2, status=BUSY if u in busy else RINGING,
                                       busy=u in busy) for k, u in enumerate(others)]
            busy.add(caller.user)  # joined in this call: busy for the batch's calls after it
            made.append((i, call, me, invited))
        Call.objects.bulk_create([call for _i, call, _me, _inv in made])
        CallParticipant.objects.bulk_create([p for _i, _call, me, invited in made for p in (me, *invited)])
        record_all([entry(call.caller, "calls.start", f"call:{call.id}", role=me_caller.role, tenant=tenant,
                          rid=me_caller.request_id or None, room=call.room_id, media=call.media,
                          invited=[p.user for p in invited], busy=sorted(p.user for p in invited if p.busy))
                    for (_i, call, _me, invited), (_j, me_caller, *_rest) in zip(made, ready, strict=True)])
        for i, call, me, invited in made:
            metrics.call("started")
            append(_channel(call), {"kind": "call.started", "call": call.id, "room": call.room_id,
                                    "media": call.media, "from": call.caller,
                                    "participants": [call.caller, *(p.user for p in invited)]})
            for p in invited:
                append(_user(tenant, p.user), {"kind": "call.invite", "call": call.id, "room": call.room_id,
                                               "media": call.media, "from": call.caller, "busy": p.busy,
                                               "ring_s": ring_s()})
            out[i] = _token_result(call, me)
    return out


def _callable(r: CallRequest) -> tuple[Room, list[str]]:
    """The room a request may call and the members it rings, or the refusal; spends the caller's
    call-invite budget."""
    caller, room_id, media = r.caller, r.room_id, r.media
    if media not in MEDIA:
        raise bad_request("media must be video or voice")
    if not isinstance(room_id, str) or not room_id:
        raise bad_request("room must be a room id")
    agora.credentials()  # refuse (unavailable) before creating anything when Agora is not configured
    room = Room.objects.filter(pk=room_id, tenant=caller.tenant).first()
    if room is None:
        raise not_found(f"no room {room_id}")
    people = set(members(room.id, caller.tenant))  # one query for both the check and the invitees
    if caller.user not in people:
        raise forbidden("only the room's members may call it")
    others = sorted(people - {caller.user})
    if not others:
        raise bad_request("nobody else is in this room")
    # Before anything is written: a room of made-up ids, or one call after another, must not ring
    # an unbounded number of people.
    most = settings.HUB_MAX_CALL_PEOPLE
    if most > 0 and len(people) > most:
        raise HubError(TOO_LARGE, f"a call takes at most {most} people; this room has {len(people)}")
    per_minute("call_invites", caller.tenant, caller.user, settings.HUB_CALL_INVITES_PER_MIN, "call invites",
               cost=len(others))
    return room, others


def accept(caller: Caller, call_id: str) -> dict[str, Any]:
    """Answer a pending invite within the ring window (again once joined: the same token)."""
    now = timezone.now()
    with atomic():
        call, me = _load(caller, call_id)
        if call.status == CallStatus.ENDED:
            raise conflict(f"the call has ended ({call.outcome})")
        if me.status == JOINED:
            return _token_result(call, me)  # idempotent: a reconnecting app asks again
        if me.status not in PENDING:
            raise conflict(f"your invite was {me.status}")
        if now > me.invited_at + timedelta(seconds=ring_s()):
            raise conflict("your invite has expired (missed)")  # the sweeper may not have run yet
        if CallParticipant.objects.filter(pk=me.pk, status__in=PENDING).update(
                status=JOINED, joined_at=now, responded_at=now) != 1:
            raise conflict("your invite is no longer pending")
        me.status = JOINED
        if call.status == CallStatus.RINGING:
            Call.objects.filter(pk=call.pk, status=CallStatus.RINGING).update(
                status=CallStatus.ACTIVE, answered_at=now, outcome=CallOutcome.ANSWERED)
            metrics.call("answered")
        record(caller.user, "calls.accept", f"call:{call.id}", role=caller.role, tenant=caller.tenant,
               media=call.media, busy=me.busy)
        data = {"kind": "call.accepted", "call": call.id, "user": caller.user, "uid": int(me.uid)}
        append(_channel(call), data)
        append(_user(call.tenant, call.caller), data)
    return _token_result(call, me)


def decline(caller: Caller, call_id: str) -> dict[str, Any]:
    """Decline a pending invite; a ringing call everyone declined ends."""
    now = timezone.now()
    with atomic():
        call, me = _load(caller, call_id)
        if call.status == CallStatus.ENDED:
            raise conflict(f"the call has ended ({call.outcome})")
        if me.status not in PENDING:
            hint = "; end it instead" if me.status == JOINED else ""
            raise conflict(f"you cannot decline: you are {me.status}{hint}")
        if CallParticipant.objects.filter(pk=me.pk, status__in=PENDING).update(
                status=DECLINED, responded_at=now) != 1:
            raise conflict("your invite is no longer pending")
        record(caller.user, "calls.decline", f"call:{call.id}", role=caller.role, tenant=caller.tenant)
        data = {"kind": "call.declined", "call": call.id, "user": caller.user}
        append(_channel(call), data)
        append(_user(call.tenant, call.caller), data)
        _settle_unanswered(call, now)
    return {"call": call.id, "status": call.status}


def end(caller: Caller, call_id: str) -> dict[str, Any]:
    """End the call for everyone (a joined participant): cancelled before an answer, ended after."""
    now = timezone.now()
    with atomic():
        call, me = _load(caller, call_id)
        if call.status == CallStatus.ENDED:
            raise conflict(f"the call has already ended ({call.outcome})")
        if me.status != JOINED:
            raise conflict("you have not joined this call" + ("; decline it instead" if me.status in PENDING
                                                              else ""))
        # Hanging up before anyone answered is a cancelled call; after, a normal end.
        outcome = CallOutcome.ENDED if call.answered_at else CallOutcome.CANCELLED
        _finish(call, outcome, caller.user, now, role=caller.role)
    return {"call": call.id, "outcome": call.outcome, "duration_s": call.duration_s}


def renew(caller: Caller, call_id: str) -> dict[str, Any]:
    """A fresh Agora token for a joined participant of a live call."""
    call, me = _load(caller, call_id, lock=False)
    if call.status == CallStatus.ENDED:
        raise conflict(f"the call has ended ({call.outcome})")
    if me.status != JOINED:
        raise conflict("accept the call first")
    return agora.build_token(call.channel, int(me.uid))


def get_call(caller: Caller, call_id: str) -> dict[str, Any]:
    """A call's record, for its participants."""
    call, _ = _load(caller, call_id, lock=False)
    return describe(call)


def describe(call: Call) -> dict[str, Any]:
    def iso(d: datetime | None) -> str | None:
        return d.isoformat() if d else None

    return {"call": call.id, "room": call.room_id, "media": call.media, "caller": call.caller,
            "status": call.status, "outcome": call.outcome or None, "started_at": iso(call.started_at),
            "answered_at": iso(call.answered_at), "ended_at": iso(call.ended_at),
            "started_at_ms": epoch_ms(call.started_at), "answered_at_ms": epoch_ms(call.answered_at),
            "ended_at_ms": epoch_ms(call.ended_at),
            "duration_s": call.duration_s, "ended_by": call.ended_by or None,
            "participants": [{"user": p.user, "uid": int(p.uid), "status": p.status, "busy": p.busy,
                              "caller": p.is_caller}
                             for p in call.participants.order_by("uid")]}


# --- timers ----------------------------------------------------------------------------------

def expire_invites(now: datetime | float | None = None, calls: Collection[str] | None = None) -> int:
    """Invites pending longer than HUB_CALL_RING_S become missed; returns how many this run moved.

    `calls` restricts the sweep to those call ids (tests, admin tools); the hub sweeps them all.
    """
    at = _as_datetime(now)
    cutoff = at - timedelta(seconds=ring_s())
    pending = CallParticipant.objects.filter(status__in=PENDING, invited_at__lte=cutoff)
    if calls is not None:
        pending = pending.filter(call_id__in=list(calls))
    call_ids = list(pending.values_list("call_id", flat=True).distinct()[:SWEEP_BATCH])
    moved = 0
    for call_id in call_ids:
        with atomic():
            call = Call.objects.select_for_update().filter(pk=call_id).first()
            if call is None:
                continue
            expired = CallParticipant.objects.filter(call=call, status__in=PENDING, invited_at__lte=cutoff)
            with tenant_scope(call.tenant):  # missed calls are pushed inside the call's tenant
                for p in expired:
                    if _missed(call, p, reason="timeout"):
                        moved += 1
                        record("system", "calls.missed", f"call:{call.id}", tenant=call.tenant, user=p.user)
                try:
                    _settle_unanswered(call, at)
                except HubError as exc:  # conflict: another process ended it between our reads
                    if exc.code != CONFLICT:
                        raise
    return moved


def default_is_online(tenant: str, user: str) -> bool:
    """The hub engine's cluster-wide presence; with no engine in this process (a management command),
    or presence failing, assume online: no call is ever abandoned by mistake."""
    if engine.current() is None:
        return True
    try:
        return engine.is_user_online(tenant, user)
    except Exception:  # unknown presence is treated as online (never abandon wrongly)
        log.debug("is_user_online failed for %s", user, exc_info=True)
        return True


def sweep_abandoned(now: datetime | float | None = None, is_online: Callable[[str, str], bool] | None = None,
                    calls: Collection[str] | None = None) -> int:
    """Live calls whose joined participants have all been offline for HUB_CALL_ABANDON_S end as abandoned.

    The first sweep to see everyone offline stamps `offline_since`; a sweep that sees anyone back
    clears it; a sweep past the limit ends the call. Returns how many calls this run ended.

    Presence may be per process: the process holding a participant's socket clears the stamp
    every second, so a stamp only ages to the limit when no process sees anyone.
    """
    at = _as_datetime(now)
    online = is_online or default_is_online
    limit = timedelta(seconds=abandon_s())
    ended = 0
    live = Call.objects.filter(status=CallStatus.ACTIVE)
    if calls is not None:
        live = live.filter(pk__in=list(calls))
    for call in live.order_by("started_at")[:SWEEP_BATCH]:
        users = list(CallParticipant.objects.filter(call=call, status=JOINED).values_list("user", flat=True))
        if any(online(call.tenant, u) for u in users):
            if call.offline_since is not None:
                Call.objects.filter(pk=call.pk, offline_since__isnull=False).update(offline_since=None)
            continue
        if call.offline_since is None:
            Call.objects.filter(pk=call.pk, status=CallStatus.ACTIVE, offline_since__isnull=True).update(
                offline_since=at)
            continue
        if at - call.offline_since < limit:
            continue
        with atomic():
            locked = Call.objects.select_for_update().filter(pk=call.pk, status=CallStatus.ACTIVE,
                                                             offline_since__isnull=False).first()
            if locked is None:
                continue  # another process ended it, or someone came back
            with tenant_scope(locked.tenant):
                _finish(locked, CallOutcome.ABANDONED, "", at, reason="every participant offline")
            ended += 1
    return ended


def sweep(now: datetime | float | None = None) -> dict[str, int]:
    """The periodic timer (the hub runs it every second in each process; sync ORM code).

    Idempotent and safe to run concurrently: each invite and call transitions once.
    """
    return {"missed": expire_invites(now), "abandoned": sweep_abandoned(now)}

