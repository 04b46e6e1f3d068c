"""AI providers behind one shape: `stream(request, usage)` yields text deltas and fills `usage`.

A stream counts as complete only on positive evidence from the provider: OpenAI, a choice with a
non-null `finish_reason`; Anthropic, `message_stop` after a `message_delta` carrying a
`stop_reason`. Both SDKs end iteration silently when the body just stops (a proxy or load balancer
timing out does that), so a stream without that evidence raises a retryable `truncated` Failure
after its last delta. A complete stream sets `usage.finish` to stop, length or content_filter.

- OpenAIProvider: chat completions streaming through the official `openai` SDK (AsyncOpenAI).
- AnthropicProvider: messages streaming through the official `anthropic` SDK (AsyncAnthropic).
- OfflineProvider: deterministic, no network; used only when no real provider is configured.

Both SDK clients are built with max_retries=0 (the relay owns retries), one client per
(event loop, key, base URL): a rotated key builds a new client, old streams finish on the old one.
`classify()` turns any SDK or transport exception into a `Failure` that carries the policy decision
(retry? fall back? open the breaker?) and a message that is safe to log and to show: it never holds
the upstream error text verbatim, which may echo part of a key.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2
import pydantic

from ai_assist.config import AssistConfig, ProviderSettings
from ai_assist.keys import KeySource

if TYPE_CHECKING:
    import anthropic
    import openai

OFFLINE = "offline"

# Why a complete answer ended (the `finish` of the done push).
STOP, LENGTH, CONTENT_FILTER = "stop", "length", "content_filter"
_OPENAI_FINISH = {"length": LENGTH, "content_filter": CONTENT_FILTER}
_ANTHROPIC_FINISH = {"max_tokens": LENGTH, "model_context_window_exceeded": LENGTH, "refusal": CONTENT_FILTER}


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    finish: str = ""  # set only once the provider confirmed the end of the answer

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass
class AssistRequest:
    prompt: str
    context: list[dict[str, Any]] = field(default_factory=list)  # [{"from", "text"}], oldest first
    system: str = ""
    max_tokens: int = 1024

    def user_text(self) -> str:
        if not self.context:
            return self.prompt
        lines = [f"{m.get('from') or 'someone'}: {m.get('text', '')}" for m in self.context]
        return ("Recent messages in this chat, oldest first:\n" + "\n".join(lines)
                + "\n\nThe user's request:\n" + self.prompt)

    def estimated_tokens(self) -> int:
        # ~4 characters a token; only for the up-front rate-limit charge (corrected after the answer).
        chars = len(self.system) + len(self.prompt) + sum(len(str(m.get("text", ""))) for m in self.context)
        return chars // 4 + 1


class Failure(Exception):
    """A provider attempt failed; the fields carry the relay's policy decision."""

    def __init__(self, provider: str, kind: str, *, status: int | None = None, retryable: bool = False,
                 fallback: bool = True, open_breaker: bool = False, counts: bool = True,
                 retry_after_s: float | None = None, message: str = "") -> None:
        super().__init__(f"{provider}: {kind}" + (f" (HTTP {status})" if status else ""))
        self.provider = provider
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.fallback = fallback
        self.open_breaker = open_breaker
        self.counts = counts  # towards the breaker's consecutive failures
        self.retry_after_s = retry_after_s
        self.message = message or str(self)


def parse_retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


_RETRYABLE_TYPES = {"overloaded_error", "api_error", "rate_limit_error", "server_error", "timeout_error"}
_AUTH_TYPES = {"authentication_error", "permission_error", "invalid_api_key"}
_BAD_REQUEST_TYPES = {"invalid_request_error", "request_too_large"}


def _body_type(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("type") or err.get("code") or "")
    return ""


def _from_status(provider: str, status: int, headers: Any, body: Any) -> Failure:
    if status in (401, 403):
        return Failure(provider, "auth", status=status, fallback=True, open_breaker=True,
                       message=f"{provider} refused the credentials")
    if status in (400, 413, 422):
        return Failure(provider, "bad_request", status=status, fallback=False, counts=False,
                       message=f"{provider} refused the request as invalid")
    if status == 408 or status == 429 or status >= 500:
        kind = {408: "timeout", 429: "rate_limited", 529: "overloaded"}.get(status, "server")
        return Failure(provider, kind, status=status, retryable=True,
                       retry_after_s=parse_retry_after(headers) if status in (429, 503, 529) else None,
                       message=f"{provider} is unavailable ({kind})")
    # 404 (unknown model), 402, 409...: this provider's setup is wrong; another may work.
    return Failure(provider, "provider_error", status=status, message=f"{provider} failed (HTTP {status})")


