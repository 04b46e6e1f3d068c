"""Per-connection command rate limit: a token bucket (rate per second, burst). No Django."""
from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> int:
        """0 when allowed, else milliseconds until one token is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, int((1.0 - self.tokens) / self.rate * 1000 + 0.999))
