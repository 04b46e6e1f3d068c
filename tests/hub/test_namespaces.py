"""hub.namespaces: `user:<id>` is its user's alone, and only the server writes to it."""
from __future__ import annotations

import asyncio

from hub import channels
from hub.namespaces import USER
from hub.rpc import Caller


def test_a_user_channel_is_its_users_only_and_written_by_the_server() -> None:
    async def scenario() -> None:
        al = Caller("al", "customer", "t1")
        assert await channels.ask(USER.can_subscribe, al, "al")
        assert not await channels.ask(USER.can_subscribe, al, "bob")
        assert not await channels.ask(USER.can_subscribe, Caller("root", "admin", "t1"), "al")
        assert not USER.admin_read
        assert not await channels.ask(USER.can_publish, al, "al")
        assert not await channels.ask(USER.can_signal, al, "al")

    asyncio.run(scenario())
