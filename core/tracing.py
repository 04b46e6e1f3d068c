"""OpenTelemetry tracing for the hub, configured by the standard OTEL_* environment variables.

Off unless the environment asks for it: OTEL_TRACES_EXPORTER (`otlp`, `console`, `file`, or
several, comma separated; `none` is off) or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, then the exporter is `otlp`). OTEL_SDK_DISABLED=true wins.
Off, `ENABLED` is False, nothing is imported from the SDK and every hook in the hub is one
attribute read. On, the SDK itself reads the rest: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER(_ARG) (default parentbased_always_on), OTEL_BSP_* (the batch processor),
OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout; HTTP/protobuf). `file` writes one JSON object
per span to HUB_TRACES_FILE (`{pid}` in it becomes the process id; tests, local debugging).

`setup()` runs once per process, from asgi.py (so `manage.py serve`, daphne, uvicorn and
runserver all get it). The psycopg and Redis instrumentations (HUB_TRACE_DB, HUB_TRACE_REDIS,
both on by default) only ever make child spans: a query or Redis call outside a traced
operation (presence heartbeats, budget leases) records nothing.

Spans carry no user ids, message data or channel ids: the channel's namespace, counts, codes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

log = logging.getLogger("core.tracing")

ENABLED = False
_tracer: Any = None
_provider: Any = None
_setup_done = False
_lock = threading.Lock()

LINKS_MAX = 16  # links a batch span carries (the batch's other traced publications)
# W3C trace context, version 00 (a later version's first four fields read the same way).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?\Z")
TRACEPARENT_MAX = 256


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def exporters_from_env(env: Any = None) -> list[str]:
    """The exporters the environment asks for ([] = tracing off)."""
    env = os.environ if env is None else env
    if _truthy(env.get("OTEL_SDK_DISABLED"), False):
        return []
    raw = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return [] if names == ["none"] else [n for n in names if n != "none"]


def setup() -> bool:
    """Configure tracing once for this process from the environment; returns ENABLED."""
    global _setup_done
    with _lock:
        if _setup_done:
            return ENABLED
        _setup_done = True
        names = exporters_from_env()
        if not names:
            return False
        try:
            _configure(names)
        except Exception:  # tracing must never keep the hub from starting
            log.exception("tracing setup failed; tracing is off")
            return False
        return ENABLED


def _configure(names: list[str]) -> None:
    global ENABLED, _tracer, _provider
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs: dict[str, Any] = {"service.instance.id": f"{socket.gethostname()}:{os.getpid()}"}
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""):
        attrs["service.name"] = "hub"
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG): the SDK reads them when none is given.
    provider = TracerProvider(resource=Resource.create(attrs))
    for name in names:
        exporter = _exporter(name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("hub")
    ENABLED = True
    _instrument(provider)
    log.info("tracing on: exporters %s, sampler %s", ",".join(names), provider.sampler.get_description(),
             extra={"event": "tracing"})


def _exporter(name: str) -> Any:
    if name == "otlp":
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        if protocol != "http/protobuf":
            log.warning("OTLP protocol %s is not installed; using http/protobuf", protocol)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "file":
        # `{pid}` in the path: one file per process (several processes never share a file).
        path = (os.environ.get("HUB_TRACES_FILE") or "traces-{pid}.jsonl").replace("{pid}", str(os.getpid()))
        return JsonLinesExporter(path)
    log.warning("unknown trace exporter %r ignored (otlp, console, file, none)", name)
    return None


def _instrument(provider: Any) -> None:
    children = ChildOnlyTracerProvider(provider)
    if _truthy(os.environ.get("HUB_TRACE_DB"), True):
        try:
            from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

            PsycopgInstrumentor().instrument(tracer_provider=children, skip_dep_check=True)
        except Exception:
            log.exception("psycopg instrumentation failed")
    if _truthy(os.environ.get("HUB_TRACE_REDIS"), True):
        try:
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            RedisInstrumentor().instrument(tracer_provider=children, skip_dep_check=True)  # type: ignore[arg-type]
        except Exception:
            log.exception("redis instrumentation failed")


class ChildOnlyTracerProvider:
    """Hands the instrumentations tracers that only make spans inside a traced operation."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return _ChildOnlyTracer(self.provider.get_tracer(*args, **kwargs))


