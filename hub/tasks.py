"""Periodic work every hub process runs: domain sweeps (offer expiry, missed calls) registered
by the apps. Sweeps must be idempotent and safe to run in several processes at once."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hub.rpc import run_sync

if TYPE_CHECKING:
    from hub.engine import Engine

log = logging.getLogger("hub.tasks")
SWEEPS: list[tuple[str, float, Callable[[float], object]]] = []


def every(seconds: float, name: str) -> Callable[[Callable[[float], object]], Callable[[float], object]]:
    """Register `fn(now)` (sync, may use the ORM) to run every `seconds` in each hub process."""
    def register(fn: Callable[[float], object]) -> Callable[[float], object]:
        SWEEPS.append((name, seconds, fn))
        return fn
    return register


def start(engine: Engine) -> None:
    for name, seconds, fn in SWEEPS:
        engine.loop.create_task(_loop(engine, name, seconds, fn))


async def _loop(engine: Engine, name: str, seconds: float, fn: Callable[[float], object]) -> None:
    while not engine.draining:
        try:
            await run_sync(fn, time.time())
        except Exception:
            log.exception("sweep %s failed", name)
        await asyncio.sleep(seconds)
