"""Location privacy over real sockets: customers cannot place a provider finer than their cell, and
providers learn a customer's point only once chosen (docs/matching.md, "What each role sees and why").
"""
from __future__ import annotations

import math
import time
import uuid
from typing import Any

import h3
import numpy as np

from matching.geo import M_PER_DEG, destination, haversine_m
from tests.support import HubClient, mint

LAT, LNG = 51.47, -0.21  # south-west London, away from the other suites' points


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def square(lat: float, lng: float, d: float = 0.08) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


def far_from_centre(lat: float, lng: float, towards: float = 0.85) -> tuple[float, float]:
    """A point of (lat, lng)'s resolution-8 cell most of the way from its centre to a vertex: where a
    cell-level answer is furthest from the truth."""
    cell = h3.latlng_to_cell(lat, lng, 8)
    clat, clng = h3.cell_to_latlng(cell)
    vlat, vlng = h3.cell_to_boundary(cell)[0]
    return clat + towards * (vlat - clat), clng + towards * (vlng - clng)


def next_pub(c: HubClient, kind: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        push = c.next_push("pub", timeout=max(0.01, deadline - time.time()))
        if isinstance(push.get("data"), dict) and push["data"].get("kind") == kind:
            return dict(push["data"])


def no_exact_point(data: dict[str, Any], lat: float, lng: float) -> None:
    """The pushed or returned data carries no coordinates within 100 m of the exact point."""
    assert lat not in data.values() and lng not in data.values(), data
    if data.get("lat") is not None:
        assert haversine_m(data["lat"], data["lng"], lat, lng) >= 100.0, data


def trilaterate(points: list[tuple[float, float]], dists: list[float]) -> tuple[float, float]:
    """Least-squares position from distances (grid search on a local plane, 10 m steps)."""
    lat0, lng0 = points[0]
    kx = M_PER_DEG * math.cos(math.radians(lat0))
    px = np.array([(q[1] - lng0) * kx for q in points])
    py = np.array([(q[0] - lat0) * M_PER_DEG for q in points])
    d = np.array(dists)
    xs = np.arange(-6000.0, 6000.0, 10.0)
    gx, gy = np.meshgrid(xs, xs)
    err = np.zeros_like(gx)
    for i in range(len(d)):
        err += (np.hypot(gx - px[i], gy - py[i]) - d[i]) ** 2
    j = np.unravel_index(int(np.argmin(err)), err.shape)
    return lat0 + float(gy[j]) / M_PER_DEG, lng0 + float(gx[j]) / kx


def test_customer_cannot_trilaterate_a_provider_admin_sees_exact(live_hub: Any) -> None:
    cat = uid("cat")
    plat, plng = far_from_centre(LAT, LNG)
    centre = h3.cell_to_latlng(h3.latlng_to_cell(plat, plng, 8))
    assert haversine_m(plat, plng, *centre) > 350.0  # the test's premise: the truth is far from the centre
    p = uid("p")
    with HubClient(live_hub.url, mint(uid("ops"), "admin")) as ops, \
            HubClient(live_hub.url, mint(p, "provider")) as provider, \
            HubClient(live_hub.url, mint(uid("c"), "customer")) as customer, \
            HubClient(live_hub.url, mint(uid("e"), "enterprise")) as enterprise:
        zone = ops.rpc("zones.create", name="Privacy", categories=[cat], geometry=square(LAT, LNG))
        try:
            provider.rpc("providers.update", lat=plat, lng=plng, available=True, categories=[cat])
            points = [destination(plat, plng, bearing, dist)
                      for bearing, dist in ((0, 800), (40, 2500), (95, 1200), (150, 3000), (200, 700),
                                            (250, 2000), (300, 1500), (340, 3500), (20, 4000), (120, 300),
                                            (180, 1800), (270, 600))]
            seen: list[float] = []
            for qlat, qlng in points:
                found = customer.rpc("match.find", lat=qlat, lng=qlng, category=cat)
                assert [x["user"] for x in found["providers"]] == [p]
                got = found["providers"][0]
                assert set(got) == {"user", "distance_m", "score"}
                # Every shown distance is a multiple of 100 m, and the score is made from it alone.
                assert got["distance_m"] % 100 == 0, got
                assert got["score"] == round(got["distance_m"] / 1000 - 0.1 * 0.5, 4), got
                seen.append(got["distance_m"])
            guess = trilaterate(points, seen)
            assert haversine_m(guess[0], guess[1], plat, plng) > 300.0, (guess, (plat, plng))

            qlat, qlng = points[1]
            shown = enterprise.rpc("match.find", lat=qlat, lng=qlng, category=cat)["providers"][0]
            assert shown["distance_m"] % 100 == 0
            exact = ops.rpc("match.find", lat=qlat, lng=qlng, category=cat)["providers"][0]
            assert exact["distance_m"] == round(haversine_m(qlat, qlng, plat, plng), 1)
        finally:
            provider.rpc("providers.update", lat=plat, lng=plng, available=False)
            ops.rpc("zones.delete", id=zone["id"])


def test_offers_carry_the_area_until_assigned(live_hub: Any) -> None:
    cat = uid("cat")
    xlat, xlng = far_from_centre(LAT + 0.02, LNG + 0.02, towards=0.7)
    p1, p2, cust = uid("p"), uid("p"), uid("c")
    with HubClient(live_hub.url, mint(uid("ops"), "admin")) as ops, \
            HubClient(live_hub.url, mint(p1, "provider")) as one, \
            HubClient(live_hub.url, mint(p2, "provider")) as two, \
            HubClient(live_hub.url, mint(cust, "customer")) as customer:
        zone = ops.rpc("zones.create", name="Offers", categories=[cat], geometry=square(LAT, LNG))
        try:
            for c, u, d in ((one, p1, 900), (two, p2, 1600)):
                c.call("subscribe", channel=f"user:{u}")
                lat, lng = destination(xlat, xlng, 60, d)
                c.rpc("providers.update", lat=lat, lng=lng, available=True, categories=[cat])
            booking = customer.rpc("bookings.create", category=cat, lat=xlat, lng=xlng, mode="on_demand")
            assert booking["offered"] == 2
            for c in (one, two):
                offer = next_pub(c, "offer")
                assert offer["booking"] == booking["booking"]
                no_exact_point(offer, xlat, xlng)
                assert offer["area"]["radius_m"] >= haversine_m(offer["lat"], offer["lng"], xlat, xlng)
                assert offer["distance_m"] % 100 == 0
            before = two.rpc("bookings.get", booking=booking["booking"])
            no_exact_point(before, xlat, xlng)

            one.rpc("offers.accept", booking=booking["booking"])
            assigned = next_pub(one, "booking.assigned")
            assert (assigned["lat"], assigned["lng"]) == (xlat, xlng) and assigned["providers"] == [p1]
            mine = one.rpc("bookings.get", booking=booking["booking"])
            assert (mine["lat"], mine["lng"]) == (xlat, xlng) and "area" not in mine
            theirs = customer.rpc("bookings.get", booking=booking["booking"])
            assert (theirs["lat"], theirs["lng"]) == (xlat, xlng)

            next_pub(two, "offer.withdrawn")
            no_exact_point(two.rpc("bookings.get", booking=booking["booking"]), xlat, xlng)
            for pub in two.call("history", channel=f"user:{p2}")["pubs"]:
                no_exact_point(pub["data"], xlat, xlng)
        finally:
            for c in (one, two):
                c.rpc("providers.update", lat=xlat, lng=xlng, available=False)
            ops.rpc("zones.delete", id=zone["id"])


def test_job_new_carries_the_area_and_bid_accepted_the_point(live_hub: Any) -> None:
    cat = uid("cat")
    xlat, xlng = far_from_centre(LAT - 0.02, LNG - 0.02, towards=0.7)
    p1, p2, owner = uid("p"), uid("p"), uid("c")
    with HubClient(live_hub.url, mint(uid("ops"), "admin")) as ops, \
            HubClient(live_hub.url, mint(p1, "provider")) as one, \
            HubClient(live_hub.url, mint(p2, "provider")) as two, \
            HubClient(live_hub.url, mint(owner, "customer")) as customer:
        zone = ops.rpc("zones.create", name="Jobs", categories=[cat], geometry=square(LAT, LNG))
        try:
            for c, u, d in ((one, p1, 700), (two, p2, 1300)):
                c.call("subscribe", channel=f"user:{u}")
                lat, lng = destination(xlat, xlng, 200, d)
                c.rpc("providers.update", lat=lat, lng=lng, available=True, categories=[cat])
            job = customer.rpc("jobs.create", title="Boiler", description="", category=cat, lat=xlat, lng=xlng)
            assert job["notified"] == 2
            bids = {}
            for c, u in ((one, p1), (two, p2)):
                note = next_pub(c, "job.new")
                assert note["job"] == job["job"]
                no_exact_point(note, xlat, xlng)
                assert note["area"]["radius_m"] >= haversine_m(note["lat"], note["lng"], xlat, xlng)
                bids[u] = c.rpc("jobs.bid", job=job["job"], amount=5000, currency="GBP")["bid"]
                no_exact_point(c.rpc("jobs.get", job=job["job"]), xlat, xlng)  # a bidder: the area only

            customer.rpc("jobs.accept", job=job["job"], bid=bids[p1])
            mine = one.rpc("jobs.get", job=job["job"])
            assert (mine["lat"], mine["lng"]) == (xlat, xlng)  # the winner gets the point
            no_exact_point(two.rpc("jobs.get", job=job["job"]), xlat, xlng)  # the loser never
            assert customer.rpc("jobs.get", job=job["job"])["lat"] == xlat
            won = next_pub(one, "bid.accepted")
            assert (won["lat"], won["lng"]) == (xlat, xlng)
            no_exact_point(next_pub(two, "bid.rejected"), xlat, xlng)
            for pub in two.call("history", channel=f"user:{p2}")["pubs"]:
                no_exact_point(pub["data"], xlat, xlng)
        finally:
            for c in (one, two):
                c.rpc("providers.update", lat=xlat, lng=xlng, available=False)
            ops.rpc("zones.delete", id=zone["id"])
