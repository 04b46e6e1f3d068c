"""Bookings and offers: matched providers get offers on their `user:` channel; first accepts win.

Flow (docs/matching.md has the timeline):
- `create_booking` stores the booking and offers it to up to `(crew - accepted) * HUB_OFFER_FANOUT`
  matched providers at once (fan-out 3 by default), each offer open HUB_OFFER_TTL_S (30 s).
- `accept_offer` is first come, first served across processes: the booking row is locked
  (SELECT ... FOR UPDATE; SQLite serialises writers anyway) and a conditional
  `UPDATE ... SET accepted = accepted + 1 WHERE accepted < crew` admits at most `crew` winners.
  When the crew is full, still-pending offers are withdrawn and the customer is told
  `booking.assigned`.
- `decline_offer` and expiry (`sweep`, every second in every hub process) top the offers up from the
  next candidates; when none are left and nothing is pending the booking is `unfilled` and the
  customer is told `booking.unfilled`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core import metrics, tracing
from core.domain_budgets import admit_open
from core.errors import HubError, bad_request, conflict, forbidden, not_found, only
from core.times import epoch_ms
from hub.channels import qualify
from hub.rpc import Caller
from hub.store import append, atomic, tenant_scope
from matching import privacy
from matching.actions.providers import record_offer_outcome, refresh_acceptance
from matching.matcher import crew_radius_m, matcher
from matching.models import (
    Assignment,
    Booking,
    BookingMode,
    BookingStatus,
    Offer,
    OfferStatus,
)
from matching.schedules import booking_time_ok, parse_when

log = logging.getLogger("matching.actions.bookings")

SWEEP_BATCH = 200


def offer_ttl_s() -> float:
    return float(settings.HUB_OFFER_TTL_S)


def offer_fanout() -> int:
    return max(1, int(settings.HUB_OFFER_FANOUT))


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def booking_dict(b: Booking, providers: list[str] | None = None) -> dict[str, Any]:
    if providers is None:
        providers = list(b.assignments.order_by("accepted_at", "id").values_list("provider", flat=True))
    return {"booking": b.id, "status": b.status, "customer": b.customer, "category": b.category,
            "lat": b.lat, "lng": b.lng, "mode": b.mode, "at": iso(b.at), "crew": b.crew, "zone": b.zone,
            "accepted": b.accepted, "providers": providers, "created_at": iso(b.created_at),
            "assigned_at": iso(b.assigned_at), "unfilled_at": iso(b.unfilled_at),
            "at_ms": epoch_ms(b.at), "created_at_ms": epoch_ms(b.created_at),
            "assigned_at_ms": epoch_ms(b.assigned_at), "unfilled_at_ms": epoch_ms(b.unfilled_at)}


# --- creating and offering --------------------------------------------------------------------

@tracing.spanned("booking.create")
def create_booking(caller: Caller, category: str, lat: float, lng: float, mode: str, at: str | None = None,
                   crew: int = 1) -> dict[str, Any]:
    return only(create_bookings([BookingRequest(caller, category, lat, lng, mode, at, crew)]))


@dataclass(frozen=True)
class BookingRequest:
    caller: Caller
    category: str
    lat: float
    lng: float
    mode: str
    at: str | None = None
    crew: int = 1


def booking_queue(caller: Caller, _params: Any = None) -> str:
    """The queue a new booking waits in: one per tenant and process, whose queued bookings are made
    together (`create_bookings`), sharing one transaction's round trips and commit."""
    return qualify(caller.tenant, "bookings")