class _ChildOnlyTracer:
    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> Any:
        from opentelemetry import trace

        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self.tracer.start_span(name, context, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> Iterator[Any]:
        from opentelemetry import trace

        if not trace.get_current_span(context).get_span_context().is_valid:
            yield trace.INVALID_SPAN
            return
        with self.tracer.start_as_current_span(name, context, *args, **kwargs) as span:
            yield span


class JsonLinesExporter:
    """One JSON object per span, appended to a file (tests and local debugging)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = [json.dumps(span_dict(s), default=str) for s in spans]
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_dict(span: Any) -> dict[str, Any]:
    ctx = span.context
    parent = span.parent
    return {
        "name": span.name, "kind": span.kind.name, "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}", "parent_id": f"{parent.span_id:016x}" if parent else None,
        "start_ns": span.start_time, "end_ns": span.end_time, "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [{"trace_id": f"{lk.context.trace_id:032x}", "span_id": f"{lk.context.span_id:016x}"}
                  for lk in span.links],
        "service": (span.resource.attributes or {}).get("service.name"),
        "instance": (span.resource.attributes or {}).get("service.instance.id"),
    }


def force_flush(timeout_ms: int = 5000) -> None:
    if _provider is not None:
        _provider.force_flush(timeout_ms)


# --- helpers for the hub (call them only when ENABLED) ---------------------------------------

def parse_traceparent(value: object) -> Any:
    """A remote SpanContext from a client's W3C traceparent, or None (anything invalid is ignored,
    as the W3C recommendation says: the work is then traced from a new root)."""
    if type(value) is not str or len(value) > TRACEPARENT_MAX:
        return None
    m = _TRACEPARENT.match(value)
    if m is None or m.group(1) == "ff":
        return None
    if m.group(1) == "00" and len(value) != 55:
        return None  # version 00 has exactly four fields
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(m.group(4), 16) & 1))


def traceparent(ctx: Any) -> str | None:
    """The W3C traceparent of a SpanContext (None when there is none to carry)."""
    if ctx is None or not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 1:02x}"


def context_of(parent: Any) -> Any:
    """An OpenTelemetry Context whose current span is `parent` (a SpanContext), or None."""
    if parent is None:
        return None
    from opentelemetry import trace

    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def start(name: str, parent: Any = None, kind: str = "INTERNAL", attributes: dict[str, Any] | None = None,
          links: Iterable[Any] = (), use_current: bool = True) -> Any:
    """Start a span: child of `parent` (a SpanContext) if given, else of the current span."""
    from opentelemetry.trace import Link, SpanKind

    if parent is not None:
        ctx = context_of(parent)
    elif use_current:
        ctx = None
    else:
        from opentelemetry.context import Context

        ctx = Context()  # a new root whatever is current
    return _tracer.start_span(name, ctx, kind=getattr(SpanKind, kind), attributes=attributes,
                              links=[Link(lk) for lk in links] or None)


def end(span: Any, error: str | None = None) -> None:
    """End a span; `error` (a hub error code) marks it failed."""
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("hub.error", error)
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


@contextlib.contextmanager
def active(span: Any, end_on_exit: bool = True) -> Iterator[Any]:
    """Make `span` current for the block; an exception marks it failed. Ends it unless told not to."""
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=end_on_exit, record_exception=False, set_status_on_exception=True):
        yield span


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any] | None = None, kind: str = "INTERNAL") -> Iterator[Any]:
    """A child span of the current one for the block (when tracing is off: nothing at all)."""
    if not ENABLED:
        yield None
        return
    s = start(name, attributes=attributes, kind=kind)
    with active(s):
        try:
            yield s
        except BaseException as exc:
            code = getattr(exc, "code", None)
            if isinstance(code, str):  # a HubError: its code (the status says the rest)
                s.set_attribute("hub.error", code)
            raise


def current() -> Any:
    """The current span's SpanContext if it is a valid one, else None."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def attach(parent: Any) -> Any:
    """Make `parent` (a SpanContext) current until `detach(token)`."""
    from opentelemetry import context

    return context.attach(context_of(parent))


def detach(token: Any) -> None:
    if token is not None:
        from opentelemetry import context

        context.detach(token)


def batch_span(name: str, parents: Sequence[Any], attributes: dict[str, Any]) -> Any:
    """One span for a batch of work from several traces: child of the first, linked to the others
    (at most LINKS_MAX); a new root when none of them is traced."""
    # A sampled parent first: an unsampled one would leave the batch unrecorded for everyone.
    first = next((p for p in parents if p.trace_flags.sampled), parents[0]) if parents else None
    links: list[Any] = []
    if first is not None and len(parents) > 1:
        seen = {(first.trace_id, first.span_id)}
        for p in parents:
            key = (p.trace_id, p.span_id)
            if key not in seen:
                seen.add(key)
                links.append(p)
                if len(links) >= LINKS_MAX:
                    break
    return start(name, first, attributes=attributes, links=links, use_current=False)


