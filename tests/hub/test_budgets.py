"""hub.budgets in one process: socket slots per user and per address, and a user's command budget
taken in leases (across processes it is tests/security/test_budgets.py's subject)."""
from __future__ import annotations

import asyncio

from django.test import override_settings

from core import redis as hubredis
from hub import budgets
from tests.support import uid


def test_socket_slots_per_user_and_per_address() -> None:
    async def scenario() -> None:
        with override_settings(HUB_MAX_SOCKETS_PER_USER=2, HUB_MAX_SOCKETS_PER_ADDRESS=3,
                               HUB_NEW_SOCKETS_PER_ADDRESS_PER_S=0, HUB_USER_COMMANDS_PER_S=0):
            b = budgets.Budgets(uid("n"), None)
        who, address = f"t1:{uid()}", uid("a")
        assert await b.open_user(who) and await b.open_user(who)
        assert not await b.open_user(who)  # the third socket of the user
        b.close_user(who)
        assert await b.open_user(who)
        assert [await b.open_address(address) for _ in range(4)] == [0, 0, 0, 5000]
        b.close_address(address)
        assert await b.open_address(address) == 0
        assert b.take(who) == 0  # no command budget configured

    asyncio.run(scenario())


def test_commands_spend_a_lease_then_wait_for_the_next() -> None:
    async def scenario() -> None:
        with override_settings(HUB_USER_COMMANDS_PER_S=10, HUB_USER_COMMAND_BURST=4, HUB_MAX_SOCKETS_PER_USER=0):
            b = budgets.Budgets(uid("n"), None)
        who = f"t1:{uid()}"
        assert b.take(who) == 0  # not opened through open_user: nothing to charge
        assert await b.open_user(who)  # a first lease of half the burst
        assert [b.take(who), b.take(who)] == [0, 0]
        assert b.take(who) > 0  # spent; the next lease is on its way
        entry = b.users[who]
        assert entry.refill is not None and await entry.refill
        assert b.take(who) == 0
        b.close_user(who)
        client = hubredis._async.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.aclose()

    asyncio.run(scenario())
