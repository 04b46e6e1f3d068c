"""The relay core: one assist request through providers, retries, fallback and breakers, to a sink.

`run_assist(caller, prompt, context, sink)` is transport-free: the assist actions (actions.py) give
it a sink that pushes frames over a socket or one that collects the text for HTTP, tests and the
bench their own. Admission and budgets are the actions' rules, not the relay's.

Policy, in order for each provider of AI_PROVIDERS that has a key:
- its breaker open -> skip it; half-open -> this request may be the single probe (one attempt).
- an attempt fails BEFORE any token reached the user: retryable failures (connection, timeouts
  including the first-token timeout, 408, 429, 5xx, 529, a malformed chunk) are retried with
  tenacity, jittered exponential backoff, at most AI_MAX_ATTEMPTS attempts; a 429/503/529
  Retry-After is honoured exactly when it is at most AI_RETRY_AFTER_CAP_S, and a longer one moves
  on to the next provider at once instead of making the user wait.
- retries spent, 401/403 (bad key: the breaker opens at once), 404 and other provider faults ->
  fall back to the next provider.
- 400/413/422 (the request itself is invalid) -> reported to the user as bad_request, no
  fallback: the same request would be refused everywhere.
- a failure AFTER the first token -> the user gets an error push with incomplete: true. The
  relay never retries then and never splices a second provider's answer onto the first.
- an answer is complete only when the provider said so (see providers.py): a body that just ends
  is a `truncated` failure like any other, so half an answer is never presented as whole.
- the final push goes out only after the transcript row is journaled (transcripts.py).
The offline provider is used only when no real provider has a key.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from ai_assist import config, transcripts
from ai_assist.breaker import OPEN, PROBE, breakers
from ai_assist.providers import (
    AssistRequest,
    Failure,
    OfflineProvider,
    Provider,
    Usage,
    build,
    classify,
)
from core import metrics, tracing
from core.errors import BAD_REQUEST, INTERNAL, UNAVAILABLE
from hub.rpc import Caller

log = logging.getLogger("ai_assist.relay")


class Sink(Protocol):
    def delta(self, assist: str, text: str) -> None: ...

    def done(self, assist: str, provider: str, usage: dict[str, int], finish: str) -> None: ...

    def error(self, assist: str, code: str, message: str, incomplete: bool) -> None: ...


class PushSink:
    """Pushes protocol frames to a caller's socket."""

    def __init__(self, push: Callable[[dict[str, Any]], Any]) -> None:
        self.push = push

    def delta(self, assist: str, text: str) -> None:
        self.push({"push": "assist", "assist": assist, "delta": text})

    def done(self, assist: str, provider: str, usage: dict[str, int], finish: str) -> None:
        self.push({"push": "assist", "assist": assist, "done": True, "provider": provider, "usage": usage,
                   "finish": finish})

    def error(self, assist: str, code: str, message: str, incomplete: bool) -> None:
        frame: dict[str, Any] = {"push": "assist", "assist": assist, "error": {"code": code, "message": message}}
        if incomplete:
            frame["incomplete"] = True
        self.push(frame)


