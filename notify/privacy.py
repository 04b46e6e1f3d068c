"""A user's notification data in a data-subject request: devices, preferences, outbox rows and
dead letters (in every tenant).

Export shows a device without its credential (a hint of the token or the push service's host).
Erasure deletes it all. Outbox rows and dead letters hold only lock-screen words and ids, and are
deleted after NOTIFY_KEEP_S / NOTIFY_DEAD_KEEP_S by the hub's own sweep.
"""
from __future__ import annotations

from typing import Any

from core import privacy
from notify.actions import device_dict
from notify.models import DeadLetter, Device, Outbox, Preferences


def export(user: str) -> dict[str, Any]:
    return {"push": {
        "devices": [{"tenant": d.tenant, **device_dict(d)} for d in Device.objects.filter(user=user).order_by("id")],
        "preferences": [{"tenant": p.tenant, "kinds": p.kinds, "quiet_start": p.quiet_start,
                         "quiet_end": p.quiet_end, "timezone": p.timezone, "quiet_override": p.quiet_override}
                        for p in Preferences.objects.filter(user=user).order_by("tenant")],
        "outbox": [{"tenant": o.tenant, "device": o.device_id, "kind": o.kind, "payload": o.payload,
                    "state": o.state, "created_at": o.created_at.isoformat(), "attempts": o.attempts}
                   for o in Outbox.objects.filter(user=user).order_by("id")],
        "dead_letters": [{"tenant": d.tenant, "device": d.device_id, "kind": d.kind, "reason": d.reason,
                          "created_at": d.created_at.isoformat()}
                         for d in DeadLetter.objects.filter(user=user).order_by("id")],
    }}


def erase(user: str, pseudonym: str) -> dict[str, int]:
    outbox = Outbox.objects.filter(user=user).delete()[0]
    return {"push_devices": Device.objects.filter(user=user).delete()[0], "push_outbox": outbox,
            "push_preferences": Preferences.objects.filter(user=user).delete()[0],
            "push_dead_letters": DeadLetter.objects.filter(user=user).delete()[0]}


ENTRY = privacy.Entry("notify", export=export, erase=erase)
