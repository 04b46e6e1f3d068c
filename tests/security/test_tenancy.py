"""Tenant walls over a live hub: two tenants, A and B, share one hub, and the same user ids
(alice, sam, bob, carol, ops) exist in both. A tenant-B caller never reads, receives, changes or is
offered anything of tenant A (docs/tenancy.md).

The matrix is generated from the registries, so a new rpc method, namespace or HTTP route fails
here until it has a row: every rpc method in hub.rpc.REGISTRY (over the socket, and over HTTP
when served there), every namespace in hub.channels.NAMESPACES (subscribe with recovery, history,
presence, publish) and every route of the URL conf. Tenant A's data carries a marker (MARK_A) and
exact coordinates no B caller may see; B's actions carry MARK_B, which no A socket may receive.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver

from hub import channels, rpc
from tests.support import HubClient, HubServer, ReplyError, http_json, mint

CAT = "plumbing-tenancy"
LAT, LNG = 51.5321, -0.0412  # east London, away from the other suites' points
# A's exact points (job, booking): B callers may never see them, nor A's providers' exact places.
JOB_A = (51.531234, -0.041234)
BOOKING_A = (51.532345, -0.042345)
USERS = {"alice": "serviceman", "sam": "serviceman", "bob": "customer", "carol": "customer", "ops": "admin"}


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


MARK_A = uid("secretA")
MARK_B = uid("secretB")


def square(lat: float, lng: float, d: float = 0.05) -> dict[str, Any]:
    ring = [[lng - d, lat - d], [lng + d, lat - d], [lng + d, lat + d], [lng - d, lat + d], [lng - d, lat - d]]
    return {"type": "Polygon", "coordinates": [ring]}


class Tenant:
    """One tenant's people, each with an open socket subscribed to their own `user:` channel."""

    def __init__(self, hub: HubServer, name: str) -> None:
        self.hub, self.name = hub, name
        self.tokens = {u: mint(u, role, tenant=name) for u, role in USERS.items()}
        self.c: dict[str, HubClient] = {}
        for u in USERS:
            c = HubClient(hub.url, self.tokens[u])
            c.call("subscribe", channel=f"user:{u}")
            self.c[u] = c
        self.ids: dict[str, str] = {}

    def rpc(self, user: str, method: str, **params: Any) -> Any:
        return self.c[user].rpc(method, **params)

    def pushes(self) -> list[dict[str, Any]]:
        """Everything pushed to this tenant's sockets so far (drained)."""
        out = []
        for c in self.c.values():
            while not c.pushes.empty():
                out.append(c.pushes.get_nowait())
        return out

    def close(self) -> None:
        for c in self.c.values():
            c.close()


def leaks(value: Any, *marks: str) -> list[str]:
    text = json.dumps(value)
    return [m for m in marks if m in text]


A_SECRETS = (MARK_A, str(JOB_A[0]), str(JOB_A[1]), str(BOOKING_A[0]), str(BOOKING_A[1]))


@pytest.fixture(scope="module")
def world(live_hub: HubServer) -> Iterator[tuple[Tenant, Tenant]]:
    """A and B: a zone each over the same streets, the same providers (alice, sam) in the same places,
    plus a provider only A has; A's job with a bid and a query, A's booking offered, A's room with
    messages, A's ringing call."""
    a, b = Tenant(live_hub, uid("ta")), Tenant(live_hub, uid("tb"))
    try:
        for t, only in ((a, "apro"), (b, "bpro")):
            t.ids["zone"] = t.rpc("ops", "zones.create", name=f"{t.name} zone", categories=[CAT],
                                  geometry=square(LAT, LNG))["id"]
            for i, u in enumerate(("alice", "sam")):
                t.rpc(u, "providers.update", lat=LAT + 0.001 * (i + 1), lng=LNG, available=True, categories=[CAT])
            with HubClient(live_hub.url, mint(only, "provider", tenant=t.name)) as p:
                p.rpc("providers.update", lat=LAT, lng=LNG + 0.002, available=True, categories=[CAT])
        a.rpc("ops", "providers.set_rating", provider="sam", rating=5.0)
        # A's things, marked.
        a.ids["job"] = a.rpc("carol", "jobs.create", title=f"job {MARK_A}", description=MARK_A, category=CAT,
                             lat=JOB_A[0], lng=JOB_A[1], budget=5000)["job"]
        a.ids["bid"] = a.rpc("sam", "jobs.bid", job=a.ids["job"], amount=4000, currency="GBP", note=MARK_A)["bid"]
        a.ids["query"] = a.rpc("alice", "jobs.ask", job=a.ids["job"], text=f"when? {MARK_A}")["query"]
        a.ids["booking"] = a.rpc("carol", "bookings.create", category=CAT, lat=BOOKING_A[0], lng=BOOKING_A[1],
                                 mode="on_demand")["booking"]
        a.ids["room"] = a.rpc("carol", "rooms.create", members=["bob"], kind="booking")["room"]
        a.c["carol"].call("subscribe", channel=f"chat:{a.ids['room']}")
        a.c["carol"].call("publish", channel=f"chat:{a.ids['room']}", data={"text": MARK_A})
        a.ids["call"] = a.rpc("carol", "calls.start", room=a.ids["room"], media="voice")["call"]
        a.ids["device"] = a.rpc("carol", "devices.register", platform="android", token=f"tok{MARK_A}")["device"]
        a.rpc("carol", "notify.set_preferences", kinds={"message": False})
        yield a, b
    finally:
        a.close()
        b.close()


