"""Custom jobs: posting, bids, comments, queries and the guarded lifecycle; who may follow `job:<id>`.

State machine (docs/jobs-and-calls.md has the full table):

    open --accept--> accepted --start--> in_progress --complete--> completed
      \\______________ \\______________________ \\--cancel--> cancelled

Every change is a plain function taking a `Caller`: it checks the actor (forbidden), then the
state (conflict), then writes the row, an audit row and a publication on `job:<id>` in one
transaction. State changes are conditional UPDATEs (`WHERE status = <from>`), so two racing
transitions cannot both win, on any number of hub processes.

Money is integer minor units (pence for GBP) with an ISO 4217 currency; floats are refused.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.audit import entry, record, record_all
from core.domain_budgets import admit_open, per_minute
from core.errors import HubError, bad_request, conflict, forbidden, not_found, only
from hub.channels import qualify
from hub.rpc import PROVIDERS, Caller
from hub.store import append, atomic
from matching import matcher
from matching.privacy import job_area
from rooms.models import Bid, BidStatus, Job, JobAnswer, JobComment, JobQuery, JobStatus

log = logging.getLogger("rooms.jobs")

# Jobs seen past `open`, per process: a job never reopens, so a bid on one is refused without a
# transaction (a new job's bid burst mostly arrives after its owner accepted one).
_CLOSED_MAX = 10_000
_closed: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()  # (tenant, job) -> (status, owner)
_closed_lock = threading.Lock()


def _remember_closed(tenant: str, job_id: str, status: str, owner: str) -> None:
    with _closed_lock:
        _closed[(tenant, job_id)] = (status, owner)
        _closed.move_to_end((tenant, job_id))
        while len(_closed) > _CLOSED_MAX:
            _closed.popitem(last=False)

# Plain strings (the values of rooms.models.JobStatus).
OPEN, ACCEPTED, IN_PROGRESS = JobStatus.OPEN, JobStatus.ACCEPTED, JobStatus.IN_PROGRESS
COMPLETED, CANCELLED = JobStatus.COMPLETED, JobStatus.CANCELLED
TERMINAL = frozenset({COMPLETED, CANCELLED})

# Who may post a job: customers, and enterprises acting as a customer organisation. Admins moderate
# (cancel) but do not post.
POSTERS = ("customer", "enterprise")
MAX_AMOUNT = 10**12
MAX_CANDIDATES = 50

# Active ISO 4217 currency codes (circulating currencies; fund, metal and testing codes excluded)
# with their minor-unit exponent: an amount of 1234 GBP means £12.34, 1234 JPY means ¥1234.
CURRENCIES: dict[str, int] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2, "AZN": 2,
    "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2, "BOB": 2, "BRL": 2,
    "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "COP": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2,
    "ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2,
    "GNF": 0, "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2,
    "IQD": 3, "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0,
    "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2,
    "LYD": 3, "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2, "NPR": 2,
    "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2, "PYG": 0, "QAR": 2,
    "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2,
    "SHP": 2, "SLE": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2,
    "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0,
    "USD": 2, "UYU": 2, "UZS": 2, "VED": 2, "VES": 2, "VND": 0, "VUV": 0, "WST": 2, "XAF": 0, "XCD": 2,
    "XCG": 2, "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
}


# --- validation helpers ----------------------------------------------------------------------

def check_amount(value: Any, field: str = "amount") -> int:
    """An integer count of minor units, 1..10^12. Floats (even 100.0) and bools are refused."""
    if type(value) is not int:
        raise bad_request(f"{field} must be an integer number of minor units (e.g. pence), "
                          f"not {type(value).__name__}")
    if not 0 < value <= MAX_AMOUNT:
        raise bad_request(f"{field} must be between 1 and {MAX_AMOUNT} minor units")
    return value


def check_currency(value: Any) -> str:
    if not isinstance(value, str) or value not in CURRENCIES:
        raise bad_request(f"currency must be an active ISO 4217 code such as GBP, got {value!r}")
    return value


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise bad_request(f"{name} is longer than {limit} characters")
    return value


@cache
def _share_query() -> tuple[str, list[str]]:
    """Postgres: jobs read FOR SHARE, every field in the model's order (Job.from_db's fast path; a
    raw queryset mapped the columns anew on each call, a tenth of a bid's cost), and the field names."""
    fields = Job._meta.concrete_fields
    quote = connection.ops.quote_name
    return (f"SELECT {', '.join(quote(f.column) for f in fields)} FROM {quote(Job._meta.db_table)} "
            "WHERE id = ANY(%s) AND tenant = %s ORDER BY id FOR SHARE", [f.attname for f in fields])


