"""Times on the wire are integers of milliseconds since the epoch (docs/protocol.md, "Times").

Fields that predate the rule keep their unit and gain a `<name>_ms` sibling made here.
"""
from __future__ import annotations

from datetime import datetime


def epoch_ms(when: datetime | None) -> int | None:
    """An aware datetime as whole milliseconds since the epoch; None stays None."""
    return None if when is None else int(when.timestamp() * 1000)