def sdks() -> tuple[Any, Any]:
    """The openai and anthropic SDKs. They cost ~2 s of CPU to import, so a process imports them
    when a provider has a key (at start-up, see `warm_up`), not every process and test hub."""
    import anthropic
    import openai

    return openai, anthropic


def classify(provider: str, exc: BaseException) -> Failure:
    if isinstance(exc, Failure):
        return exc
    openai, anthropic = sdks()
    if isinstance(exc, (openai.APIStatusError, anthropic.APIStatusError)):
        status = exc.status_code
        body = exc.body
        if status < 400:
            # An error event inside a 200 stream (Anthropic `event: error`): classify by its type.
            etype = _body_type(body)
            if etype in _AUTH_TYPES:
                return _from_status(provider, 401, None, body)
            if etype in _BAD_REQUEST_TYPES:
                return _from_status(provider, 400, None, body)
            kind = "overloaded" if etype == "overloaded_error" else "stream_error"
            return Failure(provider, kind, retryable=True, message=f"{provider} stream failed ({kind})")
        return _from_status(provider, status, exc.response.headers, body)
    if isinstance(exc, (openai.APITimeoutError, anthropic.APITimeoutError, httpx2.TimeoutException,
                        TimeoutError)):
        return Failure(provider, "timeout", retryable=True, message=f"{provider} timed out")
    if isinstance(exc, (openai.APIConnectionError, anthropic.APIConnectionError, httpx2.TransportError,
                        httpx2.StreamError)):
        return Failure(provider, "connection", retryable=True, message=f"{provider} connection failed")
    if isinstance(exc, (openai.APIError, anthropic.APIError)):
        # An error object inside an OpenAI stream, or another API-level failure.
        return Failure(provider, "stream_error", retryable=True, message=f"{provider} stream failed")
    if isinstance(exc, (json.JSONDecodeError, pydantic.ValidationError, ValueError, KeyError, TypeError)):
        return Failure(provider, "malformed", retryable=True, message=f"{provider} sent a malformed response")
    return Failure(provider, "error", retryable=False, message=f"{provider} failed ({type(exc).__name__})")


def truncated(provider: str) -> Failure:
    """The body ended without the provider's end marker: part of an answer, never a whole one."""
    return Failure(provider, "truncated", retryable=True,
                   message=f"{provider} ended the stream before the answer was complete")


class Provider:
    name = ""
    model = ""

    def configured(self) -> bool:
        raise NotImplementedError

    def stream(self, req: AssistRequest, usage: Usage) -> AsyncGenerator[str, None]:
        raise NotImplementedError


class _SdkProvider(Provider):
    def __init__(self, ps: ProviderSettings, cfg: AssistConfig) -> None:
        self.name = ps.name
        self.model = ps.model
        self.base_url = ps.base_url or None
        self.key = KeySource(ps.key_value, ps.key_file)
        read = max(cfg.first_token_timeout_s, cfg.idle_timeout_s) + 5  # backstop; the relay times steps
        self.timeout = httpx2.Timeout(read, connect=cfg.connect_timeout_s, pool=cfg.connect_timeout_s)
        self._clients: dict[str, tuple[asyncio.AbstractEventLoop, Any]] = {}

    def configured(self) -> bool:
        return bool(self.key.get())

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        key = self.key.get()
        if not key:
            raise Failure(self.name, "not_configured", counts=False, message=f"{self.name} has no key")
        entry = self._clients.get(key)
        if entry is None or entry[0] is not loop:
            # One client per key on this loop: a rotated key gets a fresh client (streams already open
            # finish on the old one), and a client of another (closed) loop is never reused.
            entry = (loop, self._make(key))
            self._clients = {key: entry}
        return entry[1]

    def use_client(self, client: Any) -> None:
        """Serve this loop's requests (with the current key) from `client` (bench: one shared pool)."""
        self._clients = {self.key.get(): (asyncio.get_running_loop(), client)}

    def _make(self, key: str) -> Any:
        raise NotImplementedError