def _load(caller: Caller, job_id: Any, *, lock: bool = False) -> Job:
    """The job in the caller's tenant; another tenant's job is indistinguishable from a missing one.
    `lock` takes the row for a state change."""
    if not isinstance(job_id, str) or not job_id:
        raise bad_request("job must be a job id")
    qs = Job.objects.filter(pk=job_id, tenant=caller.tenant)
    if lock:
        qs = qs.select_for_update()
    job = qs.first()
    if job is None:
        raise not_found(f"no job {job_id}")
    return job


def _channel(job: Job) -> str:
    """The job's stream (tenant-qualified, hub.channels.qualify)."""
    return qualify(job.tenant, f"job:{job.id}")


def _user(tenant: str, user: str) -> str:
    return qualify(tenant, f"user:{user}")


def is_member(job: Job, user: str) -> bool:
    """Owner, or a provider who bid on it or asked about it (admins are admitted by the namespace)."""
    if job.owner == user:
        return True
    return (Bid.objects.filter(job=job, provider=user).exists()
            or JobQuery.objects.filter(job=job, author=user).exists())


def follows(job: Job, user: str) -> bool:
    """Who reads `job:<id>`: the owner and providers who bid on it. Asking a query is not enough:
    the stream is the job's thread, and an asker hears the owner's answers on their own `user:`."""
    return job.owner == user or Bid.objects.filter(job=job, provider=user).exists()


def subscribe_hook(caller: Caller, ident: str) -> bool:
    """`job:<id>` subscribe: the owner and the bidders (clients never publish there; admins read, audited)."""
    job = Job.objects.filter(pk=ident, tenant=caller.tenant).first()
    return job is not None and follows(job, caller.user)


def in_tenant(caller: Caller, ident: str) -> bool:
    return Job.objects.filter(pk=ident, tenant=caller.tenant).exists()


# --- actors and the transition table ---------------------------------------------------------

OWNER, PROVIDER, ADMIN = "owner", "provider", "admin"  # PROVIDER = the accepted provider

# action -> (states it is allowed from, actors who may take it, new state)
TRANSITIONS: dict[str, tuple[frozenset[str], frozenset[str], str]] = {
    "accept": (frozenset({OPEN}), frozenset({OWNER}), ACCEPTED),
    "start": (frozenset({ACCEPTED}), frozenset({PROVIDER}), IN_PROGRESS),
    "complete": (frozenset({IN_PROGRESS}), frozenset({OWNER, PROVIDER}), COMPLETED),
    "cancel": (frozenset({OPEN, ACCEPTED, IN_PROGRESS}), frozenset({OWNER, PROVIDER, ADMIN}), CANCELLED),
}


def actors_of(job: Job, caller: Caller) -> set[str]:
    out: set[str] = set()
    if job.owner == caller.user:
        out.add(OWNER)
    if job.provider and job.provider == caller.user and caller.role in PROVIDERS:
        out.add(PROVIDER)
    if caller.role == "admin":
        out.add(ADMIN)
    return out


