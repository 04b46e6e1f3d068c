"""A fake OpenAI + Anthropic upstream with fault injection (tests, bench, and by hand).

    python -m tests.fakes.ai_upstream --port 8300 [--tokens 12] [--delay-ms 0]
    OPENAI_BASE_URL=http://127.0.0.1:8300/v1 ANTHROPIC_BASE_URL=http://127.0.0.1:8300 ...

Speaks, as the official SDKs expect them:
- OpenAI `POST /v1/chat/completions` with `stream: true`: SSE `data: {chat.completion.chunk}` lines,
  a usage chunk when `stream_options.include_usage`, then `data: [DONE]`; errors as
  `{"error": {"message", "type", "param", "code"}}` with the HTTP status.
- Anthropic `POST /v1/messages` with `stream: true`: message_start, content_block_start, ping,
  content_block_delta (text_delta) ..., content_block_stop, message_delta (usage), message_stop;
  errors as `{"type": "error", "error": {"type", "message"}}` (HTTP 529 = overloaded_error), and
  in-stream `event: error`.
Non-streaming requests get the whole answer as one JSON object.

The answer is deterministic: "echo" and the words of the last user message, cycled to N tokens.

Faults, applied to one request each, chosen by the `X-Fake-Fault` header (a JSON object or a bare
kind) or queued per provider with `POST /_faults {"openai": [fault, ...], "anthropic": [...]}`:
  {"kind": "429", "retry_after": 0.2}   rate limited, with Retry-After (and retry-after-ms)
  {"kind": "500"} / {"kind": "503"} / {"kind": "529"} / {"kind": "401"} / {"kind": "403"} /
  {"kind": "400"} / {"kind": "404"}      that status with the provider's JSON error body
  {"kind": "stall", "seconds": 30}       headers and preamble sent, then nothing before the first token
  {"kind": "cut", "after": 3}            the connection is dropped after 3 text chunks
  {"kind": "malformed", "after": 2}      an unparseable chunk after 2 text chunks
  {"kind": "error_event", "after": 2}    an in-stream error (Anthropic overloaded_error event)
  {"kind": "truncate", "after": 3}       the body ends cleanly after 3 text chunks with no end marker
                                         (OpenAI: no finish_reason chunk, no [DONE]; Anthropic: no
                                         message_delta/message_stop); with `after` >= tokens every
                                         token is sent and only the end marker is missing (Anthropic:
                                         message_delta with its stop_reason, but no message_stop)
  {"kind": "length", "tokens": 5}        a whole answer cut by the output limit (finish_reason
                                         "length" / stop_reason "max_tokens")
  {"kind": "filtered", "tokens": 5}      a whole answer stopped by the content filter (finish_reason
                                         "content_filter" / stop_reason "refusal")
  {"kind": "slow", "delay": 0.2}         each token delayed
  {"kind": "ok", "tokens": 50}           a normal answer of that many tokens
`POST /_config {"tokens", "delay_ms", "valid_keys": {"openai": [..]}}` changes the defaults
(with valid_keys set, any other key gets a 401 that, like the real APIs, quotes the key it got);
`GET /_stats` returns per-provider counts (requests, completed, disconnects (the client hung up),
cuts, truncated (ended cleanly without an end marker), open streams, faults applied, error statuses) and
key fingerprints (sha256 prefix, never the key); `POST /_reset` clears faults, stats and config.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

PROVIDERS = ("openai", "anthropic")


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class Disconnected(Exception):
    """The client went away (or the fake dropped the connection on purpose)."""


class _Done(Exception):
    """The stream ended on purpose after an injected in-stream error."""


class _Truncated(Exception):
    """The body ended cleanly on purpose before the end marker (a `truncate` fault)."""


# The end reason (OpenAI finish_reason, Anthropic stop_reason) of a whole answer, by fault kind.
_ENDS = {"length": ("length", "max_tokens"), "filtered": ("content_filter", "refusal")}


def _end_reason(kind: str, provider: str) -> str:
    openai_reason, anthropic_reason = _ENDS.get(kind, ("stop", "end_turn"))
    return openai_reason if provider == "openai" else anthropic_reason


class _Tally:
    """Counts one streamed answer: open while it runs, then completed, cut or disconnected."""

    def __init__(self, st: dict[str, Any]) -> None:
        self.st = st

    def __enter__(self) -> None:
        self.st["open"] += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        st = self.st
        st["open"] -= 1
        if kind is None or issubclass(kind, _Done):
            st["completed"] += 1
        elif issubclass(kind, _Cut):
            st["cuts"] += 1
        elif issubclass(kind, _Truncated):
            st["truncated"] += 1
        elif issubclass(kind, (Disconnected, asyncio.CancelledError)):
            st["disconnects"] += 1
        else:
            return False
        return True


class _Cut(Exception):
    """The fake dropped the connection on purpose (a `cut` fault)."""


def _fault(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return dict(raw)
    text = str(raw).strip()
    if text.startswith("{"):
        return dict(json.loads(text))
    return {"kind": text}


class FakeUpstream:
    def __init__(self, tokens: int = 12, delay_s: float = 0.0) -> None:
        self.default_tokens = tokens
        self.default_delay_s = delay_s
        self.tokens = tokens
        self.delay_s = delay_s
        self.valid_keys: dict[str, list[str]] = {}
        self.faults: dict[str, deque[dict[str, Any]]] = {p: deque() for p in PROVIDERS}
        self.stats: dict[str, dict[str, Any]] = {}
        self.reset()
        self.app = web.Application(client_max_size=4 * 1024 * 1024)
        self.app.router.add_post("/v1/chat/completions", self.openai)
        self.app.router.add_post("/v1/messages", self.anthropic)
        self.app.router.add_post("/_faults", self.post_faults)
        self.app.router.add_get("/_stats", self.get_stats)
        self.app.router.add_post("/_reset", self.post_reset)
        self.app.router.add_post("/_config", self.post_config)

    # --- control ------------------------------------------------------------------------------

    def reset(self) -> None:
        self.tokens, self.delay_s, self.valid_keys = self.default_tokens, self.default_delay_s, {}
        for q in self.faults.values():
            q.clear()
        self.stats = {p: {"requests": 0, "completed": 0, "disconnects": 0, "cuts": 0, "truncated": 0, "open": 0,
                          "faults": [], "status": {}, "keys": [], "models": []} for p in PROVIDERS}

    def inject(self, provider: str, *faults: Any) -> None:
        self.faults[provider].extend(_fault(f) for f in faults)

    async def post_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        for provider, faults in body.items():
            if provider not in PROVIDERS:
                return web.json_response({"error": f"unknown provider {provider}"}, status=400)
            self.inject(provider, *faults)
        return web.json_response({p: len(q) for p, q in self.faults.items()})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def post_config(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "tokens" in body:
            self.tokens = int(body["tokens"])
        if "delay_ms" in body:
            self.delay_s = float(body["delay_ms"]) / 1000
        if "valid_keys" in body:
            self.valid_keys = {p: list(v) for p, v in body["valid_keys"].items()}
        return web.json_response({"tokens": self.tokens, "delay_ms": self.delay_s * 1000})

    # --- helpers ------------------------------------------------------------------------------

    def _take_fault(self, provider: str, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("X-Fake-Fault")
        if header:
            return _fault(header)
        q = self.faults[provider]
        return q.popleft() if q else {"kind": "ok"}

    def _answer(self, text: str, n: int) -> list[str]:
        words = ("echo " + text).split() or ["echo"]
        return [(" " if i else "") + words[i % len(words)] for i in range(max(1, n))]

    @staticmethod
    def _closed(request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def _sleep(self, request: web.Request, seconds: float) -> None:
        """Sleep, but notice a client that hangs up meanwhile (the relay cancelling a stream)."""
        deadline = time.monotonic() + seconds
        while True:
            if self._closed(request):
                raise Disconnected()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    async def _write(self, request: web.Request, resp: web.StreamResponse, data: bytes) -> None:
        if self._closed(request):
            raise Disconnected()
        try:
            await resp.write(data)
        except (ConnectionError, RuntimeError) as exc:
            raise Disconnected() from exc

    def _check_key(self, provider: str, request: web.Request) -> tuple[str, bool]:
        """(key sent, whether it is refused). Either SDK may send `Authorization: Bearer` or `x-api-key`."""
        auth = request.headers.get("Authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        self.stats[provider]["keys"].append(key_fingerprint(key))
        allowed = self.valid_keys.get(provider)
        return key, allowed is not None and key not in allowed

    # --- OpenAI -------------------------------------------------------------------------------

    def _openai_error(self, status: int, fault: dict[str, Any], key: str = "") -> web.Response:
        etype, code, message = {
            400: ("invalid_request_error", None, "Invalid request: messages is malformed."),
            401: ("invalid_request_error", "invalid_api_key", f"Incorrect API key provided: {key}."),
            403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
            404: ("invalid_request_error", "model_not_found", "The model does not exist."),
            429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
        }.get(status, ("server_error", None, "The server had an error while processing your request."))
        headers = self._retry_headers(fault) if status in (429, 503, 529) else {}
        return web.json_response({"error": {"message": message, "type": etype, "param": None, "code": code}},
                                 status=status, headers=headers)

    @staticmethod
    def _retry_headers(fault: dict[str, Any]) -> dict[str, str]:
        if "retry_after" not in fault:
            return {}
        ra = float(fault["retry_after"])
        return {"retry-after": str(max(0, int(ra + 0.999))) if ra >= 1 else "0", "retry-after-ms": str(int(ra * 1000))}

    async def _begin(self, provider: str, request: web.Request,
                     error: Callable[[int, dict[str, Any], str], web.Response]
                     ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str, web.Response | None]:
        """Count the request, check the key, take this request's fault; a refusal comes back ready."""
        st = self.stats[provider]
        st["requests"] += 1
        body = await request.json()
        st["models"].append(body.get("model"))
        key, bad_key = self._check_key(provider, request)
        fault = self._take_fault(provider, request)
        kind = str(fault.get("kind", "ok"))
        if kind != "ok":
            st["faults"].append(kind)
        if bad_key:
            return st, body, fault, kind, self._status(st, error(401, fault, key))
        if kind.isdigit():
            return st, body, fault, kind, self._status(st, error(int(kind), fault, key))
        return st, body, fault, kind, None

    @staticmethod
    def _user_text(body: dict[str, Any]) -> str:
        text = ""
        for msg in body.get("messages", []):
            if msg.get("role") == "user":
                content = msg.get("content")
                text = content if isinstance(content, str) else " ".join(
                    part.get("text", "") for part in content if isinstance(part, dict))
        return text

    async def openai(self, request: web.Request) -> web.StreamResponse:
        st, body, fault, kind, refused = await self._begin("openai", request, self._openai_error)
        if refused is not None:
            return refused
        text = self._user_text(body)
        tokens = self._answer(text, int(fault.get("tokens", self.tokens)))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), body.get("model", "gpt")
        if not body.get("stream"):
            st["completed"] += 1
            return web.json_response({
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens),
                                                     "refusal": None},
                             "logprobs": None, "finish_reason": _end_reason(kind, "openai")}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                          "total_tokens": prompt_tokens + len(tokens)}})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                   "model": model, "system_fingerprint": "fp_fake", "service_tier": "default",
                                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]}
            if include_usage:
                obj["usage"] = None
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache"})
        with _Tally(st):
            await resp.prepare(request)
            await self._write(request, resp, chunk({"role": "assistant", "content": "", "refusal": None}))
            await self._stream_tokens(request, resp, fault, tokens, lambda t: chunk({"content": t}),
                                      self._openai_stream_error)
            await self._truncate_here(resp, kind)
            await self._write(request, resp, chunk({}, _end_reason(kind, "openai")))
            if include_usage:
                usage = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "system_fingerprint": "fp_fake", "service_tier": "default", "choices": [],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens),
                                   "total_tokens": prompt_tokens + len(tokens)}}
                await self._write(request, resp, b"data: " + json.dumps(usage).encode() + b"\n\n")
            await self._write(request, resp, b"data: [DONE]\n\n")
            await resp.write_eof()
        return resp

    @staticmethod
    def _openai_stream_error() -> bytes:
        err = {"error": {"message": "The server had an error while processing your request.",
                         "type": "server_error", "param": None, "code": None}}
        return b"data: " + json.dumps(err).encode() + b"\n\n"

    # --- Anthropic ----------------------------------------------------------------------------

    def _anthropic_error(self, status: int, fault: dict[str, Any], key: str = "") -> web.Response:
        etype, message = {
            400: ("invalid_request_error", "messages: field required"),
            401: ("authentication_error", f"invalid x-api-key: {key}"),
            403: ("permission_error", "Your API key does not have permission to use the specified resource."),
            404: ("not_found_error", "model: not found"),
            429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
            529: ("overloaded_error", "Overloaded"),
        }.get(status, ("api_error", "Internal server error"))
        headers = self._retry_headers(fault) if status in (429, 503, 529) else {}
        headers["request-id"] = f"req_{uuid.uuid4().hex[:24]}"
        return web.json_response({"type": "error", "error": {"type": etype, "message": message}},
                                 status=status, headers=headers)

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: ".encode() + json.dumps(data).encode() + b"\n\n"

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        st, body, fault, kind, refused = await self._begin("anthropic", request, self._anthropic_error)
        if refused is not None:
            return refused
        text = self._user_text(body)
        tokens = self._answer(text, int(fault.get("tokens", self.tokens)))
        input_tokens = len(str(body.get("system", "")).split()) + sum(
            len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        mid, model = f"msg_{uuid.uuid4().hex[:24]}", body.get("model", "claude")
        usage = {"input_tokens": input_tokens, "output_tokens": len(tokens), "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        if not body.get("stream"):
            st["completed"] += 1
            return web.json_response({
                "id": mid, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "".join(tokens)}],
                "stop_reason": _end_reason(kind, "anthropic"),
                "stop_sequence": None, "usage": usage})
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                       "Cache-Control": "no-cache",
                                                       "request-id": f"req_{uuid.uuid4().hex[:24]}"})
        ev = self._event
        with _Tally(st):
            await resp.prepare(request)
            await self._write(request, resp, ev("message_start", {"type": "message_start", "message": {
                "id": mid, "type": "message", "role": "assistant", "content": [], "model": model,
                "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}}))
            await self._write(request, resp, ev("content_block_start", {
                "type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
            await self._write(request, resp, ev("ping", {"type": "ping"}))
            await self._stream_tokens(
                request, resp, fault, tokens,
                lambda t: ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": t}}),
                lambda: ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
            await self._write(request, resp, ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
            await self._write(request, resp, ev("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": _end_reason(kind, "anthropic"), "stop_sequence": None},
                "usage": {"output_tokens": len(tokens)}}))
            await self._truncate_here(resp, kind)
            await self._write(request, resp, ev("message_stop", {"type": "message_stop"}))
            await resp.write_eof()
        return resp

    # --- shared stream body -------------------------------------------------------------------

    @staticmethod
    async def _truncate_here(resp: web.StreamResponse, kind: str) -> None:
        """For a `truncate` fault: end the body cleanly here (what a proxy timing out does)."""
        if kind == "truncate":
            await resp.write_eof()
            raise _Truncated()

    @staticmethod
    def _status(st: dict[str, Any], resp: web.Response) -> web.Response:
        key = str(resp.status)
        st["status"][key] = st["status"].get(key, 0) + 1
        return resp

    async def _stream_tokens(self, request: web.Request, resp: web.StreamResponse, fault: dict[str, Any],
                             tokens: list[str], encode: Any, stream_error: Any) -> None:
        kind = str(fault.get("kind", "ok"))
        if kind == "stall":
            await self._sleep(request, float(fault.get("seconds", 3600)))
        delay = float(fault.get("delay", self.delay_s)) if kind == "slow" else self.delay_s
        after = int(fault.get("after", 0))
        # Token i leaves at start + i * delay (an absolute schedule): a late wake-up does not push
        # every later token back, so stream lengths do not drift with this server's load.
        start = time.monotonic()
        for i, tok in enumerate(tokens):
            if i == after and kind == "cut":
                # Drop the TCP connection mid-body: the client sees an incomplete chunked response.
                if request.transport is not None:
                    request.transport.close()
                raise _Cut()
            if i == after and kind == "malformed":
                await self._write(request, resp, b'data: {"id": "broken", "choices": [{"delta": \n\n')
            if i == after and kind == "error_event":
                await self._write(request, resp, stream_error())
                await resp.write_eof()
                raise _Done()
            if i == after and kind == "truncate":
                await self._truncate_here(resp, kind)
            if delay and i:
                await self._sleep(request, start + i * delay - time.monotonic())
            await self._write(request, resp, encode(tok))


class FakeUpstreamServer:
    """Runs a FakeUpstream on its own thread and event loop (for tests in synchronous code)."""

    def __init__(self, port: int = 0, tokens: int = 12, delay_s: float = 0.0) -> None:
        self.fake = FakeUpstream(tokens=tokens, delay_s=delay_s)
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-upstream", daemon=True)
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def start(self) -> FakeUpstreamServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(self.fake.app, access_log=None, handler_cancellation=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the server's loop (thread-safe access to faults and stats)."""
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def inject(self, provider: str, *faults: Any) -> None:
        self.call(self.fake.inject, provider, *faults)

    def reset(self) -> None:
        self.call(self.fake.reset)

    def stats(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.call(lambda: self.fake.stats)))

    def configure(self, **kw: Any) -> None:
        def apply() -> None:
            if "tokens" in kw:
                self.fake.tokens = int(kw["tokens"])
            if "delay_s" in kw:
                self.fake.delay_s = float(kw["delay_s"])
            if "valid_keys" in kw:
                self.fake.valid_keys = dict(kw["valid_keys"])
        self.call(apply)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream with fault injection")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--tokens", type=int, default=12, help="tokens per answer")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay between tokens")
    args = parser.parse_args()
    fake = FakeUpstream(tokens=args.tokens, delay_s=args.delay_ms / 1000)
    print(f"fake upstream on http://{args.host}:{args.port} (OpenAI base /v1, Anthropic base /)", flush=True)
    web.run_app(fake.app, host=args.host, port=args.port, access_log=None, print=None, backlog=2048)


if __name__ == "__main__":
    main()