class OpenAIProvider(_SdkProvider):
    def _make(self, key: str) -> openai.AsyncOpenAI:
        openai, _ = sdks()
        return openai.AsyncOpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout,
                                  organization=None, project=None)

    async def stream(self, req: AssistRequest, usage: Usage) -> AsyncGenerator[str, None]:
        messages: list[Any] = []
        if req.system:
            messages.append({"role": "system", "content": req.system})
        messages.append({"role": "user", "content": req.user_text()})
        openai, _ = sdks()
        # The SDK's own request (auth, errors, SSE decoding, error events), with each chunk left as
        # the dict it was parsed into: building a pydantic model per chunk (a token or so each) was
        # most of the relay's CPU under load.
        s = await self.client().post(
            "/chat/completions", cast_to=object, stream=True, stream_cls=openai.AsyncStream[object],
            body={"model": self.model, "messages": messages, "stream": True,
                  "stream_options": {"include_usage": True}, "max_completion_tokens": req.max_tokens})
        finish: str | None = None
        try:
            async for chunk in s:
                if not isinstance(chunk, dict):
                    continue
                counts = chunk.get("usage")
                if isinstance(counts, dict):
                    usage.input_tokens = counts.get("prompt_tokens") or 0
                    usage.output_tokens = counts.get("completion_tokens") or 0
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict):
                        continue
                    content = (choice.get("delta") or {}).get("content")
                    if content and isinstance(content, str):
                        yield content
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        finally:
            await s.close()  # closes the HTTP response: a cancelled stream frees the upstream at once
        if finish is None:
            raise truncated(self.name)
        usage.finish = _OPENAI_FINISH.get(finish, STOP)


class AnthropicProvider(_SdkProvider):
    def _make(self, key: str) -> anthropic.AsyncAnthropic:
        _, anthropic = sdks()
        return anthropic.AsyncAnthropic(api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout)

    async def stream(self, req: AssistRequest, usage: Usage) -> AsyncGenerator[str, None]:
        _, anthropic = sdks()
        body: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens, "stream": True,
                                "messages": [{"role": "user", "content": req.user_text()}]}
        if req.system:
            body["system"] = req.system
        # As for OpenAI: the SDK's request and event stream, each event the dict it was parsed into.
        s = await self.client().post("/v1/messages", cast_to=object, stream=True,
                                     stream_cls=anthropic.AsyncStream[object], body=body)
        stop_reason: str | None = None
        finish = ""
        try:
            async for event in s:
                if not isinstance(event, dict):
                    continue
                etype = event.get("type")
                if etype == "content_block_delta":
                    delta = event.get("delta") or {}
                    text = delta.get("text")
                    if delta.get("type") == "text_delta" and text and isinstance(text, str):
                        yield text
                elif etype == "message_start":
                    counts = (event.get("message") or {}).get("usage") or {}
                    usage.input_tokens = counts.get("input_tokens") or 0
                    usage.output_tokens = counts.get("output_tokens") or 0
                elif etype == "message_delta":
                    counts = event.get("usage") or {}
                    usage.output_tokens = counts.get("output_tokens") or usage.output_tokens
                    if counts.get("input_tokens"):
                        usage.input_tokens = counts["input_tokens"]
                    stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                elif etype == "message_stop":
                    if stop_reason is not None:
                        finish = _ANTHROPIC_FINISH.get(stop_reason, STOP)
                    break  # nothing of the answer follows message_stop
        finally:
            await s.close()
        if not finish:
            raise truncated(self.name)
        usage.finish = finish


class OfflineProvider(Provider):
    """A deterministic stand-in so `make run` and the demo work without keys. Never used beside real ones."""

    name = OFFLINE
    model = "offline-echo-1"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def configured(self) -> bool:
        return True

    @staticmethod
    def answer(req: AssistRequest) -> str:
        ctx = f" I was given {len(req.context)} earlier chat messages." if req.context else ""
        prompt = " ".join(req.prompt.split())[:200]
        return (f"(offline assistant: no AI provider is configured.){ctx} You asked: \u201c{prompt}\u201d. "
                "Configure OPENAI_API_KEY or ANTHROPIC_API_KEY for real answers.")

    async def stream(self, req: AssistRequest, usage: Usage) -> AsyncGenerator[str, None]:
        words = self.answer(req).split(" ")
        usage.input_tokens = req.estimated_tokens()
        for i, word in enumerate(words):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            usage.output_tokens = i + 1
            yield word if i == 0 else " " + word
        usage.finish = STOP


def build(cfg: AssistConfig) -> list[Provider]:
    """Every provider named in AI_PROVIDERS, in order (configured or not: keys may appear later)."""
    out: list[Provider] = []
    for name in cfg.providers:
        ps = cfg.provider_settings[name]
        out.append(OpenAIProvider(ps, cfg) if name == "openai" else AnthropicProvider(ps, cfg))
    return out


def warm_up() -> None:
    """Import the SDKs before the process listens when any provider has a key, so the first
    request does not pay for the import on the event loop."""
    from ai_assist import config

    cfg = config.get()
    if any(p.configured() for p in build(cfg)):
        sdks()
