"""devices.* and notify.*_preferences through the rpc registry: roles, schemas, ownership."""
from __future__ import annotations

import asyncio
from typing import Any

from notify.models import Device
from tests.fakes.webpush import FakeWebPush
from tests.support import code_of, uid


def test_rpc_surface_refuses_services_unknown_fields_and_strangers_devices(fake: FakeWebPush) -> None:
    from hub import rpc
    from hub.rpc import Caller

    t, u, other = uid("t"), uid("u"), uid("u")
    _s, sub = fake.subscription()

    def call(caller: Caller, name: str, params: dict[str, Any]) -> Any:
        return asyncio.run(rpc.call(caller, name, params))

    me = Caller(u, "provider", t)
    assert code_of(call, Caller("svc", "service", t), "devices.register", {"platform": "web", "subscription": sub}) \
        == "forbidden"
    assert code_of(call, me, "devices.register", {"platform": "web", "subscription": sub, "user": other}) \
        == "bad_request"  # nobody registers a device for someone else
    assert code_of(call, me, "devices.register", {"platform": "web", "subscription": {**sub, "x": 1, "y": 2}}) \
        == "bad_request"
    dev = call(me, "devices.register", {"platform": "web", "subscription": sub})["device"]
    stranger = Caller(other, "provider", t)
    assert code_of(call, stranger, "devices.state", {"background": True, "device": dev}) == "not_found"
    assert code_of(call, stranger, "devices.unregister", {"device": dev}) == "not_found"
    # Over HTTP there is no socket to mark: the device's flag is recorded.
    assert call(me, "devices.state", {"background": True, "device": dev}) == {"background": True, "device": dev}
    assert Device.objects.get(id=dev).background is True
    assert code_of(call, me, "notify.set_preferences", {}) == "bad_request"
    assert code_of(call, me, "notify.set_preferences", {"quiet": {"start": "22:00"}}) == "bad_request"
    assert call(me, "notify.get_preferences", {})["quiet_start"] is None


def test_params_reach_the_actions_whole() -> None:
    from hub import rpc
    from hub.rpc import Caller

    flags: list[bool] = []
    me = Caller(uid("u"), "customer", uid("t"), set_background=flags.append)

    def call(name: str, params: dict[str, Any]) -> Any:
        return asyncio.run(rpc.call(me, name, params))

    got = call("notify.set_preferences", {"kinds": {"job": False}, "quiet": {"start": "22:00", "end": "07:00"},
                                          "timezone": "Europe/London", "quiet_override": True})
    assert got["kinds"]["job"] is False and got["kinds"]["offer"] is True
    assert (got["quiet_start"], got["quiet_end"], got["timezone"], got["quiet_override"]) \
        == ("22:00", "07:00", "Europe/London", True)
    got = call("notify.set_preferences", {"quiet": None})
    assert got["quiet_start"] is None and got["timezone"] == "Europe/London" and got["kinds"]["job"] is False
    # A socket without a device id: only the socket stops counting as reaching the user.
    assert call("devices.state", {"background": True}) == {"background": True, "device": None}
    assert call("devices.state", {"background": False}) == {"background": False, "device": None}
    assert flags == [True, False]