def kinds(pushes: list[dict[str, Any]], channel: str | None = None) -> list[str]:
    return [p["data"].get("kind") for p in pushes if p.get("push") == "pub" and isinstance(p.get("data"), dict)
            and (channel is None or p.get("channel") == channel)]


def test_concrete_cases_from_the_issue(world: tuple[Tenant, Tenant], live_hub: HubServer) -> None:
    a, b = world
    time.sleep(0.3)  # pushes of A's set-up are in flight
    a_got, b_got = a.pushes(), b.pushes()
    # A's booking was offered to A's providers (alice and sam), never to B's alice or sam.
    assert kinds(a_got, "user:alice").count("offer") == 1 and kinds(a_got, "user:sam").count("offer") == 1
    # jobs.create in A: job.new to A's providers, none to B's.
    assert "job.new" in kinds(a_got, "user:alice")
    # The call in A rang A's bob only.
    assert "call.invite" in kinds(a_got, "user:bob") and "room.new" in kinds(a_got, "user:bob")
    assert b_got == [], b_got  # B's alice, sam and bob received nothing of A's (no offer, job.new, call)

    # B's serviceman cannot take A's booking, nor see it.
    for method in ("offers.accept", "offers.decline", "bookings.get"):
        with pytest.raises(ReplyError) as err:
            b.rpc("sam", method, booking=a.ids["booking"])
        assert err.value.code == "not_found", method
    # B's admin cannot subscribe to A's job (nor read its history), nor rename A's zone, nor rate A's provider.
    for cmd in ("subscribe", "history"):
        with pytest.raises(ReplyError) as err:
            b.c["ops"].call(cmd, channel=f"job:{a.ids['job']}")
        assert err.value.code == "forbidden"
    with pytest.raises(ReplyError) as err:
        b.rpc("ops", "zones.replace", id=a.ids["zone"], name=f"hijack {MARK_B}", categories=[CAT],
              geometry=square(LAT, LNG))
    assert err.value.code == "not_found"
    status, _ = http_json("PUT", f"{live_hub.http}/api/zones/{a.ids['zone']}",
                          {"name": f"hijack {MARK_B}", "categories": [CAT], "geometry": square(LAT, LNG)},
                          token=b.tokens["ops"])
    assert status == 404
    b.rpc("ops", "providers.set_rating", provider="sam", rating=0.0)  # B's sam; A's keeps 5.0
    from matching.models import ProviderState

    assert ProviderState.objects.get(user=f"{a.name}/sam").rating == 5.0
    assert ProviderState.objects.get(user=f"{b.name}/sam").rating == 0.0
    # B's admin publishing on `user:alice` writes to B's alice: A's alice receives nothing.
    status, _ = http_json("POST", f"{live_hub.http}/api/publish", {"channel": "user:alice", "data": {"t": MARK_B}},
                          token=b.tokens["ops"])
    assert status == 200
    assert b.c["alice"].next_push("pub", channel="user:alice")["data"] == {"t": MARK_B}
    time.sleep(0.3)
    assert a.pushes() == []
    # B's bob cannot answer A's call, nor join A's room's chat or call channel.
    with pytest.raises(ReplyError) as err:
        b.rpc("bob", "calls.accept", call=a.ids["call"])
    assert err.value.code == "not_found"
    for channel in (f"chat:{a.ids['room']}", f"call:{a.ids['call']}"):
        with pytest.raises(ReplyError) as err:
            b.c["bob"].call("subscribe", channel=channel)
        assert err.value.code == "forbidden", channel
    # match.find in B finds B's providers only (A's apro sits in the same streets).
    found = b.rpc("ops", "match.find", lat=LAT, lng=LNG, category=CAT, k=20)
    assert sorted(p["user"] for p in found["providers"]) == ["alice", "bpro", "sam"]
    assert sorted(p["user"] for p in a.rpc("ops", "match.find", lat=LAT, lng=LNG, category=CAT, k=20)
                  ["providers"]) == ["alice", "apro", "sam"]


