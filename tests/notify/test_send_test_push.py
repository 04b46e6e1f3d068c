"""The send_test_push command: a test notification to each device, delivered by the command."""
from __future__ import annotations

import pytest

from notify import actions
from tests.fakes.webpush import FakeWebPush
from tests.notify.conftest import web_device
from tests.support import uid


def test_send_test_push_command_delivers_to_each_device(fake: FakeWebPush) -> None:
    import io

    import orjson
    from django.core.management import call_command
    from django.core.management.base import CommandError

    t, u = uid("t"), uid("u")
    sub, dev = web_device(fake, t, u)
    actions.set_preferences(t, u, kinds={k: False for k in ("offer", "call", "job", "bid", "message",
                                                           "room_invite")})  # a test push still goes
    out = io.StringIO()
    call_command("send_test_push", user=u, tenant=t, stdout=out)
    (line,) = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert line == {"device": dev, "platform": "web", "outcome": "sent", "reason": ""}
    (got,) = fake.wait(sub)
    assert got.message["title"] == "Test notification"
    with pytest.raises(CommandError):
        call_command("send_test_push", user=uid("nobody"), tenant=t, stdout=io.StringIO())