def _transition(caller: Caller, job_id: Any, action: str, *, reason: str = "",
                extra: dict[str, Any] | None = None) -> tuple[Job, str]:
    """Check actor then state, then move the job with a conditional UPDATE. Returns (job, from_status).

    Must run inside the caller's transaction (the UPDATE, audit and publication commit together).
    """
    allowed_from, who, to = TRANSITIONS[action]
    job = _load(caller, job_id, lock=True)
    if not actors_of(job, caller) & who:
        raise forbidden(f"you may not {action} this job")
    if job.status not in allowed_from:
        raise conflict(f"cannot {action} a job that is {job.status}")
    now = timezone.now()
    fields: dict[str, Any] = {"status": to, "updated_at": now, **(extra or {})}
    stamp = {ACCEPTED: "accepted_at", IN_PROGRESS: "started_at", COMPLETED: "completed_at",
             CANCELLED: "cancelled_at"}[to]
    fields[stamp] = now
    if to == CANCELLED:
        fields["cancel_reason"] = reason
        fields["cancelled_by"] = caller.user
    # Conditional: a concurrent transition that committed first leaves 0 rows here.
    if Job.objects.filter(pk=job.pk, status=job.status).update(**fields) != 1:
        raise conflict(f"the job changed state; cannot {action} it now")
    from_status = job.status
    for k, v in fields.items():
        setattr(job, k, v)
    # The audit keeps that the job was cancelled, not the canceller's words (free text is personal
    # data, and audit rows are never erased): the reason is on the job, where erasure reaches it.
    record(caller.user, f"jobs.{action}", f"job:{job.id}", role=caller.role, tenant=caller.tenant,
           from_status=from_status, status=to, reason_given=bool(reason))
    data: dict[str, Any] = {"kind": "status", "job": job.id, "status": to, "from_status": from_status,
                            "by": caller.user}
    if to == CANCELLED:
        data["reason"] = reason
    if to == ACCEPTED:
        data["bid"] = job.accepted_bid
        data["provider"] = job.provider
    append(_channel(job), data)
    closed = (caller.tenant, job.id, to, job.owner)
    transaction.on_commit(lambda: _remember_closed(*closed))
    return job, from_status


# --- posting ---------------------------------------------------------------------------------

# Why a new job told nobody (`reason` in its result): match.find's words, plus the matcher's failure.
NO_PROVIDER_AVAILABLE = "no_provider_available"
MATCHER_UNAVAILABLE = "matcher_unavailable"


def _candidates(lat: float, lng: float, category: str, tenant: str) -> tuple[list[str], str | None]:
    """Matched providers for a new job and, when there are none, why (match.find's reasons, or
    matcher_unavailable when the matcher fails: the job is posted regardless, told to nobody)."""
    try:
        users, reason = matcher.candidates_for_job(lat, lng, category, limit=MAX_CANDIDATES, tenant=tenant)
    except Exception:
        log.exception("candidates_for_job failed; job.new not broadcast")
        return [], MATCHER_UNAVAILABLE
    return [u for u in users if isinstance(u, str) and u][:MAX_CANDIDATES], reason


def create_job(caller: Caller, title: str, description: str, category: str, lat: float, lng: float,
               budget: int | None = None, currency: str | None = None) -> dict[str, Any]:
    """Post a job (customers and enterprises); matched providers hear `job.new` with its area.
    A bare budget is in pence (GBP). `reason` in the result says why nobody was told."""
    return only(create_jobs([JobRequest(caller, title, description, category, lat, lng, budget, currency)]))


@dataclass(frozen=True)
class JobRequest:
    caller: Caller
    title: Any
    description: Any
    category: Any
    lat: Any
    lng: Any
    budget: Any = None
    currency: Any = None


def job_queue(caller: Caller, _params: Any = None) -> str:
    """The queue a new job waits in: one per tenant and process, whose queued jobs are posted
    together (`create_jobs`), sharing one transaction's round trips and commit."""
    return qualify(caller.tenant, "jobs")


