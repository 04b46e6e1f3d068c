"""matching.actions.bookings: offers, first-come accepts (threads), expiry sweeps, re-offers, scheduled bookings."""
from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from core.errors import HubError
from hub.models import Publication
from hub.rpc import Caller
from matching.actions.bookings import (
    BookingRequest,
    accept_offer,
    create_booking,
    create_bookings,
    decline_offer,
    sweep,
)
from matching.actions.providers import update_provider
from matching.actions.zones import create_zone
from matching.matcher import matcher
from matching.models import Assignment, Booking, Offer, ProviderState
from matching.schedules import WEEKDAYS

LAT, LNG = 51.45, -0.20


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def pubs(user: str, kind: str | None = None) -> list[dict[str, Any]]:
    rows = Publication.objects.filter(channel=f"default/user:{user}").order_by("offset").values_list("data", flat=True)
    out = [orjson.loads(d) for d in rows if d is not None]
    return [d for d in out if kind is None or d.get("kind") == kind]


def who(role: str = "provider", user: str | None = None) -> Caller:
    return Caller(user or uid("u"), role, "default")


@pytest.fixture()
def area() -> Iterator[str]:
    """A fresh category with a zone around (LAT, LNG)."""
    cat = uid("cat")
    d = 0.1
    ring = [[LNG - d, LAT - d], [LNG + d, LAT - d], [LNG + d, LAT + d], [LNG - d, LAT + d], [LNG - d, LAT - d]]
    create_zone(Caller("ops", "admin", ""), "test zone", [cat], {"type": "Polygon", "coordinates": [ring]})
    yield cat


def providers(cat: str, n: int, schedule: list[dict[str, Any]] | None = None) -> list[str]:
    users = [uid("p") for _ in range(n)]
    for i, u in enumerate(users):
        # Increasing distance: users[0] is the nearest.
        update_provider(u, LAT + 0.001 * (i + 1), LNG, True, categories=[cat], schedule=schedule)
    return users


def test_on_demand_offer_accept_assigns_and_withdraws(area: str) -> None:
    ps = providers(area, 4)
    customer = who("customer")
    res = create_booking(customer, area, LAT, LNG, "on_demand")
    assert res["status"] == "offering" and res["offered"] == 3  # fan-out 3 for one place
    offer = pubs(ps[0], "offer")[0]
    assert {"kind", "booking", "category", "lat", "lng", "mode", "at", "expires_at"} <= set(offer)
    assert offer["booking"] == res["booking"] and offer["mode"] == "on_demand" and offer["at"] is None
    assert pubs(ps[3], "offer") == []  # fourth nearest waits for a re-offer
    got = accept_offer(who(user=ps[1]), res["booking"])
    assert got == {"booking": res["booking"], "status": "accepted", "booking_status": "assigned"}
    assert accept_offer(who(user=ps[1]), res["booking"])["status"] == "accepted"  # a retry is harmless
    assigned = pubs(customer.user, "booking.assigned")
    assert assigned == [{"kind": "booking.assigned", "booking": res["booking"], "providers": [ps[1]]}]
    assert pubs(ps[0], "offer.withdrawn") == [{"kind": "offer.withdrawn", "booking": res["booking"]}]
    with pytest.raises(HubError) as err:
        accept_offer(who(user=ps[0]), res["booking"])
    assert err.value.code == "conflict"
    with pytest.raises(HubError) as err:
        accept_offer(who(user=ps[3]), res["booking"])
    assert err.value.code == "forbidden"
    b = Booking.objects.get(id=res["booking"])
    assert b.status == "assigned" and b.assigned_at is not None and b.first_offered_at is not None
    o = Offer.objects.get(booking=b, provider=ps[1])
    assert o.accepted_at is not None and o.offered_at <= o.accepted_at < o.expires_at
    assert ProviderState.objects.get(user="default/" + ps[1]).offers_accepted == 1
    # The acceptance rate feeds the score: (1 + 1) / (1 + 2).
    got_state = matcher().tenant("default").providers.get(ps[1])
    assert got_state is not None and abs(got_state.acceptance - 2 / 3) < 1e-9


@override_settings(HUB_OFFER_FANOUT=1, HUB_OFFER_TTL_S=1)
def test_expiry_reoffers_then_unfilled(area: str) -> None:
    ps = providers(area, 2)
    customer = who("customer")
    res = create_booking(customer, area, LAT, LNG, "on_demand")
    assert [o.provider for o in Offer.objects.filter(booking_id=res["booking"])] == [ps[0]]
    first = Offer.objects.get(booking_id=res["booking"], provider=ps[0])
    assert (first.expires_at - first.offered_at).total_seconds() == pytest.approx(1.0)
    later = timezone.now() + timedelta(seconds=2)
    assert sweep(later) == 1
    assert sweep(later) == 0  # idempotent
    assert pubs(ps[0], "offer.expired")
    assert Offer.objects.get(booking_id=res["booking"], provider=ps[0]).expired_at is not None
    assert pubs(ps[1], "offer")[0]["booking"] == res["booking"]
    with pytest.raises(HubError) as err:
        accept_offer(who(user=ps[0]), res["booking"])
    assert err.value.code == "conflict"
    assert sweep(later + timedelta(seconds=5)) == 1
    b = Booking.objects.get(id=res["booking"])
    assert b.status == "unfilled" and b.unfilled_at is not None
    assert pubs(customer.user, "booking.unfilled") == [
        {"kind": "booking.unfilled", "booking": res["booking"], "providers": []}]
    assert ProviderState.objects.get(user="default/" + ps[0]).offers_expired == 1


