"""notify.providers.base: the one Retry-After reading every provider uses."""
from __future__ import annotations

import email.utils
import time

from notify.providers.base import retry_after_seconds


def test_retry_after_as_seconds_or_an_http_date() -> None:
    assert retry_after_seconds("40") == 40.0 and retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("-3") == 0.0
    soon = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= (retry_after_seconds(soon) or 0) <= 61
    unzoned = email.utils.formatdate(time.time() + 60).rsplit(" ", 1)[0] + " -0000"  # UTC, not local time
    assert 55 <= (retry_after_seconds(unzoned) or 0) <= 61
    assert retry_after_seconds(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    for unusable in (None, "", "soon", "nan", "inf"):
        assert retry_after_seconds(unusable) is None