def create_jobs(requests: list[JobRequest]) -> list[dict[str, Any] | HubError]:
    """Jobs of one tenant posted in one transaction: each request gets its own result or refusal, in
    order, as if `create_job` had posted them one after the other (a customer's second job in one
    batch counts their first against the open-jobs budget)."""
    out: list[dict[str, Any] | HubError] = [conflict("not posted")] * len(requests)
    ready: list[tuple[int, Job, list[str], str | None]] = []
    for i, r in enumerate(requests):
        try:
            if ready and r.caller.tenant != ready[0][1].tenant:
                raise ValueError("create_jobs takes the jobs of one tenant")
            job = _checked_job(r)
            # The matcher runs before our transaction: a failure or slow query there must not hold locks.
            found, reason = _candidates(job.lat, job.lng, job.category, job.tenant)
            candidates = [u for u in found if u != job.owner]
            if found and not candidates:
                reason = NO_PROVIDER_AVAILABLE  # the only match was the poster
        except HubError as exc:
            out[i] = exc
            continue
        ready.append((i, job, candidates, reason))
    if not ready:
        return out
    tenant = ready[0][1].tenant
    with atomic():
        refusals = admit_open("jobs", tenant, [(job.owner, True) for _i, job, _c, _r in ready],
                              lambda user: Job.objects.filter(tenant=tenant, owner=user, status=OPEN),
                              settings.HUB_MAX_OPEN_JOBS_PER_USER, "jobs (still open to bids)")
        for item, refusal in zip(ready, refusals, strict=True):
            if refusal is not None:
                out[item[0]] = refusal
        ready = [item for item, refusal in zip(ready, refusals, strict=True) if refusal is None]
        Job.objects.bulk_create([job for _i, job, _c, _r in ready])
        record_all([entry(job.owner, "jobs.create", f"job:{job.id}", role=job.owner_role, tenant=tenant,
                          rid=requests[i].caller.request_id or None, category=job.category,
                          budget=job.budget, currency=job.currency, notified=len(candidates))
                    for i, job, candidates, _r in ready])
        for i, job, candidates, reason in ready:
            # Not yet chosen: providers learn the job's area (a cell's rounded centre), not the point.
            note = {"kind": "job.new", "job": job.id, "title": job.title, "category": job.category,
                    **job_area(job.lat, job.lng), "budget": job.budget, "currency": job.currency or None}
            for user in candidates:
                append(_user(tenant, user), note)
            # `reason` says why nobody was told (null when someone was): the same words as match.find.
            out[i] = {"job": job.id, "status": job.status, "notified": len(candidates), "reason": reason}
    return out


def _checked_job(r: JobRequest) -> Job:
    """The job a request asks for, unsaved, or the refusal of its fields."""
    caller = r.caller
    if caller.role not in POSTERS:
        raise forbidden("only customers and enterprises post jobs")
    title = _text(r.title, "title", 200)
    if not isinstance(r.description, str) or len(r.description) > 5000:
        raise bad_request("description must be a string of at most 5000 characters")
    category = _text(r.category, "category", 64)
    lat, lng = r.lat, r.lng
    if (not isinstance(lat, (int, float)) or isinstance(lat, bool) or not -90 <= lat <= 90
            or not isinstance(lng, (int, float)) or isinstance(lng, bool) or not -180 <= lng <= 180):
        raise bad_request("lat and lng must be WGS84 degrees")
    budget = check_amount(r.budget, "budget") if r.budget is not None else None
    currency = check_currency(r.currency) if r.currency else ""
    if budget is not None and not currency:
        currency = "GBP"  # a UK marketplace: a bare budget is in pence
    return Job(tenant=caller.tenant, owner=caller.user, owner_role=caller.role, title=title,
               description=r.description, category=category, lat=float(lat), lng=float(lng), budget=budget,
               currency=currency)


# --- bids ------------------------------------------------------------------------------------

def bid_queue(caller: Caller, job_id: Any) -> str:
    """The queue a bid waits in: one per tenant and process, whose queued bids run together in one
    transaction (a batch of `place_bids`); a bid on a job known closed is refused here, on the event
    loop, without waiting for a worker.

    A new job's bids come in a burst (every notified provider at once) and all write one channel,
    whose counter row they take in turn at commit; bids spread over many jobs each cost a transaction
    of their own. Queued together, either kind shares one transaction's round trips and commit."""
    _refuse_if_closed(caller, job_id)
    return qualify(caller.tenant, "bids")