def create_bookings(requests: list[BookingRequest]) -> list[dict[str, Any] | HubError]:
    """Bookings of one tenant in one transaction: each request gets its own result or refusal, in
    order, as if `create_booking` had made them one after the other (a customer's second booking in
    one batch counts their first against the open-bookings budget)."""
    out: list[dict[str, Any] | HubError] = [conflict("not booked")] * len(requests)
    m = matcher()
    now = timezone.now()
    ready: list[tuple[int, BookingRequest, datetime | None, str | None, list[Any]]] = []
    for i, r in enumerate(requests):
        try:
            if ready and r.caller.tenant != ready[0][1].caller.tenant:
                raise ValueError("create_bookings takes the bookings of one tenant")
            when: datetime | None = None
            if r.mode == BookingMode.SCHEDULED:
                if not r.at:
                    raise bad_request("at: required for a scheduled booking")
                when = parse_when(r.at, "at")
                booking_time_ok(when)
            elif r.at is not None:
                raise bad_request("at: only for scheduled bookings (on_demand is now)")
            zone = m.lookup_zone(r.lat, r.lng, r.category, r.caller.tenant)
            # A new booking has no offers yet: the first round is searched before the transaction
            # opens, so the transaction is a handful of inserts (no matching while it is open).
            found = m.search(r.lat, r.lng, r.category, k=r.crew * offer_fanout(), zone=zone,
                             exclude={r.caller.user}, at=when if r.mode == BookingMode.SCHEDULED else None,
                             radius_m=crew_radius_m() if r.crew > 1 else None,
                             tenant=r.caller.tenant)[1] if zone is not None else []
        except HubError as exc:
            out[i] = exc
            continue
        ready.append((i, r, when, zone, found))
    if not ready:
        return out
    tenant = ready[0][1].caller.tenant
    with atomic():
        # A booking that found nobody is closed at once: it holds no place.
        refusals = admit_open("bookings", tenant, [(r.caller.user, bool(found)) for _i, r, _w, _z, found in ready],
                              lambda user: Booking.objects.filter(tenant=tenant, customer=user,
                                                                  status=BookingStatus.OFFERING),
                              settings.HUB_MAX_OPEN_BOOKINGS_PER_USER, "bookings (still offering)")
        for item, refusal in zip(ready, refusals, strict=True):
            if refusal is not None:
                out[item[0]] = refusal
        ready = [item for item, refusal in zip(ready, refusals, strict=True) if refusal is None]
        made = Booking.objects.bulk_create([
            Booking(customer=r.caller.user, tenant=tenant, category=r.category, lat=r.lat, lng=r.lng,
                    mode=r.mode, at=when, crew=r.crew, zone=zone, first_offered_at=now if found else None)
            for _i, r, when, zone, found in ready])
        _offer_many([(b, item[4]) for b, item in zip(made, ready, strict=True) if item[4]], 1, now)
        for b, (i, _r, _when, zone, found) in zip(made, ready, strict=True):
            if not found:
                _close_unfilled(b, now, [])
            out[i] = {"booking": b.id, "status": b.status, "zone": zone, "offered": len(found)}
    return out


def _offer(b: Booking, found: list[Any], rnd: int, now: datetime) -> list[Offer]:
    """Offers to the found providers in round `rnd`, each told on its `user:` channel."""
    return _offer_many([(b, found)], rnd, now)


@tracing.spanned("offers.make")
def _offer_many(rounds: list[tuple[Booking, list[Any]]], rnd: int, now: datetime) -> list[Offer]:
    """Offers for several bookings (round `rnd` of each) in one insert, each provider told on its
    `user:` channel."""
    if not rounds:
        return []
    expires = now + timedelta(seconds=offer_ttl_s())
    made = Offer.objects.bulk_create([
        Offer(booking=b, provider=f.user, round=rnd, distance_m=f.distance_m, offered_at=now,
              expires_at=expires) for b, found in rounds for f in found])
    offers = iter(made)
    for b, found in rounds:
        # Not yet chosen: the provider learns the job's area, and their distance to its centre rounded
        # (both made of what they know already), never the customer's point (matching.privacy).
        area = privacy.job_area(b.lat, b.lng)
        for f in found:
            o = next(offers)
            metrics.offer("offered")
            append(_user(b, o.provider), {
                "kind": "offer", "booking": b.id, "category": b.category, **area,
                "mode": b.mode, "at": iso(b.at), "expires_at": iso(expires), "crew": b.crew,
                "distance_m": privacy.distance_to_area_m(f.lat, f.lng, area), "at_ms": epoch_ms(b.at),
                "expires_at_ms": epoch_ms(expires)})
    return made


def _user(b: Booking, user: str) -> str:
    """`user:<user>` of the booking's tenant (hub.channels.qualify)."""
    return qualify(b.tenant, f"user:{user}")


def _pending_count(b: Booking) -> int:
    return Offer.objects.filter(booking=b, status=OfferStatus.PENDING).count()


def _top_up(b: Booking, now: datetime) -> int:
    """Keep enough offers out for the open crew places; mark unfilled when nobody is left.

    Must run inside a transaction holding the booking row (created or locked by the caller).
    """
    if b.status != BookingStatus.OFFERING:
        return 0
    need = b.crew - b.accepted
    if need <= 0:
        return 0
    pending = _pending_count(b)
    want = need * offer_fanout() - pending
    made: list[Offer] = []
    if want > 0:
        asked = set(Offer.objects.filter(booking=b).values_list("provider", flat=True))
        asked.add(b.customer)  # a provider booking a job never gets their own offer
        _zone, found = matcher().search(
            b.lat, b.lng, b.category, k=want, zone=b.zone, exclude=asked,
            at=b.at if b.mode == BookingMode.SCHEDULED else None,
            radius_m=crew_radius_m() if b.crew > 1 else None, tenant=b.tenant)
        if found:
            rnd = (Offer.objects.filter(booking=b).order_by("-round").values_list("round", flat=True)
                   .first() or 0) + 1
            made = _offer(b, found, rnd, now)
            if b.first_offered_at is None:
                b.first_offered_at = now
                Booking.objects.filter(id=b.id).update(first_offered_at=now)
    if not made and pending == 0:
        providers = list(b.assignments.order_by("accepted_at", "id").values_list("provider", flat=True))
        _close_unfilled(b, now, providers)
    return len(made)


