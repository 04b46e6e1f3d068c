"""Custom jobs (rooms.actions.jobs): the plain domain functions against the real test database."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from django.db import connection
from django.test import override_settings

from core.errors import HubError
from core.logs import request_id
from core.models import AuditLog
from hub.models import Publication
from hub.rpc import Caller
from matching import matcher
from rooms.actions import jobs
from rooms.models import Bid, Job
from tests.support import code_of, uid


def pubs(channel: str) -> list[dict[str, Any]]:
    rows = Publication.objects.filter(channel__endswith="/" + channel).order_by("offset")
    return [orjson.loads(r.data) for r in rows if r.data is not None]


@pytest.fixture
def tenant() -> str:
    return uid("t")


def fake_matcher(monkeypatch: pytest.MonkeyPatch, fn: Callable[..., Any]) -> list[tuple[Any, ...]]:
    seen: list[tuple[Any, ...]] = []

    def candidates_for_job(lat: float, lng: float, category: str, limit: int = 50, tenant: str = "") -> Any:
        seen.append((lat, lng, category, limit))
        users = fn()
        return users, None if users else "no_provider_available"

    monkeypatch.setattr(matcher, "candidates_for_job", candidates_for_job)
    return seen


def failing_matcher() -> list[str]:
    raise RuntimeError("matcher down")


@pytest.fixture
def no_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_matcher(monkeypatch, failing_matcher)  # the matcher fails: jobs are posted, told to nobody


def post(owner: Caller, **extra: Any) -> str:
    params = {"title": "Fix the boiler", "description": "No hot water", "category": "plumbing",
              "lat": 51.5072, "lng": -0.1276, **extra}
    return str(jobs.create_job(owner, **params)["job"])


# --- create ------------------------------------------------------------------------------------

def test_create_broadcasts_job_new_to_matched_providers(monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    from matching.geo import haversine_m
    from matching.privacy import job_area

    owner = Caller(uid("cust"), "customer", tenant)
    p1, p2 = uid("p"), uid("p")
    seen = fake_matcher(monkeypatch, lambda: [p1, p2, owner.user])
    out = jobs.create_job(owner, title="Fix the boiler", description="", category="plumbing", lat=51.5,
                          lng=-0.12, budget=25000, currency="GBP")
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


def test_create_with_a_failing_matcher_still_posts(monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    owner = Caller(uid("cust"), "customer", tenant)
    fake_matcher(monkeypatch, failing_matcher)
    out = jobs.create_job(owner, title="a", description="", category="x", lat=0, lng=0)
    assert out["notified"] == 0 and Job.objects.filter(pk=out["job"]).exists()
    assert out["reason"] == "matcher_unavailable"

    fake_matcher(monkeypatch, lambda: [owner.user])  # the only provider found is the poster
    out = jobs.create_job(owner, title="a", description="", category="x", lat=0, lng=0)
    assert out["notified"] == 0 and out["reason"] == "no_provider_available"


@pytest.mark.usefixtures("no_matcher")
@override_settings(HUB_MAX_OPEN_JOBS_PER_USER=2)
def test_jobs_posted_together_are_the_same_as_one_after_the_other(monkeypatch: pytest.MonkeyPatch,
                                                                  tenant: str) -> None:
    """One batch (create_jobs, one transaction): each job its own result or refusal, in order; a
    customer's earlier jobs in the batch count against their open-jobs budget; each audit row
    carries its own request's id."""
    near = [uid("p") for _ in range(2)]
    fake_matcher(monkeypatch, lambda: near)
    busy = Caller(uid("c"), "customer", tenant, request_id="r-busy")
    calm = Caller(uid("c"), "customer", tenant, request_id="r-calm")
    post(busy)  # one open already
    base = {"description": "", "category": "plumbing", "lat": 51.5, "lng": -0.12}
    out = jobs.create_jobs([
        jobs.JobRequest(calm, title="first", **base),
        jobs.JobRequest(busy, title="second of theirs", **base),  # admitted: 2 of 2
        jobs.JobRequest(calm, title="", **base),  # refused, nothing posted
        jobs.JobRequest(busy, title="third of theirs", **base),  # over the budget
        jobs.JobRequest(Caller(near[0], "customer", tenant), title="mine", **base),  # not told of their own
        jobs.JobRequest(calm, title="priced", budget=9000, **base)])
    codes = [r.code if isinstance(r, HubError) else r["status"] for r in out]
    assert codes == ["open", "open", "bad_request", "conflict", "open", "open"]
    made = [r for r in out if isinstance(r, dict)]
    assert [r["notified"] for r in made] == [2, 2, 1, 2]
    assert Job.objects.filter(owner=busy.user).count() == 2
    assert list(Job.objects.filter(owner=calm.user).order_by("created_at", "title").values_list(
        "title", "budget", "currency")) == [("first", None, ""), ("priced", 9000, "GBP")]
    assert [d["job"] for d in pubs(f"user:{near[1]}") if d["kind"] == "job.new"][-4:] == [r["job"] for r in made]
    assert [d["job"] for d in pubs(f"user:{near[0]}") if d["kind"] == "job.new"][-3:] == [
        made[0]["job"], made[1]["job"], made[3]["job"]]
    audit = AuditLog.objects.filter(action="jobs.create", target__in=[f"job:{r['job']}" for r in made])
    assert sorted(audit.values_list("actor", "request_id")) == sorted(  # none of its own: the context's
        [(calm.user, "r-calm"), (busy.user, "r-busy"), (near[0], request_id.get()), (calm.user, "r-calm")])