def _refuse_if_closed(caller: Caller, job_id: Any) -> None:
    seen = _closed.get((caller.tenant, job_id)) if isinstance(job_id, str) else None
    if seen is not None:
        if seen[1] == caller.user:
            raise forbidden("you cannot bid on your own job")
        raise conflict(f"the job is {seen[0]}; bids are closed")


def bid(caller: Caller, job_id: str, amount: int, currency: str, note: str = "") -> dict[str, Any]:
    """Bid on an open job (providers), replacing the caller's earlier live bid. The job's stream only
    hears that a bid came; the owner and the bidder get its details on their `user:` channels."""
    return only(place_bids([BidRequest(caller, job_id, amount, currency, note)]))


@dataclass(frozen=True)
class BidRequest:
    caller: Caller
    job_id: Any
    amount: Any
    currency: Any
    note: Any = ""


def place_bids(requests: list[BidRequest]) -> list[dict[str, Any] | HubError]:
    """Bids of one tenant, on any of its jobs, in one transaction (a job's bid burst, or bids spread
    over many jobs): each request gets its own result or refusal, in order, as if `bid` had placed
    them one after the other (a provider's second bid on a job in one batch after the others' first)."""
    out: list[dict[str, Any] | HubError] = [conflict("not placed")] * len(requests)
    ready: list[tuple[int, BidRequest]] = []
    for i, r in enumerate(requests):
        try:
            if ready and r.caller.tenant != ready[0][1].caller.tenant:
                raise ValueError("place_bids takes the bids of one tenant")
            if r.caller.role not in PROVIDERS:
                raise forbidden("only providers bid")
            if not isinstance(r.job_id, str) or not r.job_id:
                raise bad_request("job must be a job id")
            checked = BidRequest(r.caller, r.job_id, check_amount(r.amount), check_currency(r.currency), r.note)
            if not isinstance(r.note, str) or len(r.note) > 2000:
                raise bad_request("note must be a string of at most 2000 characters")
            _refuse_if_closed(r.caller, r.job_id)
            # Before the transaction: a provider past their budget changes nothing and tells nobody.
            per_minute("bids", r.caller.tenant, r.caller.user, settings.HUB_BIDS_PER_MIN, "bids")
        except HubError as exc:
            out[i] = exc
            continue
        ready.append((i, checked))
    if not ready:
        return out
    try:
        with atomic():
            _place(ready, out)
    except IntegrityError as exc:
        # A bid from one of these providers raced in (another process): one at a time, so that only
        # the colliding one is refused.
        if len(ready) == 1:
            out[ready[0][0]] = conflict("another bid from you was placed at the same time; retry")
            log.info("bid collided: %s", exc)
            return out
        for one in ready:
            try:
                with atomic():
                    _place([one], out)
            except IntegrityError:
                out[one[0]] = conflict("another bid from you was placed at the same time; retry")
    return out