def _close_unfilled(b: Booking, now: datetime, providers: list[str]) -> None:
    Booking.objects.filter(id=b.id).update(status=BookingStatus.UNFILLED, unfilled_at=now)
    b.status, b.unfilled_at = BookingStatus.UNFILLED, now
    append(_user(b, b.customer), {"kind": "booking.unfilled", "booking": b.id, "providers": providers})


def _locked(caller: Caller, booking_id: str) -> Booking:
    """The booking in the caller's tenant, locked; another tenant's is indistinguishable from none."""
    b = Booking.objects.select_for_update().filter(id=booking_id, tenant=caller.tenant).first()
    if b is None:
        raise not_found(f"no booking {booking_id}")
    return b


def _my_offer(b: Booking, user: str) -> Offer:
    offer = Offer.objects.select_for_update().filter(booking=b, provider=user).first()
    if offer is None:
        raise forbidden("you have no offer for this booking")
    return offer


# --- answering ---------------------------------------------------------------------------------

@tracing.spanned("offer.accept")
def accept_offer(caller: Caller, booking_id: str) -> dict[str, Any]:
    now = timezone.now()
    with atomic():
        b = _locked(caller, booking_id)
        offer = _my_offer(b, caller.user)
        if offer.status == OfferStatus.ACCEPTED:
            return {"booking": b.id, "status": "accepted", "booking_status": b.status}  # a retried accept
        if offer.status != OfferStatus.PENDING:
            metrics.offer("conflict")
            raise conflict(f"the offer was {offer.status}" if offer.status != OfferStatus.WITHDRAWN
                           else "the booking's crew is already full")
        if offer.expires_at <= now:
            raise conflict("the offer expired")
        # Belt and braces beside the row lock: at most `crew` accepted, whatever the isolation level.
        won = Booking.objects.filter(id=b.id, status=BookingStatus.OFFERING, accepted__lt=F("crew")).update(
            accepted=F("accepted") + 1)
        if not won:
            raise conflict("the booking's crew is already full")
        Offer.objects.filter(id=offer.id).update(status=OfferStatus.ACCEPTED, accepted_at=now)
        metrics.offer("accepted")
        Assignment.objects.create(booking=b, provider=caller.user, accepted_at=now)
        record_offer_outcome(caller.user, "accepted", b.tenant)
        b.accepted += 1  # the row is ours (locked above): no need to read it back
        if b.accepted >= b.crew:
            _fill(b, now, [caller.user] if b.crew == 1 else None)
        transaction.on_commit(lambda: refresh_acceptance([caller.user], b.tenant))
    return {"booking": b.id, "status": "accepted", "booking_status": b.status}


def _fill(b: Booking, now: datetime, providers: list[str] | None = None) -> None:
    Booking.objects.filter(id=b.id).update(status=BookingStatus.ASSIGNED, assigned_at=now)
    b.status, b.assigned_at = BookingStatus.ASSIGNED, now
    # Withdraw what is still pending and learn whom to tell, in one statement.
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Offer._meta.db_table} SET status = %s, withdrawn_at = %s "
                       "WHERE booking_id = %s AND status = %s RETURNING provider",
                       [OfferStatus.WITHDRAWN, connection.ops.adapt_datetimefield_value(now), b.id,
                        OfferStatus.PENDING])
        withdrawn = sorted(row[0] for row in cursor.fetchall())
    for p in withdrawn:
        metrics.offer("withdrawn")
        append(_user(b, p), {"kind": "offer.withdrawn", "booking": b.id})
    if providers is None:
        providers = list(b.assignments.order_by("accepted_at", "id").values_list("provider", flat=True))
    append(_user(b, b.customer), {"kind": "booking.assigned", "booking": b.id, "providers": providers})
    # Chosen: now, and only now, each assigned provider gets the customer's exact point.
    job = {"kind": "booking.assigned", "booking": b.id, "providers": providers, "customer": b.customer,
           "category": b.category, "lat": b.lat, "lng": b.lng, "mode": b.mode, "at": iso(b.at),
           "at_ms": epoch_ms(b.at), "crew": b.crew}
    for p in providers:
        append(_user(b, p), job)


