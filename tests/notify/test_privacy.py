"""notify.privacy: a user's devices, preferences and outbox rows exported and erased."""
from __future__ import annotations

from notify import actions
from tests.fakes.webpush import FakeWebPush
from tests.notify.conftest import emit, offer, web_device
from tests.support import uid


def test_export_and_erase_through_the_privacy_registry(fake: FakeWebPush) -> None:
    from core import privacy

    t, u = uid("t"), uid("u")
    web_device(fake, t, u)
    actions.set_preferences(t, u, kinds={"job": False})
    emit(t, u, offer("b1"))
    entry = privacy.REGISTRY["notify"]
    assert entry.export is not None and entry.erase is not None
    doc = entry.export(u)["push"]
    assert len(doc["devices"]) == 1 and "token" not in doc["devices"][0] and len(doc["outbox"]) == 1
    counts = entry.erase(u, "erased-x")
    assert counts["push_devices"] == 1 and counts["push_outbox"] == 1 and counts["push_preferences"] == 1
    assert entry.export(u)["push"] == {"devices": [], "preferences": [], "outbox": [], "dead_letters": []}