def test_expired_but_unswept_offer_cannot_be_accepted(area: str) -> None:
    ps = providers(area, 1)
    res = create_booking(who("customer"), area, LAT, LNG, "on_demand")
    Offer.objects.filter(booking_id=res["booking"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(HubError) as err:
        accept_offer(who(user=ps[0]), res["booking"])
    assert err.value.code == "conflict" and "expired" in err.value.message


@override_settings(HUB_OFFER_FANOUT=1)
def test_decline_reoffers_and_counts(area: str) -> None:
    ps = providers(area, 2)
    res = create_booking(who("customer"), area, LAT, LNG, "on_demand")
    assert decline_offer(who(user=ps[0]), res["booking"]) == {"booking": res["booking"], "status": "declined"}
    assert pubs(ps[1], "offer")
    assert ProviderState.objects.get(user="default/" + ps[0]).offers_declined == 1
    st = matcher().tenant("default").providers.get(ps[0])
    assert st is not None and abs(st.acceptance - 1 / 3) < 1e-9
    with pytest.raises(HubError) as err:
        accept_offer(who(user=ps[0]), res["booking"])
    assert err.value.code == "conflict"


@override_settings(HUB_MAX_OPEN_BOOKINGS_PER_USER=2)
def test_bookings_made_together_are_the_same_as_one_after_the_other(area: str) -> None:
    """One batch (create_bookings, one transaction): each booking its own result or refusal, in
    order; a customer's earlier bookings in the batch count against their open-bookings budget."""
    ps = providers(area, 3)
    busy, calm = who("customer"), who("customer")
    create_booking(busy, area, LAT, LNG, "on_demand")  # one open already
    out = create_bookings([
        BookingRequest(calm, area, LAT, LNG, "on_demand"),
        BookingRequest(busy, area, LAT, LNG, "on_demand"),  # their second: admitted
        BookingRequest(calm, area, LAT, LNG, "scheduled"),  # no time: refused, nothing made
        BookingRequest(busy, area, LAT, LNG, "on_demand"),  # their third: over the budget
        BookingRequest(calm, uid("nocat"), 10.0, 10.0, "on_demand"),  # no zone: unfilled at once
        BookingRequest(calm, area, LAT, LNG, "on_demand", crew=2)])
    codes = [r.code if isinstance(r, HubError) else r["status"] for r in out]
    assert codes == ["offering", "offering", "bad_request", "conflict", "unfilled", "offering"]
    made = [r for r in out if isinstance(r, dict)]
    assert [r["offered"] for r in made] == [3, 3, 0, 3]  # crew 2 x fan-out 3, but only 3 providers
    assert Booking.objects.filter(customer=busy.user).count() == 2
    assert Booking.objects.filter(customer=calm.user).count() == 3
    for p in ps:  # every provider offered each booking that found them, in the batch's order
        assert [o["booking"] for o in pubs(p, "offer")][-3:] == [made[0]["booking"], made[1]["booking"],
                                                                 made[3]["booking"]]
    assert [u["booking"] for u in pubs(calm.user, "booking.unfilled")] == [made[2]["booking"]]
    offers = Counter(Offer.objects.filter(booking_id__in=[r["booking"] for r in made]).values_list(
        "booking_id", flat=True))
    assert offers == {made[0]["booking"]: 3, made[1]["booking"]: 3, made[3]["booking"]: 3}


def test_bookings_of_two_tenants_are_never_made_together(area: str) -> None:
    with pytest.raises(ValueError, match="one tenant"):
        create_bookings([BookingRequest(who("customer"), area, LAT, LNG, "on_demand"),
                         BookingRequest(Caller(uid("c"), "customer", uid("t")), area, LAT, LNG, "on_demand")])


def test_no_zone_means_unfilled_at_once() -> None:
    customer = who("customer")
    res = create_booking(customer, uid("nocat"), 10.0, 10.0, "on_demand")
    assert res["status"] == "unfilled" and res["zone"] is None
    assert pubs(customer.user, "booking.unfilled")


def test_scheduled_only_offers_covering_schedules(area: str) -> None:
    at = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    london = at.astimezone(ZoneInfo("Europe/London"))
    day = WEEKDAYS[london.weekday()]
    covering = providers(area, 1, schedule=[{"days": [day], "from": "00:00", "to": "24:00"}])
    absolute = providers(area, 1, schedule=[{"from": (at - timedelta(hours=1)).isoformat(),
                                             "to": (at + timedelta(hours=1)).isoformat()}])
    other = WEEKDAYS[(london.weekday() + 3) % 7]
    elsewhere = providers(area, 1, schedule=[{"days": [other], "from": "00:00", "to": "24:00"}])
    unstated = providers(area, 1)
    res = create_booking(who("customer"), area, LAT, LNG, "scheduled", at=at.isoformat())
    offered = set(Offer.objects.filter(booking_id=res["booking"]).values_list("provider", flat=True))
    assert offered == {covering[0], absolute[0]}
    assert not offered & {elsewhere[0], unstated[0]}
    offer = pubs(covering[0], "offer")[0]
    assert offer["mode"] == "scheduled" and offer["at"] is not None
    assert Booking.objects.get(id=res["booking"]).at == at


@pytest.mark.parametrize("at", [None, "2001-01-01T10:00:00Z", "next tuesday"])
def test_scheduled_needs_future_at(area: str, at: str | None) -> None:
    with pytest.raises(HubError) as err:
        create_booking(who("customer"), area, LAT, LNG, "scheduled", at=at)
    assert err.value.code == "bad_request"


def test_on_demand_refuses_at(area: str) -> None:
    with pytest.raises(HubError) as err:
        create_booking(who("customer"), area, LAT, LNG, "on_demand", at="2100-01-01T10:00:00Z")
    assert err.value.code == "bad_request"


@override_settings(HUB_OFFER_FANOUT=4)
def test_concurrent_accepts_exactly_crew_win(area: str) -> None:
    ps = providers(area, 12)
    customer = who("customer")
    res = create_booking(customer, area, LAT, LNG, "on_demand", crew=3)
    assert res["offered"] == 12
    barrier = threading.Barrier(len(ps))
    outcomes: list[str] = []
    lock = threading.Lock()

    def go(user: str) -> None:
        try:
            barrier.wait()
            try:
                accept_offer(who(user=user), res["booking"])
                outcome = "ok"
            except HubError as exc:
                outcome = exc.code
            with lock:
                outcomes.append(outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=go, args=(u,)) for u in ps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(outcomes) == {"ok": 3, "conflict": 9}
    b = Booking.objects.get(id=res["booking"])
    assert b.status == "assigned" and b.accepted == 3
    winners = set(Assignment.objects.filter(booking=b).values_list("provider", flat=True))
    assert len(winners) == 3
    assigned = pubs(customer.user, "booking.assigned")
    assert len(assigned) == 1 and set(assigned[0]["providers"]) == winners
    assert Offer.objects.filter(booking=b, status="withdrawn").count() == 9


@override_settings(HUB_OFFER_FANOUT=2, HUB_OFFER_TTL_S=1)
def test_concurrent_sweeps_expire_once(area: str) -> None:
    ps = providers(area, 6)
    bookings = [create_booking(who("customer"), area, LAT, LNG, "on_demand")["booking"]
                for _ in range(3)]
    later = timezone.now() + timedelta(seconds=3)
    barrier = threading.Barrier(4)
    totals: list[int] = []

    def go() -> None:
        try:
            barrier.wait()
            totals.append(sweep(later))
        finally:
            connection.close()

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Each booking had its 2 nearest offered; each of those expired exactly once (the sweep is
    # global, so other tests' leftovers may add to the totals).
    assert sum(totals) >= 6
    expired = Counter(Offer.objects.filter(booking_id__in=bookings, status="expired")
                      .values_list("provider", flat=True))
    assert expired == {ps[0]: 3, ps[1]: 3}
    assert ProviderState.objects.get(user="default/" + ps[0]).offers_expired == 3
    # Re-offered once per booking to the next two (no duplicate offers despite four sweepers).
    for b in bookings:
        assert Offer.objects.filter(booking_id=b, status="pending").count() == 2


def test_concurrent_bookings_offering_the_same_providers_in_opposite_orders(area: str) -> None:
    """Bookings west and east of three providers offer them nearest first, so in opposite orders;
    with each offer's offset taken as it was made, such transactions deadlocked."""
    west, mid, east = uid("pw"), uid("pm"), uid("pe")
    for user, dlng in ((west, -0.01), (mid, 0.0), (east, 0.01)):
        update_provider(user, LAT, LNG + dlng, True, categories=[area])
    sides = [-0.02, 0.02] * 4
    barrier = threading.Barrier(len(sides))
    results: list[Any] = []
    lock = threading.Lock()

    def book(dlng: float) -> None:
        try:
            barrier.wait()
            try:
                out: Any = create_booking(who("customer"), area, LAT, LNG + dlng, "on_demand")
            except Exception as exc:
                out = exc
            with lock:
                results.append(out)
        finally:
            connection.close()

    threads = [threading.Thread(target=book, args=(d,)) for d in sides]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r["offered"] if isinstance(r, dict) else r for r in results] == [3] * len(sides)
    for user in (west, mid, east):
        offsets = list(Publication.objects.filter(channel=f"default/user:{user}").order_by("offset")
                       .values_list("offset", flat=True))
        assert offsets == list(range(1, len(sides) + 1))  # gap-free, one per booking
