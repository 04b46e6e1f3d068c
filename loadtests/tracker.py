"""Loss and duplication accounting for durable streams, from the offsets a client receives.

Pure Python (no Locust, no gevent) so it is unit-tested directly. One `StreamTracker` per
simulated client; all of a process's trackers add into one `Totals`, which the locustfile
reports (and, distributed, ships from workers to the master).

Rules (protocol v1 "Delivery"): a subscriber sees a channel's publications in offset order, each
once; a client that subscribes with `since` misses nothing. So, per channel:
- offset == last + 1: fine;
- offset <= last: a duplicate;
- offset > last + 1: the offsets in between were lost (order is guaranteed, so a gap never fills);
- a publish we were acknowledged for, never seen by the end: lost (the tail check);
- `recovered: false` within the window, or another epoch: a failed recovery.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Totals:
    received: int = 0
    lost: int = 0
    duplicated: int = 0
    recoveries: int = 0
    recovery_failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: int(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}

    def merge(self, other: dict[str, Any]) -> None:
        self.add(**{k: int(v) for k, v in other.items() if k in self.snapshot()})

    def reset(self) -> None:
        with self._lock:
            self.received = self.lost = self.duplicated = self.recoveries = self.recovery_failed = 0

    @property
    def bad(self) -> bool:
        return self.lost > 0 or self.duplicated > 0 or self.recovery_failed > 0


class StreamTracker:
    """Per client: the newest offset seen on each channel, and the newest we published there."""

    def __init__(self, totals: Totals | None = None) -> None:
        self.totals = totals if totals is not None else Totals()
        self.last: dict[str, int] = {}
        self.epoch: dict[str, str] = {}
        self.acked: dict[str, int] = {}
        self.lost = 0
        self.duplicated = 0
        self.recovery_failed = 0

    def start(self, channel: str, offset: int, epoch: str) -> None:
        """A plain subscribe: delivery continues after `offset` (the channel's newest at subscribe)."""
        self.last[channel] = offset
        self.epoch[channel] = epoch

    def since(self, channel: str) -> dict[str, Any] | None:
        """The `since` to resubscribe with after a reconnect (None if never subscribed)."""
        if channel not in self.last:
            return None
        return {"offset": self.last[channel], "epoch": self.epoch[channel]}

    def see(self, channel: str, offset: int) -> str:
        """One publication received: "ok", "dup", "gap" (loss counted) or "untracked"."""
        last = self.last.get(channel)
        if last is None:
            return "untracked"
        self.totals.add(received=1)
        if offset == last + 1:
            self.last[channel] = offset
            return "ok"
        if offset <= last:
            self.duplicated += 1
            self.totals.add(duplicated=1)
            return "dup"
        missing = offset - last - 1
        self.lost += missing
        self.totals.add(lost=missing)
        self.last[channel] = offset
        return "gap"

    def recovered(self, channel: str, result: dict[str, Any]) -> bool:
        """A subscribe-with-since result: every publication after `since` in order, or a failure."""
        self.totals.add(recoveries=1)
        if not result.get("recovered") or result.get("epoch") != self.epoch.get(channel):
            self.recovery_failed += 1
            self.totals.add(recovery_failed=1)
            # Carry on from the channel's head so later deliveries are judged on their own.
            self.start(channel, int(result.get("offset", 0)), str(result.get("epoch", "")))
            return False
        for pub in result.get("pubs") or []:
            self.see(channel, int(pub["offset"]))
        head = int(result.get("offset", 0))
        if head > self.last[channel]:
            # The result's own head is past the last pub it carried: those were not returned.
            missing = head - self.last[channel]
            self.lost += missing
            self.totals.add(lost=missing)
            self.last[channel] = head
        return True

    def ack(self, channel: str, offset: int) -> None:
        """Our own publish was acknowledged with `offset`: we must receive it too (we subscribe first)."""
        if offset > self.acked.get(channel, 0):
            self.acked[channel] = offset

    def tail_missing(self) -> int:
        """Acknowledged publications not (yet) received; call after a short settle at the end."""
        return sum(max(0, top - self.last.get(ch, 0)) for ch, top in self.acked.items() if ch in self.last)

    def finish(self) -> int:
        """Count the tail as lost (once) and return it."""
        missing = self.tail_missing()
        if missing:
            self.lost += missing
            self.totals.add(lost=missing)
            for ch, top in self.acked.items():
                if ch in self.last:
                    self.last[ch] = max(self.last[ch], top)
        return missing
