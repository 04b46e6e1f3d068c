"""Custom jobs: the plain domain functions against the real test database."""
from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from django.db import connection

from core.errors import HubError
from core.models import AuditLog
from hub.channels import check_subscribe
from hub.models import Publication
from hub.rpc import Caller
from rooms import rpc as methods
from rooms.actions import jobs
from rooms.models import Bid, Job
from tests.support import uid


def pubs(channel: str) -> list[dict[str, Any]]:
    rows = Publication.objects.filter(channel__endswith="/" + channel).order_by("offset")
    return [orjson.loads(r.data) for r in rows if r.data is not None]


def code_of(fn: Callable[..., Any], *args: Any) -> str:
    try:
        fn(*args)
    except HubError as exc:
        return exc.code
    return "ok"


@pytest.fixture
def tenant() -> str:
    return uid("t")


@pytest.fixture
def no_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail: the matcher is "unavailable".
    monkeypatch.setitem(sys.modules, "matching.service", None)


def fake_matcher(monkeypatch: pytest.MonkeyPatch, fn: Callable[..., Any]) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []

    def candidates_for_job(lat: float, lng: float, category: str, limit: int = 50, tenant: str = "") -> Any:
        seen.append((lat, lng, category, limit))
        users = fn()
        return users, None if users else "no_provider_available"

    module = types.ModuleType("matching.service")
    module.candidates_for_job = candidates_for_job  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matching.service", module)
    return seen


def post(owner: Caller, **extra: Any) -> str:
    params = {"title": "Fix the boiler", "description": "No hot water", "category": "plumbing",
              "lat": 51.5072, "lng": -0.1276, **extra}
    return str(methods.jobs_create(owner, params)["job"])


# --- create ------------------------------------------------------------------------------------