# --- the matrix: every rpc method ---------------------------------------------------------------

def hostile(ids: dict[str, str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """For each rpc method: the B user who calls it and params aimed at A's things (ids of A's
    zone, job, bid, query, booking, room and call), or at B's own where the method has no target."""
    job, zone = ids["job"], ids["zone"]
    geometry = square(LAT, LNG)
    return {
        "providers.update": ("sam", {"lat": LAT + 0.01, "lng": LNG, "available": True, "categories": [CAT]}),
        "match.find": ("ops", {"lat": LAT, "lng": LNG, "category": CAT, "k": 50}),
        "providers.assign_zone": ("ops", {"provider": "sam", "zone": zone}),
        "providers.set_rating": ("ops", {"provider": "alice", "rating": 1.0}),
        "bookings.create": ("bob", {"category": CAT, "lat": LAT, "lng": LNG, "mode": "on_demand"}),
        "bookings.get": ("ops", {"booking": ids["booking"]}),
        "offers.accept": ("alice", {"booking": ids["booking"]}),
        "offers.decline": ("sam", {"booking": ids["booking"]}),
        "zones.create": ("ops", {"name": f"zone {MARK_B}", "categories": [CAT], "geometry": geometry}),
        "zones.list": ("ops", {}),
        "zones.get": ("ops", {"id": zone}),
        "zones.replace": ("ops", {"id": zone, "name": MARK_B, "categories": [CAT], "geometry": geometry}),
        "zones.delete": ("ops", {"id": zone}),
        "rooms.create": ("bob", {"members": ["carol"], "kind": "booking", "ref": MARK_B}),
        "rooms.list": ("bob", {}),
        "jobs.create": ("bob", {"title": f"job {MARK_B}", "description": MARK_B, "category": CAT,
                                "lat": LAT, "lng": LNG}),
        "jobs.bid": ("sam", {"job": job, "amount": 1, "currency": "GBP", "note": MARK_B}),
        "jobs.accept": ("carol", {"job": job, "bid": ids["bid"]}),
        "jobs.start": ("sam", {"job": job}),
        "jobs.complete": ("ops", {"job": job}),
        "jobs.cancel": ("ops", {"job": job, "reason": MARK_B}),
        "jobs.comment": ("ops", {"job": job, "text": MARK_B}),
        "jobs.ask": ("alice", {"job": job, "text": MARK_B}),
        "jobs.answer": ("carol", {"job": job, "query": ids["query"], "text": MARK_B}),
        "jobs.get": ("ops", {"job": job}),
        "calls.start": ("bob", {"room": ids["room"], "media": "voice"}),
        "calls.accept": ("bob", {"call": ids["call"]}),
        "calls.decline": ("bob", {"call": ids["call"]}),
        "calls.end": ("carol", {"call": ids["call"]}),
        "calls.renew": ("carol", {"call": ids["call"]}),
        "calls.get": ("ops", {"call": ids["call"]}),
        "assist.ask": ("bob", {"prompt": MARK_B, "room": ids["room"], "context": 5}),
        "assist.cancel": ("bob", {"assist": uuid.uuid4().hex}),
        "devices.register": ("bob", {"platform": "android", "token": f"tok{MARK_B}"}),
        "devices.unregister": ("carol", {"device": ids["device"]}),
        "devices.list": ("carol", {}),
        "devices.state": ("carol", {"background": True, "device": ids["device"]}),
        "notify.get_preferences": ("carol", {}),
        "notify.set_preferences": ("carol", {"kinds": {"message": True, "offer": False}}),
        # Last: it closes B's carol (and only B's: A's carol stays connected, checked below).
        "tokens.revoke": ("ops", {"user": "carol"}),
    }


def a_records(a: Tenant) -> dict[str, Any]:
    """What B must not change: A's zone, job, bid, query, booking and offers, room, call, ratings."""
    from matching.models import Booking, Offer, ProviderState, Zone
    from notify.models import Device, Preferences
    from rooms.models import Bid, Call, CallParticipant, Job, JobComment, JobQuery, RoomMember

    job = Job.objects.get(pk=a.ids["job"])
    return {
        "devices": sorted(Device.objects.filter(tenant=a.name).values_list("id", "user", "token")),
        "preferences": sorted(Preferences.objects.filter(tenant=a.name).values_list("user", "kinds")),
        "zone": Zone.objects.filter(pk=a.ids["zone"]).values("name", "version", "active").first(),
        "job": (job.status, job.title, job.provider, job.cancel_reason),
        "bids": sorted(Bid.objects.filter(job=job).values_list("provider", "amount", "status")),
        "comments": JobComment.objects.filter(job=job).count(),
        "queries": JobQuery.objects.filter(job=job).count(),
        "booking": Booking.objects.filter(pk=a.ids["booking"]).values("status", "accepted").first(),
        "offers": sorted(Offer.objects.filter(booking_id=a.ids["booking"]).values_list("provider", "status")),
        "members": sorted(RoomMember.objects.filter(room_id=a.ids["room"]).values_list("user", flat=True)),
        "call": Call.objects.filter(pk=a.ids["call"]).values("status").first(),
        "participants": sorted(CallParticipant.objects.filter(call_id=a.ids["call"])
                               .values_list("user", "status")),
        # Unrated is 0.0 with or without a row (the matcher's write-behind adds rows every few seconds).
        "ratings": sorted(ProviderState.objects.filter(user__startswith=f"{a.name}/").exclude(rating=0)
                          .values_list("user", "rating")),
        # Exact places and order as A's admin sees them (B's providers.update moved B's sam only).
        "found": a.rpc("ops", "match.find", lat=LAT, lng=LNG, category=CAT, k=20)["providers"],
    }


def test_every_rpc_method_over_socket_and_http(world: tuple[Tenant, Tenant], live_hub: HubServer) -> None:
    a, b = world
    table = hostile(a.ids)
    assert set(table) == set(rpc.REGISTRY), "every rpc method needs a row in hostile()"
    time.sleep(0.3)
    a.pushes(), b.pushes()
    before = a_records(a)
    for name, (user, params) in table.items():
        m = rpc.REGISTRY[name]
        assert USERS[user] in m.roles, f"{name}: {user} ({USERS[user]}) may not call it; pick another row"
        reply = b.c[user].request("rpc", method=name, params=params)
        answers = [reply.get("result") if reply.get("ok") else reply["error"]]
        if m.http:
            status, body = http_json("POST", f"{live_hub.http}/api/{name}", params, token=b.tokens[user])
            answers.append(body)
        for answer in answers:
            assert not leaks(answer, *A_SECRETS), f"{name} leaked A's data to B: {answer}"
        if name in ("zones.list", "rooms.list", "match.find", "devices.list"):
            assert not leaks(answers, a.ids["zone"], a.ids["room"], a.ids["device"], "apro"), name
    time.sleep(0.5)  # pushes caused by B's calls have landed
    assert a_records(a) == before
    assert not leaks(a.pushes(), MARK_B), "an A socket received B's data"
    assert not leaks(b.pushes(), *A_SECRETS), "a B socket received A's data"
    # tokens.revoke in B revoked B's carol: A's carol is still connected.
    assert a.c["carol"].closed is None
    a.rpc("carol", "rooms.list")


# --- every namespace --------------------------------------------------------------------------

def a_ident(ns: str, ids: dict[str, str]) -> str:
    """The id of A's thing in namespace `ns` (a new namespace needs one here)."""
    return {"user": "alice", "job": ids["job"], "chat": ids["room"], "call": ids["call"]}[ns]


def test_every_namespace_subscribe_history_presence_publish(world: tuple[Tenant, Tenant]) -> None:
    a, b = world
    assert set(channels.NAMESPACES) == {"user", "job", "chat", "call"}, "a new namespace needs a_ident()"
    time.sleep(0.3)
    a.pushes()
    for ns in channels.NAMESPACES:
        channel = f"{ns}:{a_ident(ns, a.ids)}"
        # A's own member sees A's data there (the check below would pass on an empty channel otherwise).
        owner = {"user": "alice", "job": "carol", "chat": "carol", "call": "carol"}[ns]
        history = a.c[owner].call("history", channel=channel)
        assert leaks(history, MARK_A) or ns == "call" or ns == "user", channel
        for user in ("ops", "alice", "bob"):
            c = b.c[user]
            for cmd, extra in (("history", {}), ("presence", {})):
                reply = c.request(cmd, channel=channel, **extra)
                if reply.get("ok"):
                    assert ns == "user" and user == "alice", f"{cmd} {channel} allowed to B's {user}"
                    assert not leaks(reply["result"], *A_SECRETS), reply
            if ns == "user" and user == "alice":
                continue  # B's alice is subscribed to her own user:alice already (the world fixture)
            reply = c.request("subscribe", channel=channel, since={"offset": 0, "epoch": ""})
            assert not reply.get("ok") and reply["error"]["code"] == "forbidden", (ns, user, reply)
            reply = c.request("publish", channel=channel, data={"text": MARK_B})
            assert not reply.get("ok") and reply["error"]["code"] == "forbidden", (ns, user, reply)
    # B's alice reads her own user:alice from the start: nothing of A's alice is there.
    b.c["alice"].call("unsubscribe", channel="user:alice")
    epoch = b.c["alice"].call("history", channel="user:alice")["epoch"]
    recovered = b.c["alice"].call("subscribe", channel="user:alice", since={"offset": 0, "epoch": epoch})
    assert not leaks(recovered, *A_SECRETS)
    time.sleep(0.3)
    assert not leaks(a.pushes(), MARK_B)


# --- every HTTP route ---------------------------------------------------------------------------

def routes() -> set[str]:
    out: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                out.add(prefix + str(p.pattern))

    walk(get_resolver().url_patterns, "")
    return {r for r in out if not r.startswith("admin/")}  # the Django admin: staff, every tenant


def test_every_http_route(world: tuple[Tenant, Tenant], live_hub: HubServer) -> None:
    a, b = world
    base, ops_b = live_hub.http, b.tokens["ops"]
    zone = a.ids["zone"]
    checks = {
        # /api/<method> is the rpc matrix above (every method with http=True, over HTTP).
        "api/<str:name>": None,
        "api/publish": None,  # test_concrete_cases_from_the_issue: B's admin on user:alice
        "api/zones": lambda: http_json("GET", f"{base}/api/zones", token=ops_b),
        "api/zones/<str:zone_id>": lambda: http_json("GET", f"{base}/api/zones/{zone}", token=ops_b),
        # Tenant-free: liveness, readiness, the schema, metrics (operators), the JSON 404.
        "healthz": lambda: http_json("GET", f"{base}/healthz"),
        "readyz": lambda: http_json("GET", f"{base}/readyz"),
        "api/openapi.json": lambda: http_json("GET", f"{base}/api/openapi.json"),
        "metrics": None,
        "^api(?:/|$)": lambda: http_json("GET", f"{base}/api/nope", token=ops_b),
        # The console: its page and built assets hold no data; its helpers answer for the caller's tenant.
        "console/": None,
        "console": None,
        "^static/console/(?P<name>[A-Za-z0-9._/-]{1,200})$": None,
        "console/api/coverage": lambda: http_json("GET", f"{base}/console/api/coverage?cells=1", token=ops_b),
        "console/api/providers": lambda: http_json("GET", f"{base}/console/api/providers", token=ops_b),
        "console/api/audit": lambda: http_json("GET", f"{base}/console/api/audit?limit=200", token=ops_b),
        # Development sign-in (loopback, HUB_ENV=development only): mints the tenant it is asked for.
        "api/dev/token": None,
        # The deployment's Web Push public key: the same for every tenant.
        "api/push/vapid-public-key": lambda: http_json("GET", f"{base}/api/push/vapid-public-key"),
    }
    assert routes() == set(checks), "a new HTTP route needs a row here"
    for route, check in checks.items():
        if check is None:
            continue
        _status, body = check()
        assert not leaks(body, *A_SECRETS), route
    # B's admin lists B's zones, providers and audit rows only; A's zone is not found (its id echoed
    # in the error only).
    for route in ("api/zones", "console/api/coverage", "console/api/providers", "console/api/audit"):
        status, body = checks[route]()  # type: ignore[misc]
        assert status == 200 and not leaks(body, zone, a.name, "apro"), (route, body)
    assert "bpro" in json.dumps(checks["console/api/providers"]()[1])  # type: ignore[misc]
    for method in ("GET", "DELETE"):
        status, body = http_json(method, f"{base}/api/zones/{zone}", token=ops_b)
        assert (status, body["error"]["code"]) == (404, "not_found"), method
    assert settings.HUB_SECRET  # the tokens above are this deployment's
