"""rooms.rpc: the rooms.*, jobs.* and calls.* declarations and the chat/job/call namespaces, served as the
rooms app's ready() registers them."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.errors import HubError
from hub import channels
from hub import rpc as hub_rpc
from hub.channels import check_subscribe
from hub.rpc import Caller
from matching import matcher
from rooms import rpc
from rooms.actions import jobs
from tests.support import HubClient, ReplyError, mint, uid


@pytest.fixture
def no_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("matcher down")

    monkeypatch.setattr(matcher, "candidates_for_job", failing)  # jobs are posted, told to nobody


def test_ready_serves_every_declared_method_and_namespace() -> None:
    declared = {m.name: m for m in hub_rpc.declared(rpc)}
    assert set(declared) == {
        "rooms.create", "rooms.list",
        "jobs.create", "jobs.bid", "jobs.accept", "jobs.start", "jobs.complete", "jobs.cancel", "jobs.comment",
        "jobs.ask", "jobs.answer", "jobs.get",
        "calls.start", "calls.accept", "calls.decline", "calls.end", "calls.renew", "calls.get"}
    for name, m in declared.items():
        assert hub_rpc.REGISTRY[name] is m, name
    for ns in rpc.NAMESPACES:
        assert channels.NAMESPACES[ns.name] is ns


@pytest.mark.usefixtures("no_matcher")
def test_admins_read_job_channels_through_the_namespace() -> None:
    tenant = uid("t")
    owner = Caller(uid("c"), "customer", tenant)
    job = jobs.create_job(owner, "Fix the boiler", "", "plumbing", 51.5, -0.12)["job"]
    ns, via_admin = asyncio.run(check_subscribe(Caller(uid("a"), "admin", tenant), f"job:{job}"))
    assert ns is rpc.JOB and via_admin

    async def stranger() -> str:
        try:
            await check_subscribe(Caller(uid("p"), "provider", tenant), f"job:{job}")
        except HubError as exc:
            return exc.code
        return "allowed"

    assert asyncio.run(stranger()) == "forbidden"


@pytest.mark.usefixtures("no_matcher")
def test_a_bid_on_a_job_known_closed_is_refused_before_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over rpc the refusal comes from the queue key, on the event loop: no worker is taken."""
    tenant = uid("t")
    owner = Caller(uid("cust"), "customer", tenant)
    job = jobs.create_job(owner, "Fix the boiler", "", "plumbing", 51.5, -0.12, budget=10000, currency="GBP")["job"]
    first = Caller(uid("p"), "provider", tenant)
    placed = jobs.bid(first, job_id=job, amount=500, currency="GBP")["bid"]
    jobs.accept(owner, job_id=job, bid_id=placed)

    async def no_worker(*args: Any) -> Any:
        raise AssertionError("a worker was used")

    monkeypatch.setattr(hub_rpc, "run_domain", no_worker)
    late = Caller(uid("p"), "provider", tenant)
    with pytest.raises(HubError) as info:
        asyncio.run(hub_rpc.call(late, "jobs.bid", {"job": job, "amount": 500, "currency": "GBP"}))
    assert info.value.code == "conflict"


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"cursor": "not-a-cursor"},
                                    {"cursor": ""}, {"other": 1}])
def test_rooms_list_refuses_bad_params(live_hub, params):
    c = HubClient(live_hub.url, mint(uid()))
    with pytest.raises(ReplyError) as info:
        c.rpc("rooms.list", **params)
    assert info.value.code == "bad_request"
