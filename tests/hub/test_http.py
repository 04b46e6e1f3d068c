"""HTTP side: rpc under /api/, health, server-side publish (audited), 404/405, request ids."""
import json
import re
import time
import uuid

import pytest

from core.models import AuditLog
from tests.support import HubClient, http_json, mint, uid


def test_health_and_ready(live_hub):
    assert http_json("GET", live_hub.http + "/healthz")[0] == 200
    status, body = http_json("GET", live_hub.http + "/readyz")
    assert status == 200 and body["ok"] is True and body["checks"]["database"] is True


def test_rpc_over_http(live_hub):
    user = uid()
    status, body = http_json("POST", live_hub.http + "/api/rooms.create",
                             {"members": [uid()], "kind": "booking"}, token=mint(user))
    assert status == 200 and body["result"]["room"]
    assert http_json("POST", live_hub.http + "/api/rooms.create", {"members": []}, token=mint(user))[0] == 400
    assert http_json("POST", live_hub.http + "/api/rooms.create", {"members": ["a"], "kind": "booking"})[0] == 401
    assert http_json("POST", live_hub.http + "/api/rooms.create", {"members": ["a"], "kind": "booking"},
                     token="forged.token.here")[0] == 401


def test_server_side_publish_reaches_subscriber_and_is_audited(live_hub):
    user = uid()
    c = HubClient(live_hub.url, mint(user))
    c.call("subscribe", channel=f"user:{user}")
    svc = mint("billing", "service")
    status, body = http_json("POST", live_hub.http + "/api/publish",
                             {"channel": f"user:{user}", "data": {"kind": "notice"}, "key": "n1"}, token=svc)
    assert status == 200 and body["result"]["offset"] == 1
    push = c.next_push("pub", channel=f"user:{user}")
    assert push["data"] == {"kind": "notice"} and push["from"] is None
    assert AuditLog.objects.filter(action="publish.server", target=f"user:{user}").exists()
    # customers may not publish server-side
    assert http_json("POST", live_hub.http + "/api/publish", {"channel": f"user:{user}", "data": 1},
                     token=mint(user))[0] == 403
    assert http_json("POST", live_hub.http + "/api/publish", {"channel": "zzz:1", "data": 1}, token=svc)[0] == 400


def raw_request(method: str, url: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", ["/api/rooms.create", "/api/rooms.list", "/api/publish"])
def test_wrong_http_method_is_405_with_allow(live_hub, method, path):
    status, headers, body = raw_request(method, live_hub.http + path,
                                        {"Authorization": f"Bearer {mint(uid())}"})
    assert status == 405 and headers["Allow"] == "POST"
    assert json.loads(body)["error"]["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/api/no.such.method", "/api/nope/deeper", "/api/", "/api",
                                  "/api/rooms.create/"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_unknown_api_paths_are_json_404(live_hub, path, method):
    status, headers, body = raw_request(method, live_hub.http + path,
                                        {"Authorization": f"Bearer {mint(uid())}"}, b"{}" if method == "POST" else None)
    assert status == 404, (path, body[:200])
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "not_found"


def test_unknown_method_is_still_bad_request_on_the_socket(live_hub):
    c = HubClient(live_hub.url, mint(uid()))
    assert c.request("rpc", method="no.such.method")["error"]["code"] == "bad_request"


def test_unknown_path_outside_api_is_404(live_hub):
    # With a token: the per-address budget for anonymous requests is shared with other tests.
    assert raw_request("GET", live_hub.http + "/no-such-page", {"Authorization": f"Bearer {mint(uid())}"})[0] == 404


@pytest.mark.parametrize("given,kept", [("req-123_abc.DEF", True), ("x" * 64, True), ("x" * 65, False),
                                        ("has space", False), ("semi;colon", False), ("", False),
                                        ("ünï", False)])
def test_request_id_is_echoed_when_sane_else_generated(live_hub, given, kept):
    headers = {"X-Request-Id": given} if given else {}
    for path in ("/healthz", "/api/no.such.method", "/api/rooms.list"):
        status, got, _ = raw_request("POST" if "rooms" in path else "GET", live_hub.http + path,
                                     {**headers, "Authorization": f"Bearer {mint(uid())}"},
                                     b"{}" if "rooms" in path else None)
        rid = got["X-Request-Id"]
        if kept:
            assert rid == given
        else:
            assert rid != given and re.fullmatch(r"[A-Za-z0-9._-]{1,64}", rid)


def test_request_id_reaches_the_audit_row_and_each_request_is_logged(live_hub):
    rid = f"trace-{uuid.uuid4().hex}"
    user = uid()
    status, _, _ = raw_request("POST", live_hub.http + "/api/publish",
                               {"X-Request-Id": rid, "Authorization": f"Bearer {mint('ops', 'service')}",
                                "Content-Type": "application/json"},
                               json.dumps({"channel": f"user:{user}", "data": {"n": 1}}).encode())
    assert status == 200
    assert AuditLog.objects.get(action="publish.server", target=f"user:{user}").request_id == rid
    raw_request("GET", live_hub.http + "/api/rooms.list", {"X-Request-Id": rid,
                                                            "Authorization": f"Bearer {mint(uid())}"})
    deadline = time.time() + 5
    while True:
        lines = [json.loads(line) for line in live_hub.log_path.read_text(errors="replace").splitlines()
                 if line.startswith("{") and rid in line and '"event": "http"' in line]
        if len(lines) >= 2 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert [line["msg"].split()[:3] for line in lines] == [["POST", "/api/publish", "200"],
                                                          ["GET", "/api/rooms.list", "405"]]
    assert all(line["level"] == "INFO" and line["request_id"] == rid and "duration_ms" in line for line in lines)


def test_a_request_refused_before_django_still_has_a_request_id(live_hub):
    """The guard refuses an oversized body from its Content-Length alone, inside the server."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", live_hub.port, timeout=10)
    conn.putrequest("POST", "/api/rooms.list")
    conn.putheader("Content-Length", str(50 * 1024 * 1024))
    conn.putheader("X-Request-Id", "mine-1")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    rid = resp.getheader("X-Request-Id")
    assert rid and re.fullmatch(r"[A-Za-z0-9._-]{1,64}", rid)
    conn.close()
