"""HTTP side: rpc under /api/, OpenAPI, health, server-side publish (audited)."""
from core.models import AuditLog
from tests.support import HubClient, http_json, mint, uid


def test_health_and_ready(live_hub):
    assert http_json("GET", live_hub.http + "/healthz")[0] == 200
    status, body = http_json("GET", live_hub.http + "/readyz")
    assert status == 200 and body["ok"] is True and body["checks"]["database"] is True


def test_openapi_lists_every_method(live_hub):
    from hub.rpc import REGISTRY

    status, schema = http_json("GET", live_hub.http + "/api/openapi.json")
    assert status == 200 and schema["openapi"].startswith("3.")
    for name, m in REGISTRY.items():
        if m.http:
            assert f"/api/{name}" in schema["paths"]


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