def _place(ready: list[tuple[int, BidRequest]], out: list[dict[str, Any] | HubError]) -> None:
    """The transaction of place_bids: the jobs taken FOR SHARE, then each provider's earlier live bid
    on a job retired and the new ones inserted, one pass per bid of the same provider on the same job."""
    tenant = ready[0][1].caller.tenant
    by_job: dict[str, list[tuple[int, BidRequest]]] = {}
    for item in ready:
        by_job.setdefault(item[1].job_id, []).append(item)
    found = _shared_jobs(tenant, list(by_job))
    todo: list[tuple[int, BidRequest, Job]] = []
    for job_id, items in by_job.items():
        job = found.get(job_id)
        if job is None or job.status != OPEN:
            if job is None:
                refusal = not_found(f"no job {job_id}")
            else:
                _remember_closed(tenant, job.id, job.status, job.owner)
                refusal = conflict(f"the job is {job.status}; bids are closed")
            for i, _r in items:
                out[i] = refusal
            continue
        for i, r in items:
            if job.owner == r.caller.user:
                out[i] = forbidden("you cannot bid on your own job")
            elif job.currency and r.currency != job.currency:
                out[i] = bad_request(f"this job is priced in {job.currency}")
            else:
                todo.append((i, r, job))
    while todo:
        seen: set[tuple[str, str]] = set()
        now: list[tuple[int, BidRequest, Job]] = []
        later: list[tuple[int, BidRequest, Job]] = []
        for bid_item in todo:
            pair = (bid_item[2].id, bid_item[1].caller.user)
            (later if pair in seen else now).append(bid_item)
            seen.add(pair)
        retired, live = _retire_live_bids(tenant, [(job.id, r.caller.user) for _i, r, job in now])
        new = Bid.objects.bulk_create([
            Bid(job=job, provider=r.caller.user, provider_role=r.caller.role, amount=r.amount,
                currency=r.currency, note=r.note, replaces=retired.get((job.id, r.caller.user), ""))
            for _i, r, job in now])
        for (i, r, job), b in zip(now, new, strict=True):
            replaces = retired.get((job.id, r.caller.user))
            if replaces is None:
                live[job.id] = live.get(job.id, 0) + 1  # a replacing bid takes its predecessor's place
            # Bid privacy: the job's stream (rivals read it) says only that a bid came; who bid, the
            # amount and the note go to the owner and the bidder on their own channels. No sender
            # either: `from` would name the bidder.
            append(_channel(job), {"kind": "bid", "job": job.id, "bid": b.id, "count": live[job.id]})
            placed = {"kind": "bid.placed", "job": job.id, "bid": b.id, "provider": r.caller.user,
                      "amount": r.amount, "currency": r.currency, "note": r.note, "replaces": replaces}
            append(_user(job.tenant, job.owner), placed)
            append(_user(job.tenant, r.caller.user), placed)
            out[i] = {"bid": b.id, "replaces": replaces}
        todo = later


def _shared_jobs(tenant: str, job_ids: list[str]) -> dict[str, Job]:
    """These jobs of the tenant (missing ones absent), on Postgres taken FOR SHARE in id order: many
    bids proceed together while a transition (an accept, a cancel) waits for them."""
    if connection.vendor != "postgresql":
        return {j.id: j for j in Job.objects.filter(pk__in=job_ids, tenant=tenant)}
    sql, names = _share_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, [sorted(job_ids), tenant])
        rows = cursor.fetchall()
    return {j.id: j for j in (Job.from_db(connection.alias, names, row) for row in rows)}


def _retire_live_bids(tenant: str, pairs: list[tuple[str, str]]) -> tuple[dict[tuple[str, str], str], dict[str, int]]:
    """Retire these (job, provider) pairs' live bids before their new ones go in; returns ((job,
    provider) -> retired bid id, job -> its live bids before the retirement)."""
    jobs = sorted({job for job, _p in pairs})
    if connection.vendor == "postgresql":
        # One round trip for all the jobs: the counts read the statement's snapshot, before the
        # retirement.
        table = Bid._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH old AS (UPDATE {table} SET status = %s WHERE status = %s AND job_id = ANY(%s) "
                "AND (job_id, provider) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                "RETURNING job_id, provider, id), "
                f"n AS (SELECT job_id, count(*) AS live FROM {table} WHERE job_id = ANY(%s) AND status = %s "
                "GROUP BY job_id) "
                "SELECT job_id, provider, id, 0 FROM old UNION ALL SELECT job_id, NULL, NULL, live FROM n",
                [BidStatus.REPLACED, BidStatus.LIVE, jobs, [j for j, _p in pairs], [p for _j, p in pairs],
                 jobs, BidStatus.LIVE])
            rows = cursor.fetchall()
        retired = {(job, provider): bid_id for job, provider, bid_id, _n in rows if provider is not None}
        return retired, {job: int(n) for job, provider, _b, n in rows if provider is None}
    live: dict[str, int] = {}
    retired = {}
    wanted = set(pairs)
    for job, provider, bid_id in Bid.objects.filter(job_id__in=jobs, status=BidStatus.LIVE).values_list(
            "job_id", "provider", "id"):
        live[job] = live.get(job, 0) + 1
        if (job, provider) in wanted:
            retired[(job, provider)] = bid_id
    Bid.objects.filter(pk__in=list(retired.values())).update(status=BidStatus.REPLACED)
    return retired, live