def log_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span for the JSON logs, or None."""
    ctx = current()
    if ctx is None:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def namespace(channel: str) -> str:
    return channel.split(":", 1)[0]


def wrap_http(app: Any) -> Any:
    """The HTTP ASGI app, inside OpenTelemetry's ASGI middleware when tracing is on: a server span
    per request, its parent from the request's `traceparent` header. Health and metrics scrapes
    are left out, and static files (OTEL_PYTHON_ASGI_EXCLUDED_URLS overrides the list)."""
    if not ENABLED:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    excluded = os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS", "/healthz$,/readyz$,/metrics$,/static/")
    return OpenTelemetryMiddleware(app, excluded_urls=excluded, exclude_spans=["receive", "send"],
                                   default_span_details=http_span_details)


def http_span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Span names stay few whatever clients send: the method and the path's first segment
    ("POST /api"); the whole path is the span's url.path attribute."""
    method = str(scope.get("method") or "HTTP").upper()
    first = str(scope.get("path") or "/").lstrip("/").split("/", 1)[0]
    return f"{method} /{first[:32]}", {}


# Publish commands get their own span when the client sent a traceparent (it asked for the
# trace); the others are counted on their batch's commit span. HUB_TRACE_PUBLISHES=all gives
# every publish a span (a root when untraced): about 15 us each, plus the exporter's encoding.
PUBLISH_ALL = (os.environ.get("HUB_TRACE_PUBLISHES") or "").strip().lower() == "all"
# Every run of every periodic sweep is a trace (a few a second per process, most finding nothing);
# HUB_TRACE_SWEEPS=0 leaves them out (what a sweep does, e.g. offers.expire, is still traced).
SWEEPS = _truthy(os.environ.get("HUB_TRACE_SWEEPS"), True)


def command_context(cmd: dict[str, Any]) -> Any:
    """Attach the context a socket command runs in: the client's traceparent if it sent a valid
    one, else a new root. Returns the token for `detach`, or None when nothing had to be attached
    (the common untraced case)."""
    from opentelemetry import context

    tp = cmd.get("traceparent")
    if tp is None:
        # The socket's own context holds no span (only frames held while `connect` is admitted
        # run inside its span): the command is a root already, and costs nothing here.
        return None
    parent = parse_traceparent(tp)
    return context.attach(context_of(parent) if parent is not None else context.Context())


def publish_span(client: str, cid: int, cmd: dict[str, Any]) -> Any:
    """The span of a socket publish (ended by the writer with its reply), or None."""
    parent = parse_traceparent(cmd.get("traceparent"))
    if parent is None and not PUBLISH_ALL:
        return None
    return start("ws publish", parent, "SERVER", {"hub.client": client, "hub.command.id": cid,
                                                   "hub.namespace": namespace(str(cmd.get("channel", "")))},
                 use_current=False)


async def traced(coro: Any, name: str, attributes: dict[str, Any]) -> Any:
    """Await `coro` inside a new SERVER span (child of the current context); a HubError's code or
    an exception's type marks the span failed."""
    s = start(name, kind="SERVER", attributes=attributes)
    with active(s, end_on_exit=False):
        try:
            result = await coro
        except BaseException as exc:
            code = getattr(exc, "code", None)
            end(s, code if isinstance(code, str) else type(exc).__name__)
            raise
    end(s)
    return result


def fail(span: Any, code: str) -> None:
    """Mark a span (still open) failed with a code."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("hub.error", code)
    span.set_status(Status(StatusCode.ERROR, code))


def spanned(name: str) -> Any:
    """Decorator: run a plain function inside a child span `name` when tracing is on."""
    import functools

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if not ENABLED:
                return fn(*args, **kwargs)
            with span(name):
                return fn(*args, **kwargs)

        return inner

    return wrap


def traceparents(contexts: list[Any]) -> list[str | None] | None:
    """W3C traceparents for a run of publications' contexts (formatted once per distinct one);
    None when none has one."""
    if not any(contexts):
        return None
    out: list[str | None] = []
    last: Any = None
    last_tp: str | None = None
    for ctx in contexts:
        if ctx is not last:
            last, last_tp = ctx, traceparent(ctx)
        out.append(last_tp)
    return out if any(out) else None


def parse_traceparents(values: list[Any]) -> list[Any]:
    """The contexts of a Redis message's traceparents (parsed once per distinct value)."""
    seen: dict[Any, Any] = {}
    out = []
    for v in values:
        key = v if type(v) is str else None
        if key not in seen:
            seen[key] = parse_traceparent(v)
        out.append(seen[key])
    return out