def test_create_broadcasts_job_new_to_matched_providers(monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    from matching.geo import haversine_m
    from matching.privacy import job_area

    owner = Caller(uid("cust"), "customer", tenant)
    p1, p2 = uid("p"), uid("p")
    seen = fake_matcher(monkeypatch, lambda: [p1, p2, owner.user])
    out = methods.jobs_create(owner, {"title": "Fix the boiler", "description": "", "category": "plumbing",
                                  "lat": 51.5, "lng": -0.12, "budget": 25000, "currency": "GBP"})
    assert out["status"] == "open" and out["notified"] == 2
    assert seen == [(51.5, -0.12, "plumbing", 50)]
    for p in (p1, p2):
        [note] = [d for d in pubs(f"user:{p}") if d["kind"] == "job.new"]
        # Not yet chosen: the job's area (a resolution-8 cell's rounded centre), not its point.
        assert note == {"kind": "job.new", "job": out["job"], "title": "Fix the boiler",
                        "category": "plumbing", **job_area(51.5, -0.12), "budget": 25000, "currency": "GBP"}
        assert haversine_m(note["lat"], note["lng"], 51.5, -0.12) <= note["area"]["radius_m"]
    assert pubs(f"user:{owner.user}") == []  # the owner is never notified of their own job
    job = Job.objects.get(pk=out["job"])
    assert (job.owner, job.tenant, job.budget, job.currency, job.status) == (
        owner.user, tenant, 25000, "GBP", "open")
    assert AuditLog.objects.filter(action="jobs.create", target=f"job:{job.id}", actor=owner.user).exists()


def test_create_without_a_matcher_or_with_a_failing_one_still_posts(
        monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    owner = Caller(uid("cust"), "customer", tenant)
    monkeypatch.setitem(sys.modules, "matching.service", None)
    out = methods.jobs_create(owner, {"title": "a", "description": "", "category": "x", "lat": 0, "lng": 0})
    assert out["notified"] == 0 and out["reason"] == "matcher_unavailable"

    def boom() -> list[str]:
        raise RuntimeError("matcher down")

    fake_matcher(monkeypatch, boom)
    out = methods.jobs_create(owner, {"title": "a", "description": "", "category": "x", "lat": 0, "lng": 0})
    assert out["notified"] == 0 and Job.objects.filter(pk=out["job"]).exists()
    assert out["reason"] == "matcher_unavailable"

    fake_matcher(monkeypatch, lambda: [owner.user])  # the only provider found is the poster
    out = methods.jobs_create(owner, {"title": "a", "description": "", "category": "x", "lat": 0, "lng": 0})
    assert out["notified"] == 0 and out["reason"] == "no_provider_available"


@pytest.mark.usefixtures("no_matcher")
def test_create_validates_roles_money_and_currency(tenant: str) -> None:
    customer = Caller(uid("c"), "customer", tenant)
    base = {"title": "t", "description": "d", "category": "c", "lat": 1.0, "lng": 2.0}
    for role in ("provider", "serviceman", "admin"):
        assert code_of(methods.jobs_create, Caller(uid(), role, tenant), base) == "forbidden"
    assert code_of(methods.jobs_create, Caller(uid(), "enterprise", tenant), base) == "ok"
    for budget in (100.0, 12.5, "100", 0, -1, 10**12 + 1, True):
        assert code_of(methods.jobs_create, customer, {**base, "budget": budget}) == "bad_request", budget
    for currency in ("XYZ", "gbp", "GB", "XAU"):
        params = {**base, "budget": 1, "currency": currency}
        assert code_of(methods.jobs_create, customer, params) == "bad_request"
    assert code_of(methods.jobs_create, customer, {**base, "title": "  "}) == "bad_request"
    assert code_of(methods.jobs_create, customer, {**base, "lat": 91}) == "bad_request"
    # a bare budget is in pence; the largest amount is accepted
    job = Job.objects.get(pk=methods.jobs_create(customer, {**base, "budget": 10**12})["job"])
    assert (job.budget, job.currency) == (10**12, "GBP")
    job = Job.objects.get(pk=methods.jobs_create(customer, {**base, "budget": 500, "currency": "JPY"})["job"])
    assert (job.budget, job.currency) == (500, "JPY")
    assert {"GBP", "EUR", "USD", "JPY", "CHF"} <= set(jobs.CURRENCIES) and jobs.CURRENCIES["JPY"] == 0


# --- bids ---------------------------------------------------------------------------------------

@pytest.mark.usefixtures("no_matcher")
def test_a_new_bid_replaces_the_old_one_and_says_so(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    prov = Caller(uid("p"), "provider", tenant)
    job = post(owner)
    first = methods.jobs_bid(prov, {"job": job, "amount": 12000, "currency": "GBP", "note": "two hours"})
    assert first["replaces"] is None
    second = methods.jobs_bid(prov, {"job": job, "amount": 11000, "currency": "GBP"})
    assert second["replaces"] == first["bid"]
    assert Bid.objects.get(pk=first["bid"]).status == "replaced"
    assert Bid.objects.filter(job_id=job, provider=prov.user, status="live").count() == 1
    # The job's stream says only that bids came (rivals read it); no sender names the bidder.
    assert pubs(f"job:{job}") == [{"kind": "bid", "job": job, "bid": first["bid"], "count": 1},
                                  {"kind": "bid", "job": job, "bid": second["bid"], "count": 1}]
    senders = Publication.objects.filter(channel__endswith=f"/job:{job}").values_list("sender", flat=True)
    assert set(senders) == {None}
    # The whole bid goes to the owner and to the bidder, on their own channels.
    placed = [
        {"kind": "bid.placed", "job": job, "bid": first["bid"], "provider": prov.user, "amount": 12000,
         "currency": "GBP", "note": "two hours", "replaces": None},
        {"kind": "bid.placed", "job": job, "bid": second["bid"], "provider": prov.user, "amount": 11000,
         "currency": "GBP", "note": "", "replaces": first["bid"]},
    ]
    assert pubs(f"user:{owner.user}") == placed and pubs(f"user:{prov.user}") == placed
    other = Caller(uid("p"), "provider", tenant)
    methods.jobs_bid(other, {"job": job, "amount": 13000, "currency": "GBP", "note": "mine"})
    assert pubs(f"job:{job}")[-1]["count"] == 2
    assert [d["amount"] for d in pubs(f"user:{other.user}")] == [13000]  # not the rival's amounts
    # bidding made the provider a member of job:<id>
    assert jobs.subscribe_hook(prov, job) and jobs.subscribe_hook(owner, job)
    assert not jobs.subscribe_hook(Caller(uid("p"), "provider", tenant), job)
    assert not jobs.subscribe_hook(Caller(prov.user, "provider", uid("other")), job)


@pytest.mark.usefixtures("no_matcher")
def test_bid_refusals(tenant: str) -> None:
    owner = Caller(uid("e"), "enterprise", tenant)
    prov = Caller(uid("p"), "serviceman", tenant)
    job = post(owner, budget=5000, currency="EUR")
    ok = {"job": job, "amount": 4000, "currency": "EUR"}
    assert code_of(methods.jobs_bid, owner, ok) == "forbidden"  # an enterprise cannot bid on its own job
    assert code_of(methods.jobs_bid, Caller(uid(), "customer", tenant), ok) == "forbidden"
    assert code_of(methods.jobs_bid, Caller(uid(), "admin", tenant), ok) == "forbidden"
    assert code_of(methods.jobs_bid, prov, {**ok, "currency": "GBP"}) == "bad_request"  # job priced in EUR
    assert code_of(methods.jobs_bid, prov, {**ok, "currency": "ZZZ"}) == "bad_request"
    assert code_of(methods.jobs_bid, prov, {**ok, "amount": 40.5}) == "bad_request"
    assert code_of(methods.jobs_bid, prov, {**ok, "amount": 4000.0}) == "bad_request"  # never a float
    assert code_of(methods.jobs_bid, prov, {**ok, "amount": 0}) == "bad_request"
    assert code_of(methods.jobs_bid, prov, {**ok, "job": "nope"}) == "not_found"
    assert code_of(methods.jobs_bid, Caller(prov.user, "serviceman", uid("t")), ok) == "not_found"  # other tenant
    assert code_of(methods.jobs_bid, prov, ok) == "ok"


@pytest.mark.usefixtures("no_matcher")
def test_accept_notifies_winner_and_rejected_bidders(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    a, b, c = (Caller(uid("p"), role, tenant) for role in ("provider", "serviceman", "enterprise"))
    job = post(owner)
    bid_a = methods.jobs_bid(a, {"job": job, "amount": 100, "currency": "GBP"})["bid"]
    methods.jobs_bid(b, {"job": job, "amount": 90, "currency": "GBP"})
    bid_b = methods.jobs_bid(b, {"job": job, "amount": 80, "currency": "GBP"})["bid"]
    bid_c = methods.jobs_bid(c, {"job": job, "amount": 95, "currency": "GBP"})["bid"]
    other_job = post(owner)
    assert code_of(methods.jobs_accept, owner, {"job": other_job, "bid": bid_b}) == "not_found"
    assert code_of(methods.jobs_accept, owner, {"job": job, "bid": "missing"}) == "not_found"
    replaced = Bid.objects.get(job_id=job, provider=b.user, status="replaced").id
    assert code_of(methods.jobs_accept, owner, {"job": job, "bid": replaced}) == "conflict"
    assert code_of(methods.jobs_accept, a, {"job": job, "bid": bid_a}) == "forbidden"

    out = methods.jobs_accept(owner, {"job": job, "bid": bid_b})
    assert out == {"job": job, "status": "accepted", "bid": bid_b, "provider": b.user}
    assert [d for d in pubs(f"user:{b.user}") if d["kind"] == "bid.accepted"] == [
        {"kind": "bid.accepted", "job": job, "bid": bid_b, "title": "Fix the boiler", "amount": 80,
         "currency": "GBP", "lat": 51.5072, "lng": -0.1276}]  # the winner, alone, gets the exact point
    for loser, lost in ((a, bid_a), (c, bid_c)):
        assert [d for d in pubs(f"user:{loser.user}") if d["kind"] == "bid.rejected"] == [
            {"kind": "bid.rejected", "job": job, "bid": lost, "title": "Fix the boiler"}]
    assert {b_.provider: b_.status for b_ in Bid.objects.filter(job_id=job).exclude(status="replaced")} == {
        a.user: "rejected", b.user: "accepted", c.user: "rejected"}
    status = [d for d in pubs(f"job:{job}") if d["kind"] == "status"]
    assert status == [{"kind": "status", "job": job, "status": "accepted", "from_status": "open",
                       "by": owner.user, "bid": bid_b, "provider": b.user}]
    assert code_of(methods.jobs_accept, owner, {"job": job, "bid": bid_a}) == "conflict"


def test_the_migration_strips_bids_stored_before_bid_privacy(tenant: str) -> None:
    """Old `bid` events (amount, note, provider, sender) become the public shape, offsets kept."""
    import importlib

    from hub.store import append, atomic

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


@pytest.mark.usefixtures("no_matcher")
def test_comments_queries_and_answers(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    asker = Caller(uid("p"), "provider", tenant)
    stranger = Caller(uid("p"), "provider", tenant)
    admin = Caller(uid("a"), "admin", tenant)
    job = post(owner)
    assert code_of(methods.jobs_comment, stranger, {"job": job, "text": "hi"}) == "forbidden"
    assert code_of(methods.jobs_ask, owner, {"job": job, "text": "?"}) == "forbidden"
    assert code_of(methods.jobs_ask, Caller(uid(), "customer", tenant), {"job": job, "text": "?"}) == "forbidden"
    q = methods.jobs_ask(asker, {"job": job, "text": "Which boiler model?"})["query"]
    assert not jobs.subscribe_hook(asker, job)  # asking does not open the job's stream to them
    assert code_of(methods.jobs_answer, asker, {"job": job, "query": q, "text": "x"}) == "forbidden"
    assert code_of(methods.jobs_answer, owner, {"job": job, "query": "nope", "text": "x"}) == "not_found"
    a = methods.jobs_answer(owner, {"job": job, "query": q, "text": "Worcester 30i"})["answer"]
    c1 = methods.jobs_comment(asker, {"job": job, "text": "Thanks"})
    c2 = methods.jobs_comment(admin, {"job": job, "text": "Moderator here"})
    c3 = methods.jobs_comment(owner, {"job": job, "text": "Welcome"})
    assert c1["offset"] < c2["offset"] < c3["offset"]
    got = [(d["kind"], d.get("text")) for d in pubs(f"job:{job}")]
    assert got == [("query", "Which boiler model?"), ("answer", "Worcester 30i"), ("comment", "Thanks"),
                   ("comment", "Moderator here"), ("comment", "Welcome")]
    stream = pubs(f"job:{job}")
    assert stream[0] == {"kind": "query", "job": job, "query": q, "by": asker.user,
                         "text": "Which boiler model?"}
    assert stream[1] == {"kind": "answer", "job": job, "query": q, "answer": a, "by": owner.user,
                         "text": "Worcester 30i"}
    assert stream[2] == {"kind": "comment", "job": job, "comment": c1["comment"], "by": asker.user,
                         "role": "provider", "text": "Thanks"}
    # the author is the publication's sender (erasure of a user's content finds it)
    senders = list(Publication.objects.filter(channel__endswith="/" + f"job:{job}").order_by("offset")
                   .values_list("sender", flat=True))
    assert senders == [asker.user, owner.user, asker.user, admin.user, owner.user]
    # ... so the answer reaches the asker on their own channel.
    assert pubs(f"user:{asker.user}") == [{"kind": "query.answered", "job": job, "query": q, "answer": a,
                                           "by": owner.user, "text": "Worcester 30i"}]


@pytest.mark.usefixtures("no_matcher")
def test_admins_read_job_channels_through_the_namespace(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    job = post(owner)
    ns, via_admin = asyncio.run(check_subscribe(Caller(uid("a"), "admin", tenant), f"job:{job}"))
    assert ns.name == "job" and via_admin

    async def stranger() -> str:
        try:
            await check_subscribe(Caller(uid("p"), "provider", tenant), f"job:{job}")
        except HubError as exc:
            return exc.code
        return "allowed"

    assert asyncio.run(stranger()) == "forbidden"


# --- the state machine, exhaustively ---------------------------------------------------------

STATES = ("open", "accepted", "in_progress", "completed", "cancelled")
# owner: the customer who posted; winner: the provider whose bid is (or will be) accepted;
# loser: another bidder; outsider: a provider in the tenant who never bid; customer: another
# customer; admin: a tenant admin.
ACTORS = ("owner", "winner", "loser", "outsider", "customer", "admin")
OK, FORBIDDEN, CONFLICT = "ok", "forbidden", "conflict"

# (action, actor) -> result in each of STATES. This is the table in docs/jobs-and-calls.md.
TABLE: dict[tuple[str, str], tuple[str, str, str, str, str]] = {
    ("accept", "owner"): (OK, CONFLICT, CONFLICT, CONFLICT, CONFLICT),
    ("accept", "winner"): (FORBIDDEN,) * 5,
    ("accept", "loser"): (FORBIDDEN,) * 5,
    ("accept", "outsider"): (FORBIDDEN,) * 5,
    ("accept", "customer"): (FORBIDDEN,) * 5,
    ("accept", "admin"): (FORBIDDEN,) * 5,
    ("start", "owner"): (FORBIDDEN,) * 5,
    ("start", "winner"): (FORBIDDEN, OK, CONFLICT, CONFLICT, CONFLICT),
    ("start", "loser"): (FORBIDDEN,) * 5,
    ("start", "outsider"): (FORBIDDEN,) * 5,
    ("start", "customer"): (FORBIDDEN,) * 5,
    ("start", "admin"): (FORBIDDEN,) * 5,
    ("complete", "owner"): (CONFLICT, CONFLICT, OK, CONFLICT, CONFLICT),
    ("complete", "winner"): (FORBIDDEN, CONFLICT, OK, CONFLICT, CONFLICT),
    ("complete", "loser"): (FORBIDDEN,) * 5,
    ("complete", "outsider"): (FORBIDDEN,) * 5,
    ("complete", "customer"): (FORBIDDEN,) * 5,
    ("complete", "admin"): (FORBIDDEN,) * 5,
    ("cancel", "owner"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("cancel", "winner"): (FORBIDDEN, OK, OK, CONFLICT, CONFLICT),
    ("cancel", "loser"): (FORBIDDEN,) * 5,
    ("cancel", "outsider"): (FORBIDDEN,) * 5,
    ("cancel", "customer"): (FORBIDDEN,) * 5,
    ("cancel", "admin"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("bid", "owner"): (FORBIDDEN,) * 5,
    ("bid", "winner"): (OK, CONFLICT, CONFLICT, CONFLICT, CONFLICT),
    ("bid", "loser"): (OK, CONFLICT, CONFLICT, CONFLICT, CONFLICT),
    ("bid", "outsider"): (OK, CONFLICT, CONFLICT, CONFLICT, CONFLICT),
    ("bid", "customer"): (FORBIDDEN,) * 5,
    ("bid", "admin"): (FORBIDDEN,) * 5,
    ("ask", "owner"): (FORBIDDEN,) * 5,
    ("ask", "winner"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("ask", "loser"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("ask", "outsider"): (OK, FORBIDDEN, FORBIDDEN, CONFLICT, CONFLICT),
    ("ask", "customer"): (FORBIDDEN,) * 5,
    ("ask", "admin"): (FORBIDDEN,) * 5,
    ("comment", "owner"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("comment", "winner"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("comment", "loser"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("comment", "outsider"): (FORBIDDEN,) * 5,
    ("comment", "customer"): (FORBIDDEN,) * 5,
    ("comment", "admin"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("answer", "owner"): (OK, OK, OK, CONFLICT, CONFLICT),
    ("answer", "winner"): (FORBIDDEN,) * 5,
    ("answer", "loser"): (FORBIDDEN,) * 5,
    ("answer", "outsider"): (FORBIDDEN,) * 5,
    ("answer", "customer"): (FORBIDDEN,) * 5,
    ("answer", "admin"): (FORBIDDEN,) * 5,
}


def job_in(state: str, tenant: str) -> tuple[str, dict[str, Caller], str, str]:
    """A job in `state` with a winner and a loser bid; cancelled is reached after acceptance."""
    people = {"owner": Caller(uid("own"), "customer", tenant),
              "winner": Caller(uid("win"), "provider", tenant),
              "loser": Caller(uid("los"), "serviceman", tenant),
              "outsider": Caller(uid("out"), "enterprise", tenant),
              "customer": Caller(uid("cus"), "customer", tenant),
              "admin": Caller(uid("adm"), "admin", tenant)}
    owner, winner = people["owner"], people["winner"]
    job = post(owner, budget=10000)
    win = methods.jobs_bid(winner, {"job": job, "amount": 9000, "currency": "GBP"})["bid"]
    methods.jobs_bid(people["loser"], {"job": job, "amount": 9500, "currency": "GBP"})
    query = methods.jobs_ask(people["loser"], {"job": job, "text": "When?"})["query"]
    if state != "open":
        methods.jobs_accept(owner, {"job": job, "bid": win})
    if state in ("in_progress", "completed"):
        methods.jobs_start(winner, {"job": job})
    if state == "completed":
        methods.jobs_complete(owner, {"job": job})
    if state == "cancelled":
        methods.jobs_cancel(owner, {"job": job, "reason": "changed my mind"})
    assert Job.objects.get(pk=job).status == state
    return job, people, win, query


def attempt(action: str, who: Caller, job: str, win: str, query: str) -> str:
    calls: dict[str, tuple[Callable[[Caller, dict[str, Any]], Any], dict[str, Any]]] = {
        "accept": (methods.jobs_accept, {"job": job, "bid": win}),
        "start": (methods.jobs_start, {"job": job}),
        "complete": (methods.jobs_complete, {"job": job}),
        "cancel": (methods.jobs_cancel, {"job": job, "reason": "because"}),
        "bid": (methods.jobs_bid, {"job": job, "amount": 8000, "currency": "GBP"}),
        "ask": (methods.jobs_ask, {"job": job, "text": "Parking?"}),
        "comment": (methods.jobs_comment, {"job": job, "text": "Hello"}),
        "answer": (methods.jobs_answer, {"job": job, "query": query, "text": "Tomorrow"}),
    }
    fn, params = calls[action]
    return code_of(fn, who, params)


@pytest.mark.usefixtures("no_matcher")
@pytest.mark.parametrize("state", STATES)
def test_every_state_action_and_actor(state: str, tenant: str) -> None:
    failures = []
    for (action, actor), expected in TABLE.items():
        job, people, win, query = job_in(state, tenant)
        before = Job.objects.get(pk=job).status
        got = attempt(action, people[actor], job, win, query)
        want = expected[STATES.index(state)]
        if got != want:
            failures.append(f"{action} by {actor} in {state}: got {got}, want {want}")
        after = Job.objects.get(pk=job).status
        if got != "ok" or action not in jobs.TRANSITIONS:
            assert after == before, f"{action} by {actor} changed {before} to {after}"
        else:
            assert after == jobs.TRANSITIONS[action][2]
            last = pubs(f"job:{job}")[-1]
            assert last["kind"] == "status" and last["status"] == after and last["from_status"] == before
            assert last["by"] == people[actor].user
            if action == "cancel":
                assert last["reason"] == "because"
            assert AuditLog.objects.filter(action=f"jobs.{action}", target=f"job:{job}",
                                           actor=people[actor].user).exists()
    assert not failures, "\n".join(failures)
    assert set(TABLE) == {(a, r) for a in ("accept", "start", "complete", "cancel", "bid", "ask", "comment",
                                           "answer") for r in ACTORS}


@pytest.mark.usefixtures("no_matcher")
def test_unknown_job_is_not_found(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    for fn, params in ((methods.jobs_start, {"job": "missing"}),
                       (methods.jobs_cancel, {"job": "missing", "reason": "x"}),
                       (methods.jobs_comment, {"job": "missing", "text": "x"}),
                       (methods.jobs_get, {"job": "missing"})):
        assert code_of(fn, owner, params) == "not_found"
    job = post(owner)
    assert code_of(methods.jobs_cancel, owner, {"job": job, "reason": " "}) == "bad_request"


@pytest.mark.usefixtures("no_matcher")
def test_get_job_shows_members_their_view(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    p1, p2 = Caller(uid("p"), "provider", tenant), Caller(uid("p"), "provider", tenant)
    job = post(owner, budget=1000)
    methods.jobs_bid(p1, {"job": job, "amount": 900, "currency": "GBP"})
    methods.jobs_bid(p2, {"job": job, "amount": 800, "currency": "GBP"})
    assert len(methods.jobs_get(owner, {"job": job})["bids"]) == 2
    assert [b["provider"] for b in methods.jobs_get(p1, {"job": job})["bids"]] == [p1.user]
    assert code_of(methods.jobs_get, Caller(uid("x"), "provider", tenant), {"job": job}) == "forbidden"
    # An admin of the job's tenant sees every bid; one of another tenant does not find the job.
    admin_view = methods.jobs_get(Caller(uid("a"), "admin", tenant), {"job": job})["bids"]
    assert sorted(b["amount"] for b in admin_view) == [800, 900]
    assert code_of(methods.jobs_get, Caller(uid("a"), "admin", uid("t")), {"job": job}) == "not_found"
    # A provider who only asked reads the job but no bid.
    asker = Caller(uid("p"), "provider", tenant)
    methods.jobs_ask(asker, {"job": job, "text": "Parking?"})
    assert methods.jobs_get(asker, {"job": job})["bids"] == []


@pytest.mark.services
def test_many_bids_at_once_all_land_and_an_accept_shuts_the_rest_out(
        monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    """Bids only share-lock the job (they no longer queue behind each other); an accept still waits
    for them, and a bid arriving after it is refused, never stored on an accepted job."""
    owner = Caller(uid("cust"), "customer", tenant)
    fake_matcher(monkeypatch, lambda: [])
    job = post(owner, budget=10000, currency="GBP")
    bidders = [Caller(uid("p"), "provider", tenant) for _ in range(8)]
    barrier = threading.Barrier(len(bidders))
    codes: list[str] = []

    def place(p: Caller) -> None:
        try:
            barrier.wait()
            codes.append(code_of(methods.jobs_bid, p, {"job": job, "amount": 5000, "currency": "GBP"}))
        finally:
            connection.close()

    threads = [threading.Thread(target=place, args=(p,)) for p in bidders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == ["ok"] * len(bidders)
    offsets = list(Publication.objects.filter(channel__endswith="/" + f"job:{job}").order_by("offset")
                   .values_list("offset", flat=True))
    assert offsets == list(range(1, len(bidders) + 1))  # one publication per bid, gap-free
    first = Bid.objects.filter(job_id=job).order_by("created_at").first()
    assert first is not None
    methods.jobs_accept(owner, {"job": job, "bid": first.id})
    late = Caller(uid("p"), "provider", tenant)
    assert code_of(methods.jobs_bid, late, {"job": job, "amount": 5000, "currency": "GBP"}) == "conflict"
    assert not Bid.objects.filter(job_id=job, provider=late.user).exists()


def test_bids_on_a_job_seen_closed_are_refused_without_the_database(
        monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    owner = Caller(uid("cust"), "customer", tenant)
    fake_matcher(monkeypatch, lambda: [])
    job = post(owner, budget=10000, currency="GBP")
    first = Caller(uid("p"), "provider", tenant)
    winner = methods.jobs_bid(first, {"job": job, "amount": 5000, "currency": "GBP"})["bid"]
    methods.jobs_accept(owner, {"job": job, "bid": winner})
    late = Caller(uid("p"), "provider", tenant)

    def no_database(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the job was read from the database")

    monkeypatch.setattr(jobs, "_load", no_database)
    with pytest.raises(HubError) as info:
        methods.jobs_bid(late, {"job": job, "amount": 5000, "currency": "GBP"})
    assert info.value.code == "conflict" and "accepted" in info.value.message
    # Another tenant's bid on the same id is not told the job exists: it goes to the database.
    with pytest.raises(AssertionError):
        methods.jobs_bid(Caller(late.user, "provider", uid("t")), {"job": job, "amount": 5000, "currency": "GBP"})


def test_a_bid_on_a_job_known_closed_is_refused_before_the_queue(
        monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    """Over rpc the refusal comes from the queue key, on the event loop: no worker is taken."""
    from hub import rpc

    owner = Caller(uid("cust"), "customer", tenant)
    fake_matcher(monkeypatch, lambda: [])
    job = post(owner, budget=10000, currency="GBP")
    first = Caller(uid("p"), "provider", tenant)
    placed = methods.jobs_bid(first, {"job": job, "amount": 500, "currency": "GBP"})["bid"]
    methods.jobs_accept(owner, {"job": job, "bid": placed})

    async def no_worker(*args: Any) -> Any:
        raise AssertionError("a worker was used")

    monkeypatch.setattr(rpc, "run_domain", no_worker)
    late = Caller(uid("p"), "provider", tenant)
    with pytest.raises(HubError) as info:
        asyncio.run(rpc.call(late, "jobs.bid", {"job": job, "amount": 500, "currency": "GBP"}))
    assert info.value.code == "conflict"