@tracing.spanned("offer.decline")
def decline_offer(caller: Caller, booking_id: str) -> dict[str, Any]:
    now = timezone.now()
    with atomic():
        b = _locked(caller, booking_id)
        offer = _my_offer(b, caller.user)
        if offer.status == OfferStatus.DECLINED:
            return {"booking": b.id, "status": "declined"}
        if offer.status != OfferStatus.PENDING:
            raise conflict(f"the offer was {offer.status}")
        Offer.objects.filter(id=offer.id).update(status=OfferStatus.DECLINED, declined_at=now)
        metrics.offer("declined")
        record_offer_outcome(caller.user, "declined", b.tenant)
        _top_up(b, now)
        transaction.on_commit(lambda: refresh_acceptance([caller.user], b.tenant))
    return {"booking": b.id, "status": "declined"}


def get_booking(caller: Caller, booking_id: str) -> dict[str, Any]:
    """The customer, providers who were offered it, and admins may read a booking. Its exact point
    goes to the customer, admins and the providers assigned to it; other providers get its area."""
    b = Booking.objects.filter(id=booking_id, tenant=caller.tenant).first()
    if b is None:
        raise not_found(f"no booking {booking_id}")
    if caller.role != "admin" and caller.user != b.customer and not Offer.objects.filter(
            booking=b, provider=caller.user).exists():
        raise not_found(f"no booking {booking_id}")  # no hint that it exists
    out = booking_dict(b)
    if (not privacy.sees_exact(caller.role) and caller.user != b.customer
            and not (b.status == BookingStatus.ASSIGNED and caller.user in out["providers"])):
        out.update(privacy.job_area(b.lat, b.lng))  # offered, not chosen: the area only
    mine = Offer.objects.filter(booking=b, provider=caller.user).first()
    if mine is not None:
        out["offer"] = {"status": mine.status, "expires_at": iso(mine.expires_at),
                        "expires_at_ms": epoch_ms(mine.expires_at)}
    return out


# --- expiry ------------------------------------------------------------------------------------

def sweep(now: float | datetime | None = None) -> int:
    """Expire due offers and re-offer; idempotent and safe in several processes at once.

    Each booking is handled under its row lock taken with SKIP LOCKED (another process is on it),
    and offers expire through a conditional UPDATE (status still pending), so an offer is expired
    and counted once. Returns the number of offers expired here.
    """
    if now is None:
        when = timezone.now()
    elif isinstance(now, datetime):
        when = now
    else:
        when = datetime.fromtimestamp(now, tz=UTC)
    matcher()  # the first sweep at server start also loads the matcher
    due = list(Offer.objects.filter(status=OfferStatus.PENDING, expires_at__lte=when)
               .order_by().values_list("booking_id", flat=True).distinct()[:SWEEP_BATCH])
    total = 0
    for booking_id in due:
        try:
            total += _expire_booking(booking_id, when)
        except Exception:
            log.exception("sweep: booking %s failed", booking_id)
    return total


@tracing.spanned("offers.expire")
def _expire_booking(booking_id: str, when: datetime) -> int:
    with atomic():
        b = (Booking.objects.select_for_update(skip_locked=True)
             .filter(id=booking_id).first())
        if b is None:
            return 0  # another process holds it; it will sweep it
        # Re-offers made here happen in the booking's tenant (push notifications stay inside it).
        with tenant_scope(b.tenant):
            return _expire_locked(b, when)


def _expire_locked(b: Booking, when: datetime) -> int:
    """The due offers of a booking whose row this transaction holds."""
    expired = list(Offer.objects.filter(booking=b, status=OfferStatus.PENDING, expires_at__lte=when)
                   .values_list("id", "provider"))
    if not expired:
        return 0
    n = Offer.objects.filter(id__in=[i for i, _p in expired], status=OfferStatus.PENDING).update(
        status=OfferStatus.EXPIRED, expired_at=when)
    for _ in range(n):
        metrics.offer("expired")
    users = sorted(p for _i, p in expired)  # one lock order for provider rows: no deadlocks
    for p in users:
        record_offer_outcome(p, "expired", b.tenant)
    for p in users:
        append(_user(b, p), {"kind": "offer.expired", "booking": b.id})
    _top_up(b, when)
    tenant = b.tenant
    transaction.on_commit(lambda: refresh_acceptance(users, tenant))
    return n