def accept(caller: Caller, job_id: str, bid_id: str) -> dict[str, Any]:
    """The owner accepts one live bid: the winner gets the job's point, the other bidders `bid.rejected`."""
    if not isinstance(bid_id, str) or not bid_id:
        raise bad_request("bid must be a bid id")
    with atomic():
        job = _load(caller, job_id, lock=True)
        if OWNER not in actors_of(job, caller):
            raise forbidden("only the job's owner accepts a bid")
        if job.status != OPEN:
            raise conflict(f"cannot accept a bid on a job that is {job.status}")
        chosen = Bid.objects.filter(pk=bid_id, job=job).first()
        if chosen is None:
            raise not_found(f"no bid {bid_id} on this job")
        if chosen.status != BidStatus.LIVE:
            raise conflict(f"that bid is {chosen.status}")
        job, _ = _transition(caller, job.id, "accept",
                             extra={"accepted_bid": chosen.id, "provider": chosen.provider})
        Bid.objects.filter(pk=chosen.pk).update(status=BidStatus.ACCEPTED)
        # Every other live bid rejected, and whose they were learnt, in one statement (a job may
        # hold dozens of bids: no read, then an update naming each).
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {connection.ops.quote_name(Bid._meta.db_table)} SET status = %s "
                           "WHERE job_id = %s AND status = %s RETURNING id, provider",
                           [BidStatus.REJECTED, job.id, BidStatus.LIVE])
            losers = sorted(cursor.fetchall())
        # Chosen: the winner, and only the winner, gets the job's exact point.
        append(_user(job.tenant, chosen.provider), {"kind": "bid.accepted", "job": job.id, "bid": chosen.id,
                                           "title": job.title, "amount": chosen.amount,
                                           "currency": chosen.currency, "lat": job.lat, "lng": job.lng})
        for bid, provider in losers:
            if provider != chosen.provider:
                append(_user(job.tenant, provider), {"kind": "bid.rejected", "job": job.id, "bid": bid,
                                                     "title": job.title})
    return {"job": job.id, "status": job.status, "bid": chosen.id, "provider": chosen.provider}


def start(caller: Caller, job_id: str) -> dict[str, Any]:
    """The accepted provider starts work."""
    with atomic():
        job, _ = _transition(caller, job_id, "start")
    return {"job": job.id, "status": job.status}


def complete(caller: Caller, job_id: str) -> dict[str, Any]:
    """The owner or the accepted provider completes the job."""
    with atomic():
        job, _ = _transition(caller, job_id, "complete")
    return {"job": job.id, "status": job.status}


def cancel(caller: Caller, job_id: str, reason: str) -> dict[str, Any]:
    """The owner, the accepted provider or an admin cancels the job, saying why."""
    reason = _text(reason, "reason", 1000)
    with atomic():
        job, _ = _transition(caller, job_id, "cancel", reason=reason)
    return {"job": job.id, "status": job.status}


# --- comments and queries --------------------------------------------------------------------

def _writable(job: Job) -> None:
    if job.status in TERMINAL:
        raise conflict(f"the job is {job.status}; its thread is closed")


