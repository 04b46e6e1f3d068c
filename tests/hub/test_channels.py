"""hub.channels: tenant-qualified names below the connection, and the namespaces' permission hooks
(sync hooks run in a worker thread, async ones on the loop; admin reads, audited by the caller)."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from core.errors import HubError
from hub import channels
from hub.rpc import Caller

CUSTOMER, ADMIN = Caller("al", "customer", "t1"), Caller("root", "admin", "t1")


def test_names_carry_the_tenant_below_the_connection() -> None:
    name = channels.qualify("acme", "user:al")
    assert name == "acme/user:al"
    assert (channels.unqualify(name), channels.tenant_of(name)) == ("user:al", "acme")
    assert (channels.unqualify("user:al"), channels.tenant_of("user:al")) == ("user:al", "")


@pytest.fixture
def namespace() -> Iterator[channels.Namespace]:
    async def in_tenant(caller: Caller, ident: str) -> bool:
        return ident != "elsewhere"

    async def signals(caller: Caller, ident: str) -> bool:
        return caller.user == "al"

    ns = channels.register(channels.Namespace("tst", can_subscribe=lambda caller, ident: ident == "open",
                                              can_signal=signals, admin_read=True, in_tenant=in_tenant))
    try:
        yield ns
    finally:
        del channels.NAMESPACES["tst"]


def test_hooks_decide_and_admins_read_what_they_may(namespace: channels.Namespace) -> None:
    async def scenario() -> None:
        assert await channels.check_subscribe(CUSTOMER, "tst:open") == (namespace, False)
        assert await channels.check_subscribe(ADMIN, "tst:closed") == (namespace, True)  # an admin read
        for caller, channel, code in [(CUSTOMER, "tst:closed", "forbidden"), (ADMIN, "tst:elsewhere", "forbidden"),
                                      (CUSTOMER, "nope:x", "bad_request"), (CUSTOMER, "tst", "bad_request")]:
            with pytest.raises(HubError) as info:
                await channels.check_subscribe(caller, channel)
            assert info.value.code == code, channel
        with pytest.raises(HubError, match="publish"):
            await channels.check_publish(CUSTOMER, "tst:open")  # `never`: the server only
        assert await channels.check_signal(CUSTOMER, "tst:open") is namespace
        with pytest.raises(HubError):
            await channels.check_signal(ADMIN, "tst:open")

    asyncio.run(scenario())