def test_jobs_of_two_tenants_are_never_posted_together(tenant: str) -> None:
    base = {"description": "", "category": "plumbing", "lat": 51.5, "lng": -0.12}
    with pytest.raises(ValueError, match="one tenant"):
        jobs.create_jobs([jobs.JobRequest(Caller(uid("c"), "customer", tenant), title="a", **base),
                          jobs.JobRequest(Caller(uid("c"), "customer", uid("t")), title="b", **base)])


def test_create_validates_roles_money_and_currency(tenant: str) -> None:
    customer = Caller(uid("c"), "customer", tenant)
    base = {"title": "t", "description": "d", "category": "c", "lat": 1.0, "lng": 2.0}
    for role in ("provider", "serviceman", "admin"):
        assert code_of(jobs.create_job, Caller(uid(), role, tenant), **base) == "forbidden"
    assert code_of(jobs.create_job, Caller(uid(), "enterprise", tenant), **base) == "ok"
    for budget in (100.0, 12.5, "100", 0, -1, 10**12 + 1, True):
        assert code_of(jobs.create_job, customer, **base, budget=budget) == "bad_request", budget
    for currency in ("XYZ", "gbp", "GB", "XAU"):
        params = {**base, "budget": 1, "currency": currency}
        assert code_of(jobs.create_job, customer, **params) == "bad_request"
    assert code_of(jobs.create_job, customer, **{**base, "title": "  "}) == "bad_request"
    assert code_of(jobs.create_job, customer, **{**base, "lat": 91}) == "bad_request"
    # a bare budget is in pence; the largest amount is accepted
    job = Job.objects.get(pk=jobs.create_job(customer, **base, budget=10**12)["job"])
    assert (job.budget, job.currency) == (10**12, "GBP")
    job = Job.objects.get(pk=jobs.create_job(customer, **base, budget=500, currency="JPY")["job"])
    assert (job.budget, job.currency) == (500, "JPY")
    assert {"GBP", "EUR", "USD", "JPY", "CHF"} <= set(jobs.CURRENCIES) and jobs.CURRENCIES["JPY"] == 0


# --- bids ---------------------------------------------------------------------------------------