def comment(caller: Caller, job_id: str, text: str) -> dict[str, Any]:
    """A comment on the job's stream by someone on the job (owner, bidders, askers) or an admin."""
    text = _text(text, "text", 4000)
    with atomic():
        job = _load(caller, job_id)
        if caller.role != "admin" and not is_member(job, caller.user):
            raise forbidden("only people on the job may comment; providers ask a query first")
        _writable(job)
        row = JobComment.objects.create(job=job, author=caller.user, author_role=caller.role, text=text)
        pub = append(_channel(job), {"kind": "comment", "job": job.id, "comment": row.id,
                                     "by": caller.user, "role": caller.role, "text": text},
                     sender=caller.user)
    return {"comment": row.id, "offset": pub.offset}


def ask(caller: Caller, job_id: str, text: str) -> dict[str, Any]:
    """A provider asks the owner a question (once the job is taken, only providers already on it)."""
    if caller.role not in PROVIDERS:
        raise forbidden("only providers ask queries")
    text = _text(text, "text", 4000)
    with atomic():
        job = _load(caller, job_id)
        if job.owner == caller.user:
            raise forbidden("you cannot ask about your own job")
        _writable(job)
        # Once a bid is accepted only providers already on the job keep asking.
        if job.status != OPEN and not is_member(job, caller.user):
            raise forbidden("the job is no longer open to new providers")
        row = JobQuery.objects.create(job=job, author=caller.user, author_role=caller.role, text=text)
        append(_channel(job), {"kind": "query", "job": job.id, "query": row.id, "by": caller.user,
                               "text": text}, sender=caller.user)
    return {"query": row.id}


def answer(caller: Caller, job_id: str, query_id: str, text: str) -> dict[str, Any]:
    """The owner answers a query: on the job's stream and on the asker's `user:` channel."""
    text = _text(text, "text", 4000)
    if not isinstance(query_id, str) or not query_id:
        raise bad_request("query must be a query id")
    with atomic():
        job = _load(caller, job_id)
        if job.owner != caller.user:
            raise forbidden("only the job's owner answers queries")
        query = JobQuery.objects.filter(pk=query_id, job=job).first()
        if query is None:
            raise not_found(f"no query {query_id} on this job")
        _writable(job)
        row = JobAnswer.objects.create(query=query, job=job, author=caller.user, text=text)
        append(_channel(job), {"kind": "answer", "job": job.id, "query": query.id, "answer": row.id,
                               "by": caller.user, "text": text}, sender=caller.user)
        # The asker may not read the job's stream (only bidders do): the answer reaches them here.
        append(_user(job.tenant, query.author), {"kind": "query.answered", "job": job.id, "query": query.id,
                                        "answer": row.id, "by": caller.user, "text": text})
    return {"answer": row.id}


def get_job(caller: Caller, job_id: str) -> dict[str, Any]:
    """A job's state and bids as the caller may see them (members and admins): providers see only
    their own bid, and a provider not chosen sees the job's area, not its point."""
    job = _load(caller, job_id)
    if caller.role != "admin" and not is_member(job, caller.user):
        raise forbidden("not on this job")
    bids = Bid.objects.filter(job=job).filter(Q(status=BidStatus.LIVE) | Q(status=BidStatus.ACCEPTED))
    if job.owner != caller.user and caller.role != "admin":
        bids = bids.filter(provider=caller.user)  # providers see only their own bid
    place: dict[str, Any] = {"lat": job.lat, "lng": job.lng}
    if caller.role != "admin" and caller.user not in (job.owner, job.provider):
        # A provider not (yet) chosen learns the job's area, never the customer's point.
        place = job_area(job.lat, job.lng)
    return {"job": job.id, "status": job.status, "title": job.title, "description": job.description,
            "category": job.category, **place, "budget": job.budget,
            "currency": job.currency or None, "owner": job.owner, "provider": job.provider or None,
            "bid": job.accepted_bid or None, "cancel_reason": job.cancel_reason or None,
            "bids": [{"bid": b.id, "provider": b.provider, "amount": b.amount, "currency": b.currency,
                      "note": b.note, "status": b.status} for b in bids.order_by("created_at")]}

