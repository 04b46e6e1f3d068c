"""The delivery worker: in every hub process, sends due outbox rows through each platform's
provider with bounded concurrency, retries with backoff honouring Retry-After, dead letters with
reasons, removes unregistered devices, and never sends after a push's expiry.

Before sending, a user with a foreground socket on any process (hub.engine.foreground_users) is
skipped: the event reached them there. A commit that adds rows wakes this process's worker at
once; every NOTIFY_POLL_S it also looks for due rows (retries, other processes', a dead process's).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings

from core import metrics, tracing
from hub import engine as hub_engine
from hub.rpc import run_sync
from notify import actions, delivery
from notify.delivery import Done, Job
from notify.models import OutboxState
from notify.providers.base import Outcome, Provider, Result

if TYPE_CHECKING:
    from hub.engine import Engine

log = logging.getLogger("notify.worker")


def providers() -> dict[str, Provider]:
    """One provider per configured platform: web here, android (FCM) and ios (APNs) when configured."""
    from notify.providers import apns, fcm, webpush  # their crypto loads only in processes that push

    out: dict[str, Provider] = {}
    for platform, module in (("web", webpush), ("android", fcm), ("ios", apns)):
        try:
            provider = module.from_settings()
        except Exception:
            log.exception("push provider %s is misconfigured; %s pushes are dead-lettered",
                          module.__name__.rpartition(".")[2], platform)
            continue
        if provider is not None:
            out[platform] = provider
    return out


def backoff_s(attempts: int) -> float:
    base = settings.NOTIFY_BACKOFF_S * (2 ** max(0, attempts - 1))
    return min(settings.NOTIFY_BACKOFF_MAX_S, base) * random.uniform(0.8, 1.2)


class Worker:
    def __init__(self, providers: dict[str, Provider], foreground: Any = None) -> None:
        self.providers = providers
        self.foreground = foreground or hub_engine.foreground_users
        self.wake = asyncio.Event()
        self.sem = asyncio.Semaphore(settings.NOTIFY_CONCURRENCY)
        self.room = asyncio.Event()  # set when claimed-but-unsent rows fall below the bound
        self.done: list[Done] = []
        self.flushing: asyncio.Task[None] | None = None
        self.inflight = 0
        self.stop = False

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, should_stop: Any = lambda: False) -> None:
        while not self.stop and not should_stop():
            self.wake.clear()
            claimed, asked = await self.round()
            if claimed and claimed >= asked:
                continue  # a full batch: more may be due
            try:
                await asyncio.wait_for(self.wake.wait(), settings.NOTIFY_POLL_S)
            except TimeoutError:
                pass
        await self.drain()

    async def round(self, ids: list[int] | None = None) -> tuple[int, int]:
        """Claim a batch and start sending it: (how many were claimed, how many were asked for).

        At most twice NOTIFY_CONCURRENCY claimed rows wait in this process (the rest of the outbox
        stays free for the other processes); the semaphore bounds the sends in flight."""
        while self.inflight >= 2 * settings.NOTIFY_CONCURRENCY:
            self.room.clear()
            await self.room.wait()
        asked = settings.NOTIFY_BATCH
        try:
            jobs: list[Job] = await run_sync(delivery.claim, time.time(), asked, ids)
        except Exception as exc:  # noqa: BLE001 - the database is down: the next poll retries
            log.warning("outbox claim failed (%s)", type(exc).__name__)
            await asyncio.sleep(1)
            return 0, asked
        if not jobs:
            return 0, asked
        try:
            # Keyed `<tenant>/<user>` (hub.engine.foreground_users): the same id in two tenants is two people.
            present = await self.foreground(sorted({f"{j.tenant}/{j.user}" for j in jobs}))
        except Exception:  # noqa: BLE001 - unknown presence: push (a duplicate beats a miss)
            present = set()
        loop = asyncio.get_running_loop()
        for job in jobs:
            if f"{job.tenant}/{job.user}" in present:
                metrics.push(job.platform, "socket")
                self._finish(Done(job, OutboxState.SOCKET))
                continue
            self.inflight += 1
            loop.create_task(self._send(job))
        return len(jobs), asked

    async def _send(self, job: Job) -> None:
        try:
            async with self.sem:
                self._finish(await self.attempt(job))
        finally:
            self.inflight -= 1
            if self.inflight < 2 * settings.NOTIFY_CONCURRENCY:
                self.room.set()

    async def attempt(self, job: Job) -> Done:
        now = time.time()
        if job.push.expires_at <= now:
            metrics.push(job.platform, "expired")
            return Done(job, OutboxState.EXPIRED)
        provider = self.providers.get(job.platform)
        if provider is None:
            metrics.push(job.platform, "dead")
            return Done(job, OutboxState.DEAD, reason=f"no provider configured for {job.platform}")
        t0 = time.perf_counter()
        if tracing.ENABLED:
            # A client span per attempt: platform, kind, attempt, outcome, the service's status; no ids.
            with tracing.span("notify.push", {"push.platform": job.platform, "push.kind": job.kind,
                                              "push.attempt": job.attempts}, kind="CLIENT") as span:
                result = await self._call(provider, job)
                span.set_attribute("push.outcome", result.outcome.value)
                if result.status is not None:
                    span.set_attribute("http.response.status_code", result.status)
                if result.outcome in (Outcome.FAILED, Outcome.RETRY):
                    tracing.fail(span, result.outcome.value)
        else:
            result = await self._call(provider, job)
        metrics.push_latency(job.platform, time.perf_counter() - t0)
        return self.outcome(job, result)

    async def _call(self, provider: Provider, job: Job) -> Result:
        try:
            return await asyncio.wait_for(provider.send(job.target, job.push), settings.NOTIFY_SEND_TIMEOUT_S)
        except TimeoutError:
            return Result(Outcome.RETRY, reason="timeout")
        except Exception as exc:  # noqa: BLE001 - a provider bug must not stop the worker
            log.warning("push provider %s raised %s", job.platform, type(exc).__name__)
            return Result(Outcome.RETRY, reason=f"provider error: {type(exc).__name__}")

    def outcome(self, job: Job, result: Result) -> Done:
        label = f"{result.status} {result.reason}".strip() if result.status else result.reason
        if result.outcome == Outcome.SENT:
            metrics.push(job.platform, "sent")
            return Done(job, OutboxState.SENT)
        if result.outcome == Outcome.UNREGISTERED:
            metrics.push(job.platform, "unregistered")
            return Done(job, OutboxState.DEAD, reason=f"unregistered: {label}", remove_device=True)
        if result.outcome == Outcome.FAILED:
            metrics.push(job.platform, "failed")
            metrics.push(job.platform, "dead")
            return Done(job, OutboxState.DEAD, reason=label or "failed")
        # RETRY: after the service's Retry-After when it gave one, else exponential backoff.
        metrics.push(job.platform, "retry")
        if job.attempts >= settings.NOTIFY_MAX_ATTEMPTS:
            metrics.push(job.platform, "dead")
            return Done(job, OutboxState.DEAD, reason=f"gave up after {job.attempts} attempts: {label}")
        wait = backoff_s(job.attempts)
        if result.retry_after_s is not None:
            wait = max(wait, min(result.retry_after_s, settings.NOTIFY_BACKOFF_MAX_S))
        at = time.time() + wait
        if at >= job.push.expires_at:
            metrics.push(job.platform, "expired")
            return Done(job, OutboxState.EXPIRED, reason=label)
        return Done(job, "retry", reason=label, retry_at=at)

    # --- writing outcomes in batches ------------------------------------------------------------

    def _finish(self, done: Done) -> None:
        self.done.append(done)
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self.done:
            batch, self.done = self.done, []
            try:
                await run_sync(delivery.record, batch, time.time())
            except Exception as exc:  # noqa: BLE001 - rows stay leased; they are retried after it
                log.warning("could not record %d push outcomes (%s)", len(batch), type(exc).__name__)
                await asyncio.sleep(0.5)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until every started send finished and its outcome is written."""
        deadline = time.monotonic() + timeout
        while (self.inflight or self.done or (self.flushing and not self.flushing.done())) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def drain(self, timeout: float = 5.0) -> None:
        await self.settle(timeout)
        for p in self.providers.values():
            try:
                await p.aclose()
            except Exception:  # noqa: BLE001
                pass


_worker: Worker | None = None


def current() -> Worker | None:
    return _worker


async def run_worker(engine: Engine) -> None:
    global _worker
    if not settings.NOTIFY_WORKER:
        await asyncio.sleep(3600 * 24 * 365)
        return
    loop = engine.loop
    worker = _worker = Worker(providers())
    actions.on_wake(lambda: loop.call_soon_threadsafe(worker.wake.set))
    log.info("push delivery: %s", ", ".join(sorted(worker.providers)) or "no provider configured")
    await worker.run(lambda: engine.draining)


def start_vapid() -> None:
    from notify import vapid

    vapid.private_key()  # development: generated now, before the first request asks for it