@pytest.mark.usefixtures("no_matcher")
def test_a_new_bid_replaces_the_old_one_and_says_so(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    prov = Caller(uid("p"), "provider", tenant)
    job = post(owner)
    first = jobs.bid(prov, job_id=job, amount=12000, currency="GBP", note="two hours")
    assert first["replaces"] is None
    second = jobs.bid(prov, job_id=job, amount=11000, currency="GBP")
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
    jobs.bid(other, job_id=job, amount=13000, currency="GBP", note="mine")
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
    ok = {"job_id": job, "amount": 4000, "currency": "EUR"}
    assert code_of(jobs.bid, owner, **ok) == "forbidden"  # an enterprise cannot bid on its own job
    assert code_of(jobs.bid, Caller(uid(), "customer", tenant), **ok) == "forbidden"
    assert code_of(jobs.bid, Caller(uid(), "admin", tenant), **ok) == "forbidden"
    assert code_of(jobs.bid, prov, **{**ok, "currency": "GBP"}) == "bad_request"  # job priced in EUR
    assert code_of(jobs.bid, prov, **{**ok, "currency": "ZZZ"}) == "bad_request"
    assert code_of(jobs.bid, prov, **{**ok, "amount": 40.5}) == "bad_request"
    assert code_of(jobs.bid, prov, **{**ok, "amount": 4000.0}) == "bad_request"  # never a float
    assert code_of(jobs.bid, prov, **{**ok, "amount": 0}) == "bad_request"
    assert code_of(jobs.bid, prov, **{**ok, "job_id": "nope"}) == "not_found"
    assert code_of(jobs.bid, Caller(prov.user, "serviceman", uid("t")), **ok) == "not_found"  # other tenant
    assert code_of(jobs.bid, prov, **ok) == "ok"


@pytest.mark.usefixtures("no_matcher")
def test_bids_placed_together_are_the_same_as_one_after_the_other(tenant: str) -> None:
    """place_bids (a burst on one job, one transaction): each bid its own result or refusal, in
    order; replacements, counts and publications as `bid` would have made them one by one."""
    owner = Caller(uid("c"), "customer", tenant)
    job = post(owner, budget=5000, currency="GBP")
    a, b, c = (Caller(uid("p"), "provider", tenant) for _ in range(3))
    earlier = jobs.bid(a, job_id=job, amount=9000, currency="GBP")["bid"]
    reqs = [jobs.BidRequest(b, job, 8000, "GBP", "b1"),
            jobs.BidRequest(a, job, 7000, "GBP"),  # replaces a's earlier bid
            jobs.BidRequest(owner, job, 100, "GBP"),  # the owner: refused, the others go on
            jobs.BidRequest(c, job, 6000, "EUR"),  # the job is in pounds
            jobs.BidRequest(b, job, 7500, "GBP", "b2"),  # b again in the same burst: replaces b1
            jobs.BidRequest(c, job, 6500.0, "GBP"),  # never a float
            jobs.BidRequest(c, job, 6000, "GBP")]
    out = jobs.place_bids(reqs)
    codes = [r.code if isinstance(r, HubError) else "ok" for r in out]
    assert codes == ["ok", "ok", "forbidden", "bad_request", "ok", "bad_request", "ok"]
    b1, a2, _, _, b2, _, c1 = (r if isinstance(r, dict) else {} for r in out)
    assert (b1["replaces"], a2["replaces"], b2["replaces"], c1["replaces"]) == (None, earlier, b1["bid"], None)
    live = dict(Bid.objects.filter(job_id=job, status="live").values_list("provider", "amount"))
    assert live == {a.user: 7000, b.user: 7500, c.user: 6000}
    assert Bid.objects.get(pk=b1["bid"]).status == "replaced" and Bid.objects.get(pk=earlier).status == "replaced"
    # The job's stream: one `bid` per placed bid, in order, each with the live count after it.
    stream = pubs(f"job:{job}")
    assert [(d["bid"], d["count"]) for d in stream] == [
        (earlier, 1), (b1["bid"], 2), (a2["bid"], 2), (c1["bid"], 3), (b2["bid"], 3)]
    assert [d["bid"] for d in pubs(f"user:{owner.user}")] == [earlier, b1["bid"], a2["bid"], c1["bid"], b2["bid"]]
    assert [d["note"] for d in pubs(f"user:{b.user}")] == ["b1", "b2"]
    assert [d["bid"] for d in pubs(f"user:{c.user}")] == [c1["bid"]]


@pytest.mark.usefixtures("no_matcher")
def test_bids_on_many_jobs_placed_together_are_the_same_as_one_after_the_other(tenant: str) -> None:
    """One batch over several jobs (bids spread over a tenant's jobs): each job's bids, refusals,
    replacements, counts and streams as if placed one by one; the jobs do not mix."""
    owner, other = Caller(uid("c"), "customer", tenant), Caller(uid("c"), "customer", tenant)
    a, b, c = (Caller(uid("p"), "provider", tenant) for _ in range(3))
    j1, j2 = post(owner, budget=5000, currency="GBP"), post(other)
    j3 = post(owner)
    jobs.cancel(owner, job_id=j3, reason="changed my mind")
    mine = post(Caller(a.user, "customer", tenant))  # a provider's own job (posted as a customer)
    earlier = jobs.bid(b, job_id=j2, amount=4000, currency="GBP")["bid"]
    reqs = [jobs.BidRequest(a, j1, 8000, "GBP", "a1"),
            jobs.BidRequest(a, j2, 7000, "EUR"),  # the same provider on another job (j2 has no price)
            jobs.BidRequest(b, j1, 6000, "GBP"),
            jobs.BidRequest(c, j3, 5000, "GBP"),  # cancelled: refused
            jobs.BidRequest(b, j2, 3900, "GBP"),  # replaces b's earlier bid on j2
            jobs.BidRequest(a, j1, 7500, "GBP", "a2"),  # a again on j1: replaces a1
            jobs.BidRequest(c, "nope", 5000, "GBP"),  # missing
            jobs.BidRequest(a, mine, 5000, "GBP"),  # own job
            jobs.BidRequest(c, j1, 6000, "EUR")]  # j1 is in pounds
    out = jobs.place_bids(reqs)
    codes = [r.code if isinstance(r, HubError) else "ok" for r in out]
    assert codes == ["ok", "ok", "ok", "conflict", "ok", "ok", "not_found", "forbidden", "bad_request"]
    a1, a_j2, b_j1, _, b_j2, a2 = (r if isinstance(r, dict) else {} for r in out[:6])
    assert (a1["replaces"], a_j2["replaces"], b_j1["replaces"], b_j2["replaces"], a2["replaces"]) == (
        None, None, None, earlier, a1["bid"])
    live = {(j, p): amount for j, p, amount in Bid.objects.filter(
        job_id__in=[j1, j2, j3, mine], status="live").values_list("job_id", "provider", "amount")}
    assert live == {(j1, a.user): 7500, (j1, b.user): 6000, (j2, a.user): 7000, (j2, b.user): 3900}
    assert [(d["bid"], d["count"]) for d in pubs(f"job:{j1}")] == [(a1["bid"], 1), (b_j1["bid"], 2), (a2["bid"], 2)]
    assert [(d["bid"], d["count"]) for d in pubs(f"job:{j2}")] == [(earlier, 1), (a_j2["bid"], 2), (b_j2["bid"], 2)]
    assert [d["bid"] for d in pubs(f"user:{owner.user}")] == [a1["bid"], b_j1["bid"], a2["bid"]]
    assert [d["bid"] for d in pubs(f"user:{other.user}")] == [earlier, a_j2["bid"], b_j2["bid"]]
    assert [d["note"] for d in pubs(f"user:{a.user}")] == ["a1", "", "a2"]
    assert not [d for j in (j3, mine) for d in pubs(f"job:{j}") if d["kind"] == "bid"]


def test_bids_of_two_tenants_are_never_placed_together(tenant: str) -> None:
    a, b = Caller(uid("p"), "provider", tenant), Caller(uid("p"), "provider", uid("t"))
    with pytest.raises(ValueError, match="one tenant"):
        jobs.place_bids([jobs.BidRequest(a, "j1", 100, "GBP"), jobs.BidRequest(b, "j1", 100, "GBP")])


@pytest.mark.usefixtures("no_matcher")
def test_bids_placed_together_on_a_closed_or_missing_job_are_all_refused(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    job = post(owner)
    jobs.cancel(owner, job_id=job, reason="changed my mind")
    ps = [Caller(uid("p"), "provider", tenant) for _ in range(3)]
    out = jobs.place_bids([jobs.BidRequest(p, job, 1000, "GBP") for p in ps])
    assert [r.code for r in out if isinstance(r, HubError)] == ["conflict"] * 3
    out = jobs.place_bids([jobs.BidRequest(p, "nope", 1000, "GBP") for p in ps])
    assert [r.code for r in out if isinstance(r, HubError)] == ["not_found"] * 3
    assert not Bid.objects.filter(provider__in=[p.user for p in ps]).exists()


@pytest.mark.usefixtures("no_matcher")
def test_accept_notifies_winner_and_rejected_bidders(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    a, b, c = (Caller(uid("p"), role, tenant) for role in ("provider", "serviceman", "enterprise"))
    job = post(owner)
    bid_a = jobs.bid(a, job_id=job, amount=100, currency="GBP")["bid"]
    jobs.bid(b, job_id=job, amount=90, currency="GBP")
    bid_b = jobs.bid(b, job_id=job, amount=80, currency="GBP")["bid"]
    bid_c = jobs.bid(c, job_id=job, amount=95, currency="GBP")["bid"]
    other_job = post(owner)
    assert code_of(jobs.accept, owner, job_id=other_job, bid_id=bid_b) == "not_found"
    assert code_of(jobs.accept, owner, job_id=job, bid_id="missing") == "not_found"
    replaced = Bid.objects.get(job_id=job, provider=b.user, status="replaced").id
    assert code_of(jobs.accept, owner, job_id=job, bid_id=replaced) == "conflict"
    assert code_of(jobs.accept, a, job_id=job, bid_id=bid_a) == "forbidden"

    out = jobs.accept(owner, job_id=job, bid_id=bid_b)
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
    assert code_of(jobs.accept, owner, job_id=job, bid_id=bid_a) == "conflict"


@pytest.mark.usefixtures("no_matcher")
def test_comments_queries_and_answers(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    asker = Caller(uid("p"), "provider", tenant)
    stranger = Caller(uid("p"), "provider", tenant)
    admin = Caller(uid("a"), "admin", tenant)
    job = post(owner)
    assert code_of(jobs.comment, stranger, job_id=job, text="hi") == "forbidden"
    assert code_of(jobs.ask, owner, job_id=job, text="?") == "forbidden"
    assert code_of(jobs.ask, Caller(uid(), "customer", tenant), job_id=job, text="?") == "forbidden"
    q = jobs.ask(asker, job_id=job, text="Which boiler model?")["query"]
    assert not jobs.subscribe_hook(asker, job)  # asking does not open the job's stream to them
    assert code_of(jobs.answer, asker, job_id=job, query_id=q, text="x") == "forbidden"
    assert code_of(jobs.answer, owner, job_id=job, query_id="nope", text="x") == "not_found"
    a = jobs.answer(owner, job_id=job, query_id=q, text="Worcester 30i")["answer"]
    c1 = jobs.comment(asker, job_id=job, text="Thanks")
    c2 = jobs.comment(admin, job_id=job, text="Moderator here")
    c3 = jobs.comment(owner, job_id=job, text="Welcome")
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
    win = jobs.bid(winner, job_id=job, amount=9000, currency="GBP")["bid"]
    jobs.bid(people["loser"], job_id=job, amount=9500, currency="GBP")
    query = jobs.ask(people["loser"], job_id=job, text="When?")["query"]
    if state != "open":
        jobs.accept(owner, job_id=job, bid_id=win)
    if state in ("in_progress", "completed"):
        jobs.start(winner, job_id=job)
    if state == "completed":
        jobs.complete(owner, job_id=job)
    if state == "cancelled":
        jobs.cancel(owner, job_id=job, reason="changed my mind")
    assert Job.objects.get(pk=job).status == state
    return job, people, win, query


def attempt(action: str, who: Caller, job: str, win: str, query: str) -> str:
    calls: dict[str, tuple[Callable[[Caller, dict[str, Any]], Any], dict[str, Any]]] = {
        "accept": (jobs.accept, {"job_id": job, "bid_id": win}),
        "start": (jobs.start, {"job_id": job}),
        "complete": (jobs.complete, {"job_id": job}),
        "cancel": (jobs.cancel, {"job_id": job, "reason": "because"}),
        "bid": (jobs.bid, {"job_id": job, "amount": 8000, "currency": "GBP"}),
        "ask": (jobs.ask, {"job_id": job, "text": "Parking?"}),
        "comment": (jobs.comment, {"job_id": job, "text": "Hello"}),
        "answer": (jobs.answer, {"job_id": job, "query_id": query, "text": "Tomorrow"}),
    }
    fn, params = calls[action]
    return code_of(fn, who, **params)


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
    for fn, params in ((jobs.start, {"job_id": "missing"}),
                       (jobs.cancel, {"job_id": "missing", "reason": "x"}),
                       (jobs.comment, {"job_id": "missing", "text": "x"}),
                       (jobs.get_job, {"job_id": "missing"})):
        assert code_of(fn, owner, **params) == "not_found"
    job = post(owner)
    assert code_of(jobs.cancel, owner, job_id=job, reason=" ") == "bad_request"


@pytest.mark.usefixtures("no_matcher")
def test_get_job_shows_members_their_view(tenant: str) -> None:
    owner = Caller(uid("c"), "customer", tenant)
    p1, p2 = Caller(uid("p"), "provider", tenant), Caller(uid("p"), "provider", tenant)
    job = post(owner, budget=1000)
    jobs.bid(p1, job_id=job, amount=900, currency="GBP")
    jobs.bid(p2, job_id=job, amount=800, currency="GBP")
    assert len(jobs.get_job(owner, job_id=job)["bids"]) == 2
    assert [b["provider"] for b in jobs.get_job(p1, job_id=job)["bids"]] == [p1.user]
    assert code_of(jobs.get_job, Caller(uid("x"), "provider", tenant), job_id=job) == "forbidden"
    # An admin of the job's tenant sees every bid; one of another tenant does not find the job.
    admin_view = jobs.get_job(Caller(uid("a"), "admin", tenant), job_id=job)["bids"]
    assert sorted(b["amount"] for b in admin_view) == [800, 900]
    assert code_of(jobs.get_job, Caller(uid("a"), "admin", uid("t")), job_id=job) == "not_found"
    # A provider who only asked reads the job but no bid.
    asker = Caller(uid("p"), "provider", tenant)
    jobs.ask(asker, job_id=job, text="Parking?")
    assert jobs.get_job(asker, job_id=job)["bids"] == []


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
            codes.append(code_of(jobs.bid, p, job_id=job, amount=5000, currency="GBP"))
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
    jobs.accept(owner, job_id=job, bid_id=first.id)
    late = Caller(uid("p"), "provider", tenant)
    assert code_of(jobs.bid, late, job_id=job, amount=5000, currency="GBP") == "conflict"
    assert not Bid.objects.filter(job_id=job, provider=late.user).exists()


def test_bids_on_a_job_seen_closed_are_refused_without_the_database(
        monkeypatch: pytest.MonkeyPatch, tenant: str) -> None:
    owner = Caller(uid("cust"), "customer", tenant)
    fake_matcher(monkeypatch, lambda: [])
    job = post(owner, budget=10000, currency="GBP")
    first = Caller(uid("p"), "provider", tenant)
    winner = jobs.bid(first, job_id=job, amount=5000, currency="GBP")["bid"]
    jobs.accept(owner, job_id=job, bid_id=winner)
    late = Caller(uid("p"), "provider", tenant)

    def no_database(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the job was read from the database")

    monkeypatch.setattr(jobs, "_shared_jobs", no_database)
    with pytest.raises(HubError) as info:
        jobs.bid(late, job_id=job, amount=5000, currency="GBP")
    assert info.value.code == "conflict" and "accepted" in info.value.message
    # Another tenant's bid on the same id is not told the job exists: it goes to the database.
    with pytest.raises(AssertionError):
        jobs.bid(Caller(late.user, "provider", uid("t")), job_id=job, amount=5000, currency="GBP")

