"""Tracing end to end: two hub processes export spans to files; one publish from a client on
process A to a subscriber on process B is one trace. Off, nothing is exported."""
from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import tracing
from tests.fakes.ai_upstream import FakeUpstreamServer
from tests.support import HubClient, HubServer, mint, uid

pytestmark = pytest.mark.services  # two processes meet through Redis


def room_for(client: HubClient) -> str:
    return "chat:" + client.rpc("rooms.create", members=[uid()], kind="booking")["room"]


def new_ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def read_spans(folder: Path) -> list[dict[str, Any]]:
    spans = []
    for path in folder.glob("spans-*.jsonl"):
        for line in path.read_text().splitlines():
            if line.strip():
                spans.append(json.loads(line))
    return spans


def wait_spans(folder: Path, trace_id: str, want: set[tuple[str, str]], timeout: float = 10
               ) -> list[dict[str, Any]]:
    """The spans of `trace_id` once every (name, instance pid) wanted has been exported."""
    deadline = time.time() + timeout
    while True:
        spans = [s for s in read_spans(folder) if s["trace_id"] == trace_id]
        have = {(s["name"], s["instance"].rsplit(":", 1)[1]) for s in spans}
        if want <= have or time.time() > deadline:
            return spans
        time.sleep(0.1)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamServer]:
    srv = FakeUpstreamServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstreamServer
           ) -> Iterator[tuple[HubServer, HubServer, Path]]:
    folder = tmp_path_factory.mktemp("spans")
    env = {"OTEL_TRACES_EXPORTER": "file", "HUB_TRACES_FILE": str(folder / "spans-{pid}.jsonl"),
           "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "hub-test",
           # AI assist against the fake upstream, retries quick: its attempts and fallbacks are traced.
           "AI_PROVIDERS": "openai,anthropic", "OPENAI_API_KEY": "sk-test-openai-" + "a1b2c3d4e5f6a7b8c9d0",
           "OPENAI_BASE_URL": upstream.openai_base_url, "ANTHROPIC_API_KEY": "sk-ant-test-" + "f0e9d8c7b6a5f4e3d2c1",
           "ANTHROPIC_BASE_URL": upstream.anthropic_base_url, "OPENAI_API_KEY_FILE": "",
           "ANTHROPIC_API_KEY_FILE": "", "AI_RETRY_BASE_S": "0.01", "AI_RETRY_MAX_S": "0.02"}
    hubs = [HubServer(env=env), HubServer(env=env)]
    failures: list[BaseException] = []

    def start(hub: HubServer) -> None:
        try:
            hub.start(timeout=90)  # a loaded machine starts two processes slowly
        except BaseException as exc:  # raised again below, in the test's thread
            failures.append(exc)

    starting = [threading.Thread(target=start, args=(h,)) for h in hubs]  # side by side: half the wait
    try:
        for t in starting:
            t.start()
        for t in starting:
            t.join()
        if failures:
            raise failures[0]
        yield hubs[0], hubs[1], folder
    finally:
        for h in hubs:
            h.stop()