class CollectSink:
    """Collects the whole answer (HTTP, where there is no socket to push to)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.provider = ""
        self.usage: dict[str, int] = {}
        self.finish = ""
        self.failure: tuple[str, str, bool] | None = None

    def delta(self, assist: str, text: str) -> None:
        self.parts.append(text)

    def done(self, assist: str, provider: str, usage: dict[str, int], finish: str) -> None:
        self.provider, self.usage, self.finish = provider, usage, finish

    def error(self, assist: str, code: str, message: str, incomplete: bool) -> None:
        self.failure = (code, message, incomplete)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class AssistResult:
    assist: str
    outcome: str  # ok | error | incomplete | cancelled
    text: str = ""
    finish: str = ""  # ok only: stop | length | content_filter
    provider: str = ""
    model: str = ""
    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    error_code: str = ""
    latency_ms: int = 0
    first_token_ms: int | None = None
    transcript_written: bool = False


# --- providers in effect ----------------------------------------------------------------------

_providers: list[Provider] | None = None
_offline: OfflineProvider | None = None


def providers() -> list[Provider]:
    """The real providers with a key, in order; the offline provider only when there is none."""
    global _providers, _offline
    cfg = config.get()
    if _providers is None:
        _providers = build(cfg)
    real = [p for p in _providers if p.configured()]
    if real:
        return real
    if _offline is None:
        _offline = OfflineProvider(cfg.offline_delay_s)
    return [_offline]


def reset() -> None:
    """Re-read configuration and rebuild providers (tests; a deploy restarts the process instead)."""
    global _providers, _offline
    config.reload()
    _providers = None
    _offline = None


# --- the core ---------------------------------------------------------------------------------

class _Wait:
    """Retry-After when the provider sent one (it is at most the cap, see _retryable), else jittered backoff."""

    def __init__(self, cfg: config.AssistConfig) -> None:
        self.backoff = wait_exponential_jitter(initial=cfg.retry_base_s, max=cfg.retry_max_s,
                                               jitter=cfg.retry_base_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, Failure) and exc.retry_after_s is not None:
            return exc.retry_after_s
        return float(self.backoff(state))


class _Watchdog:
    """First-token and idle deadlines with one timer per attempt instead of one per token.

    Each token only moves `deadline`; the timer re-arms itself lazily when it fires early, and
    cancels the task when the deadline has really passed. Like asyncio.timeout, `fired` plus
    `task.uncancel()` tells that cancellation apart from a cancel coming from outside.
    """

    __slots__ = ("loop", "task", "deadline", "fired", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], deadline: float) -> None:
        self.loop = loop
        self.task = task
        self.deadline = deadline
        self.fired = False
        self.handle = loop.call_at(deadline, self._check)

    def _check(self) -> None:
        if self.loop.time() < self.deadline:
            self.handle = self.loop.call_at(self.deadline, self._check)
        else:
            self.fired = True
            self.task.cancel()

    def rearm(self, deadline: float) -> None:
        self.handle.cancel()
        self.deadline = deadline
        self.handle = self.loop.call_at(deadline, self._check)

    def stop(self) -> None:
        self.handle.cancel()


class _Run:
    def __init__(self, assist: str, req: AssistRequest, sink: Sink) -> None:
        self.assist = assist
        self.req = req
        self.sink = sink
        self.cfg = config.get()
        self.parts: list[str] = []
        self.sent = False  # a token has reached the user: no retry, no fallback from here on
        self.attempts = 0
        self.fallbacks: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self.first_token_ms: int | None = None
        self.breaker_opened = False

    def _retryable(self, exc: BaseException) -> bool:
        if not isinstance(exc, Failure) or not exc.retryable or self.sent or self.breaker_opened:
            return False
        # A Retry-After above the cap: moving to the next provider beats making the user wait.
        return exc.retry_after_s is None or exc.retry_after_s <= self.cfg.retry_after_cap_s

    async def attempt(self, p: Provider, usage: Usage, token: str) -> None:
        self.attempts += 1
        if tracing.ENABLED:
            # Each attempt (a retry is another) is a child span of its provider's span.
            with tracing.span("ai.attempt", {"ai.provider": p.name, "ai.attempt": self.attempts}) as span:
                try:
                    await self._attempt(p, usage, token)
                except Failure as f:
                    tracing.fail(span, f.kind)
                    raise
                return
        await self._attempt(p, usage, token)

    async def _attempt(self, p: Provider, usage: Usage, token: str) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        wd = _Watchdog(loop, task, loop.time() + self.cfg.first_token_timeout_s)
        agen = p.stream(self.req, usage)
        try:
            while True:
                try:
                    text = await agen.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if wd.fired and task.uncancel() == 0:  # our deadline, not a cancel from outside
                        kind = "idle_timeout" if self.sent else "first_token_timeout"
                        limit = self.cfg.idle_timeout_s if self.sent else self.cfg.first_token_timeout_s
                        raise Failure(p.name, kind, retryable=not self.sent,
                                      message=f"{p.name} sent nothing for {limit:g} s") from None
                    raise
                except Failure:
                    raise
                except Exception as exc:  # noqa: BLE001 - every SDK/transport error is classified
                    raise classify(p.name, exc) from None
                if self.sent:
                    wd.deadline = loop.time() + self.cfg.idle_timeout_s
                else:
                    wd.rearm(loop.time() + self.cfg.idle_timeout_s)  # may be earlier than the first-token one
                    self.sent = True
                    self.first_token_ms = int((time.perf_counter() - self.start) * 1000)
                self.parts.append(text)
                self.sink.delta(self.assist, text)
        except Failure as f:
            log.info("assist %s: %s attempt %d failed: %s", self.assist, p.name, self.attempts, f.kind,
                     extra={"event": "assist.attempt_failed", "code": f.kind})
            if f.counts or f.open_breaker:
                state = await breakers().failure(p.name, token, self.cfg.breaker_failures,
                                                 self.cfg.breaker_open_s, force_open=f.open_breaker)
                self.breaker_opened = state == OPEN
            raise
        finally:
            wd.stop()
            await agen.aclose()

    async def with_retries(self, p: Provider, usage: Usage, token: str, probe: bool) -> None:
        retrying = AsyncRetrying(stop=stop_after_attempt(1 if probe else self.cfg.max_attempts),
                                 wait=_Wait(self.cfg), retry=retry_if_exception(self._retryable),
                                 reraise=True)
        async for attempt in retrying:
            with attempt:
                usage.input_tokens = usage.output_tokens = 0
                usage.finish = ""
                await self.attempt(p, usage, token)


Charge = Callable[[str, str, AssistResult], Awaitable[None]]


async def run_assist(caller: Caller, prompt: str, context: list[dict[str, Any]], sink: Sink, *,
                     assist: str | None = None, room: str = "", charge: Charge | None = None) -> AssistResult:
    """Answer one request: deltas, then done or error, go to `sink`; a transcript is written.

    The final `done`/`error` reaches the sink only after the transcript row is journaled (on disk),
    so an answer the user was told about survives the process being killed right after; returns
    once the row is committed (or after COMMIT_WAIT_S, the database being slow or down). `caller`
    needs `.user` and `.tenant`. Cancelling the task stops the upstream stream (its HTTP response
    is closed) and records a cancelled transcript; nothing more is sent to the sink. `charge(user,
    tenant, result)` settles what the answer cost (ai_assist.actions.charge_answer), however it ended.
    """
    cfg = config.get()
    assist = assist or uuid.uuid4().hex
    req = AssistRequest(prompt=prompt, context=context, system=cfg.system_prompt,
                        max_tokens=cfg.max_output_tokens)
    run = _Run(assist, req, sink)
    result = AssistResult(assist=assist, outcome="error")
    usage = Usage()
    final: Callable[[], None] | None = None
    try:
        if tracing.ENABLED:
            with tracing.span("ai.assist") as span:
                final = await _answer(run, result, usage)
                span.set_attribute("ai.outcome", result.outcome)
                span.set_attribute("ai.attempts", run.attempts)
                span.set_attribute("ai.fallbacks", len(run.fallbacks))
        else:
            final = await _answer(run, result, usage)
    except asyncio.CancelledError:
        result.outcome = "cancelled"
        raise
    finally:
        result.text = "".join(run.parts)
        result.attempts, result.fallbacks, result.first_token_ms = run.attempts, run.fallbacks, run.first_token_ms
        result.latency_ms = int((time.perf_counter() - run.start) * 1000)
        for fb in run.fallbacks:
            metrics.assist_fallback(str(fb.get("provider")), str(fb.get("reason")))
        metrics.assist(result.provider or "none", result.latency_ms / 1000, fallback=bool(run.fallbacks))
        if result.outcome != "ok":
            result.usage = usage
        committed = _record(caller, room, prompt, context, result)
        if final is None:  # cancelled or failed: no final push follows
            await asyncio.shield(_settle(caller, result, committed, charge))
    try:
        final()  # only now: the row is on disk before the user hears the answer is over
    finally:
        await asyncio.shield(_settle(caller, result, committed, charge))
    return result


async def _answer(run: _Run, result: AssistResult, usage: Usage) -> Callable[[], None]:
    """Try the providers in order; fills `result` and returns the final sink call (not yet made)."""
    assist, sink, cfg = run.assist, run.sink, run.cfg
    last: Failure | None = None
    bk = breakers()
    for p in providers():
        token = uuid.uuid4().hex
        state = await bk.allow(p.name, token, probe_ttl_s=cfg.first_token_timeout_s + cfg.idle_timeout_s)
        if state == OPEN:
            run.fallbacks.append({"provider": p.name, "reason": "breaker_open"})
            if tracing.ENABLED:
                with tracing.span("ai.provider", {"ai.provider": p.name}) as span:
                    tracing.fail(span, "breaker_open")
            continue
        run.breaker_opened = False
        try:
            if tracing.ENABLED:
                # One span per provider tried: its attempts are children; a fallback marks it failed.
                with tracing.span("ai.provider", {"ai.provider": p.name, "ai.probe": state == PROBE}) as span:
                    try:
                        await run.with_retries(p, usage, token, probe=state == PROBE)
                    except Failure as f:
                        tracing.fail(span, f.kind)
                        raise
            else:
                await run.with_retries(p, usage, token, probe=state == PROBE)
        except Failure as f:
            last = f
            if run.sent:
                result.provider, result.model = p.name, p.model
                result.outcome, result.error_code = "incomplete", UNAVAILABLE
                return partial(sink.error, assist, UNAVAILABLE, f"the answer was cut off: {f.message}", True)
            if not f.fallback:
                await bk.release(p.name, token)
                result.provider, result.model = p.name, p.model
                result.error_code = BAD_REQUEST if f.kind == "bad_request" else INTERNAL
                return partial(sink.error, assist, result.error_code, f.message, False)
            await bk.release(p.name, token)  # a probe whose failure did not count gives its lock back
            run.fallbacks.append({"provider": p.name, "reason": f.kind, "status": f.status})
            continue
        except BaseException:
            await asyncio.shield(bk.release(p.name, token))
            raise
        result.outcome, result.provider, result.model, result.usage = "ok", p.name, p.model, usage
        result.finish = usage.finish
        await bk.success(p.name, token)
        return partial(sink.done, assist, p.name, usage.as_dict(), usage.finish)
    result.error_code = UNAVAILABLE
    if last is None and not run.fallbacks:
        message = "no AI provider is available"
    elif last is None:
        message = "every AI provider is temporarily switched off; retry later"
    else:
        message = f"no AI provider could answer (last: {last.message})"
    return partial(sink.error, assist, UNAVAILABLE, message, False)


def _record(caller: Caller, room: str, prompt: str, context: list[dict[str, Any]],
            result: AssistResult) -> asyncio.Future[bool]:
    """Journal the transcript row (synchronously) and queue it for the database."""
    row = transcripts.build(
        assist=result.assist, user=str(caller.user), tenant=caller.tenant, room=room,
        prompt=prompt, context=context, answer=result.text, provider=result.provider, model=result.model,
        attempts=result.attempts, fallbacks=result.fallbacks, tokens_in=result.usage.input_tokens,
        tokens_out=result.usage.output_tokens, latency_ms=result.latency_ms, first_token_ms=result.first_token_ms,
        outcome=result.outcome, error_code=result.error_code, finish=result.finish)
    result.transcript_written, committed = transcripts.record(row)
    return committed


COMMIT_WAIT_S = 5.0  # how long a finished request waits for its row's commit (it is journaled already)


async def _settle(caller: Caller, result: AssistResult, committed: asyncio.Future[bool],
                  charge: Charge | None) -> None:
    user, tenant = str(caller.user), caller.tenant
    if charge is not None:
        await charge(user, tenant, result)
    try:
        await asyncio.wait_for(asyncio.shield(committed), COMMIT_WAIT_S)
        result.transcript_written = True
    except TimeoutError:
        log.warning("assist %s: transcript not committed after %g s (journaled: %s)", result.assist,
                    COMMIT_WAIT_S, result.transcript_written)
    # Successes at DEBUG (the transcript has the details); anything else is worth a line at INFO.
    log.log(logging.DEBUG if result.outcome == "ok" else logging.INFO,
            "assist %s %s via %s in %d ms (%d attempts)", result.assist, result.outcome,
            result.provider or "-", result.latency_ms, result.attempts,
            extra={"event": "assist.finished", "user": user, "duration_ms": result.latency_ms})