def one(spans: list[dict[str, Any]], name: str, pid: int, **attrs: Any) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name and s["instance"].endswith(f":{pid}")
             and all(s["attributes"].get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, (name, pid, attrs, [(s["name"], s["instance"]) for s in spans])
    return found[0]


def test_publish_on_a_to_subscriber_on_b_is_one_trace(traced: tuple[HubServer, HubServer, Path]) -> None:
    a, b, folder = traced
    assert a.proc is not None and b.proc is not None
    pa, pb = a.proc.pid, b.proc.pid
    alice, bob = uid("alice"), uid("bob")
    pub_client = HubClient(a.url, mint(alice))
    sub_client = HubClient(b.url, mint(bob))
    # An rpc with a traceparent: the socket command's span and the method's are in the client's trace.
    rpc_trace, rpc_parent = new_ids()
    room = pub_client.call("rpc", method="rooms.create", params={"members": [bob], "kind": "booking"},
                           traceparent=f"00-{rpc_trace}-{rpc_parent}-01")["room"]
    channel = f"chat:{room}"
    sub_client.call("subscribe", channel=channel)

    trace_id, client_span = new_ids()
    text = secrets.token_hex(6)
    offset = pub_client.call("publish", channel=channel, data={"text": text},
                             traceparent=f"00-{trace_id}-{client_span}-01")["offset"]
    push = sub_client.next_push("pub", channel=channel)
    assert push["offset"] == offset

    spans = wait_spans(folder, trace_id, {("ws publish", str(pa)), ("hub.commit", str(pa)),
                                          ("hub.fanout", str(pa)), ("hub.fanout", str(pb))})
    publish = one(spans, "ws publish", pa)
    assert publish["parent_id"] == client_span and publish["kind"] == "SERVER"
    assert publish["attributes"]["hub.namespace"] == "chat"
    commit = one(spans, "hub.commit", pa)
    assert commit["parent_id"] == publish["span_id"] and commit["attributes"]["hub.batch.size"] == 1
    local = one(spans, "hub.fanout", pa)
    remote = one(spans, "hub.fanout", pb)
    # Process B's fan-out hangs under the publish on A: the context crossed Redis.
    assert local["parent_id"] == publish["span_id"] and remote["parent_id"] == publish["span_id"]
    assert remote["attributes"] == {"hub.source": "broker", "hub.publications": 1, "hub.deliveries": 1}
    # One fan-out span per process, none per delivery; nothing but these on the hot path.
    assert sum(s["name"] == "hub.fanout" for s in spans) == 2
    hub_spans = [s for s in spans if s["kind"] != "CLIENT"]
    assert sorted(s["name"] for s in hub_spans) == ["hub.commit", "hub.fanout", "hub.fanout", "ws publish"]
    # The only other spans: the first publish's permission check reads the database (within the trace).
    assert all(s["parent_id"] in (client_span, publish["span_id"]) for s in spans if s["kind"] == "CLIENT")
    assert {s["service"] for s in spans} == {"hub-test"}
    # Nothing personal in the spans: no user ids, no channel id, no message data.
    blob = json.dumps(spans)
    assert alice not in blob and bob not in blob and room not in blob and text not in blob

    rpc_spans = wait_spans(folder, rpc_trace, {("ws rpc", str(pa)), ("rpc rooms.create", str(pa))})
    ws_rpc = one(rpc_spans, "ws rpc", pa)
    assert ws_rpc["parent_id"] == rpc_parent
    method = one(rpc_spans, "rpc rooms.create", pa)
    assert method["parent_id"] == ws_rpc["span_id"]
    # The method's SQL (psycopg instrumentation) is traced under it, statements without values.
    sql = [s for s in rpc_spans if s["parent_id"] == method["span_id"] and s["kind"] == "CLIENT"]
    assert sql and all(bob not in json.dumps(s) for s in sql)


def test_http_traceparent_reaches_the_other_process(
        traced: tuple[HubServer, HubServer, Path]) -> None:
    a, b, folder = traced
    assert a.proc is not None and b.proc is not None
    bob = uid("bob")
    sub_client = HubClient(b.url, mint(bob))
    channel = f"user:{bob}"
    sub_client.call("subscribe", channel=channel)
    trace_id, parent = new_ids()
    req = urllib.request.Request(a.http + "/api/publish", method="POST",
                                 data=json.dumps({"channel": channel, "data": {"n": 1}}).encode())
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {mint('svc', role='service')}")
    req.add_header("traceparent", f"00-{trace_id}-{parent}-01")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    sub_client.next_push("pub", channel=channel)
    pa, pb = str(a.proc.pid), str(b.proc.pid)
    spans = wait_spans(folder, trace_id, {("POST /api", pa), ("hub.commit", pa), ("hub.fanout", pb)})
    server = one(spans, "POST /api", int(pa))
    assert server["parent_id"] == parent and server["kind"] == "SERVER"
    commit = one(spans, "hub.commit", int(pa))
    assert commit["parent_id"] == server["span_id"]
    assert one(spans, "hub.fanout", int(pb))["parent_id"] == server["span_id"]
    # The periodic sweeps' runs are traced too, each its own root.
    sweeps = [s for s in read_spans(folder) if s["name"] == "sweep matching.offers"]
    assert sweeps and all(s["parent_id"] is None for s in sweeps)


def test_json_logs_carry_trace_and_span_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from core.logs import ContextFilter, JsonFormatter

    record = logging.LogRecord("hub.test", logging.INFO, __file__, 1, "hello", None, None)
    ctx = tracing.parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    monkeypatch.setattr(tracing, "ENABLED", True)
    with trace.use_span(trace.NonRecordingSpan(ctx)):
        ContextFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and entry["span_id"] == "b7ad6b7169203331"
    # Outside a span (or tracing off) the fields are absent, not empty.
    plain = logging.LogRecord("hub.test", logging.INFO, __file__, 1, "hello", None, None)
    ContextFilter().filter(plain)
    assert "trace_id" not in json.loads(JsonFormatter().format(plain))


def test_ai_retries_and_fallback_are_child_spans(traced: tuple[HubServer, HubServer, Path],
                                                 upstream: FakeUpstreamServer) -> None:
    a, _b, folder = traced
    assert a.proc is not None
    pa = str(a.proc.pid)
    upstream.reset()
    upstream.inject("openai", "500", "500", "500")  # three attempts fail: the relay falls back
    c = HubClient(a.url, mint(uid()))
    trace_id, parent = new_ids()
    assist = c.call("rpc", method="assist.ask", params={"prompt": "hello"},
                    traceparent=f"00-{trace_id}-{parent}-01")["assist"]
    while not (push := c.next_push("assist", timeout=10)).get("done"):
        assert push.get("assist") == assist and "error" not in push, push
    assert push["provider"] == "anthropic"
    spans = wait_spans(folder, trace_id, {("ai.assist", pa)})
    method = one(spans, "rpc assist.ask", int(pa))
    run = one(spans, "ai.assist", int(pa))
    assert run["parent_id"] == method["span_id"]
    assert run["attributes"] == {"ai.outcome": "ok", "ai.attempts": 4, "ai.fallbacks": 1}
    first = one(spans, "ai.provider", int(pa), **{"ai.provider": "openai"})
    second = one(spans, "ai.provider", int(pa), **{"ai.provider": "anthropic"})
    assert first["parent_id"] == second["parent_id"] == run["span_id"]
    assert first["status"] == "ERROR" and first["attributes"]["hub.error"] == "server"
    assert second["status"] == "UNSET"
    tries = sorted((s for s in spans if s["name"] == "ai.attempt"), key=lambda s: s["attributes"]["ai.attempt"])
    assert [(t["parent_id"], t["attributes"]["ai.provider"]) for t in tries] == [
        (first["span_id"], "openai")] * 3 + [(second["span_id"], "anthropic")]
    assert [t["status"] for t in tries] == ["ERROR", "ERROR", "ERROR", "UNSET"]


def test_bad_traceparents_are_ignored_not_fatal(traced: tuple[HubServer, HubServer, Path]) -> None:
    """A traceparent is the client's word: anything malformed (wrong type, huge, wrong shape, zero
    ids, version ff) is ignored and the command runs untraced; the socket keeps working."""
    a, _b, folder = traced
    c = HubClient(a.url, mint(uid()))
    channel = room_for(c)
    trace_id, _ = new_ids()
    bad: list[Any] = [12345, {"x": 1}, ["00"], "00-" + "a" * 5000, f"00-{trace_id}-{'0' * 16}-01",
                      f"00-{'0' * 32}-{'1' * 16}-01", f"ff-{trace_id}-{'1' * 16}-01", f"00-{trace_id}-zz-01",
                      f"00-{trace_id}-{'1' * 16}-01-extra"]
    for value in bad:
        assert c.call("publish", channel=channel, data={"v": 1}, traceparent=value)["offset"] > 0
        assert c.call("presence", channel=channel, traceparent=value) is not None
    assert c.closed is None
    time.sleep(0.5)
    assert not [s for s in read_spans(folder) if s["trace_id"] == trace_id]


def test_traceparent_parsing() -> None:
    ok = tracing.parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert ok is not None and ok.is_remote and ok.trace_flags.sampled
    assert f"{ok.span_id:016x}" == "b7ad6b7169203331"
    assert tracing.traceparent(ok) == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    unsampled = tracing.parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    assert unsampled is not None and not unsampled.trace_flags.sampled
    # A later version may add fields after the four known ones.
    assert tracing.parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-ab") is not None
    for bad in (None, 1, b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", "x" * 300):
        assert tracing.parse_traceparent(bad) is None


def test_configuration_from_the_environment() -> None:
    assert tracing.exporters_from_env({}) == []
    assert tracing.exporters_from_env({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporters_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert tracing.exporters_from_env({"OTEL_TRACES_EXPORTER": "otlp,console"}) == ["otlp", "console"]
    assert tracing.exporters_from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []


def test_off_when_unset_no_spans_no_exporter(live_hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # This test process has no OTEL_* settings: tracing is off and the SDK was never loaded, even
    # with a file named for the spans.
    monkeypatch.setenv("HUB_TRACES_FILE", "spans-{pid}.jsonl")
    import asgi  # noqa: F401 - the entry point every server imports runs tracing.setup()

    assert tracing.setup() is False and tracing.ENABLED is False and tracing._provider is None
    assert "opentelemetry.sdk.trace" not in sys.modules
    assert tracing.exporters_from_env({"HUB_TRACES_FILE": "x"}) == []
    # A hub without them (the session's hub) takes a traceparent and just ignores it.
    c = HubClient(live_hub.url, mint(uid()))
    trace_id, parent = new_ids()
    channel = room_for(c)
    assert c.call("publish", channel=channel, data={"v": 1}, traceparent=f"00-{trace_id}-{parent}-01")["offset"] == 1
    assert c.call("subscribe", channel=channel, traceparent=f"00-{trace_id}-{parent}-01")["offset"] == 1


def test_http_span_names_stay_few_whatever_the_path() -> None:
    names = {tracing.http_span_details({"method": "GET", "path": f"/api/x{i}/{i}"})[0] for i in range(100)}
    assert names == {"GET /api"}
    assert tracing.http_span_details({"method": "POST", "path": "/"})[0] == "POST /"
    assert tracing.http_span_details({"method": "GET", "path": "/" + "a" * 500})[0] == "GET /" + "a" * 32
