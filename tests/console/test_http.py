"""The console's HTTP side through Django's test client: the dev sign-in rule (each refusal), the
asset route (precompression, no path escapes), and who may read the coverage, providers and audit
helpers."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from console import views
from core import audit
from hub import auth, credentials
from hub.rpc import Caller
from matching.actions.zones import create_zone

LOOPBACK = {"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000"}
DEV = {"HUB_ENV": "development", "HOST": "127.0.0.1"}


def token(role: str = "admin", user: str = "ops", tenant: str = "t1") -> str:
    return auth.mint(user, role, settings.HUB_SECRET, tenant=tenant)


@pytest.fixture()
def client() -> Iterator[Client]:
    with override_settings(ROOT_URLCONF="console.urls"):
        yield Client()


def dev_post(client: Client, body: Any, content_type: str = "application/json", **extra: str) -> tuple[int, Any]:
    resp = client.post("/api/dev/token", data=json.dumps(body), content_type=content_type, **{**LOOPBACK, **extra})
    return resp.status_code, json.loads(resp.content)


def test_dev_token_on_a_loopback_development_hub(client: Client) -> None:
    with override_settings(**DEV):
        status, body = dev_post(client, {"user": "dev-ana", "role": "provider", "tenant": "acme"})
    assert status == 200, body
    claims = credentials.verify(body["token"])
    assert (claims.user, claims.role, claims.tenant) == ("dev-ana", "provider", "acme")
    assert body["expires_at_ms"] > 0


@pytest.mark.parametrize("settings_over, extra, why", [
    ({"HUB_ENV": "production", "HOST": "127.0.0.1"}, {}, "production hub"),
    ({"HUB_ENV": "test", "HOST": "127.0.0.1"}, {}, "test hub"),
    ({"HUB_ENV": "development", "HOST": "0.0.0.0"}, {}, "hub listening beyond loopback"),
    (DEV, {"REMOTE_ADDR": "10.1.2.3"}, "caller not on loopback"),
    (DEV, {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}, "through a proxy"),
    (DEV, {"HTTP_FORWARDED": "for=203.0.113.9"}, "through a proxy (Forwarded)"),
    (DEV, {"HTTP_HOST": "rebound.example:8000"}, "a page on another name (DNS rebinding)"),
])
def test_dev_token_refused_outside_loopback_development(client: Client, settings_over: dict[str, str],
                                                        extra: dict[str, str], why: str) -> None:
    with override_settings(**settings_over, ALLOWED_HOSTS=["*"]):
        status, body = dev_post(client, {"user": "mallory", "role": "admin"}, **extra)
    assert status == 403, why
    assert body["error"]["code"] == "forbidden"
    assert "token" not in body


@pytest.mark.parametrize("body, content_type", [
    ({"user": "a", "role": "service"}, "application/json"),      # service tokens are HTTP-only, not for people
    ({"user": "a b", "role": "customer"}, "application/json"),    # user id outside the allowed characters
    ({"user": "a", "role": "customer", "tenant": "x y"}, "application/json"),
    ({"user": "a", "role": "customer", "ttl": 10**9}, "application/json"),  # no say over the lifetime
    ({"user": "a", "role": "admin"}, "text/plain"),  # a simple cross-site form post is not accepted
])
def test_dev_token_bad_requests(client: Client, body: Any, content_type: str) -> None:
    with override_settings(**DEV):
        status, out = dev_post(client, body, content_type=content_type)
    assert status == 400 and out["error"]["code"] == "bad_request"


def test_dev_token_post_only(client: Client) -> None:
    with override_settings(**DEV):
        resp = client.get("/api/dev/token", **LOOPBACK)
    assert resp.status_code == 405 and resp["Allow"] == "POST"


def test_page_says_whether_dev_sign_in_is_offered(client: Client) -> None:
    if not (views.ASSETS / "app.js").is_file():
        pytest.fail("the console is not built: run `make console` (make install does)")
    with override_settings(**DEV):
        page = client.get("/console/", **LOOPBACK)
    assert page.status_code == 200 and b'"dev_sign_in": true' in page.content
    assert "default-src 'self'" in page["Content-Security-Policy"]
    with override_settings(HUB_ENV="production"):
        page = client.get("/console/", **LOOPBACK)
    assert b'"dev_sign_in": false' in page.content


def test_assets_precompressed_and_confined(client: Client) -> None:
    if not (views.ASSETS / "app.js").is_file():
        pytest.fail("the console is not built: run `make console` (make install does)")
    plain = client.get("/static/console/app.js")
    assert plain.status_code == 200 and "Content-Encoding" not in plain
    gz = client.get("/static/console/app.js", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert gz["Content-Encoding"] == "gzip" and gz["Vary"] == "Accept-Encoding"
    br = client.get("/static/console/app.js", HTTP_ACCEPT_ENCODING="gzip, br")
    assert br["Content-Encoding"] == "br"
    assert len(b"".join(br.streaming_content)) < len(b"".join(plain.streaming_content))
    for bad in ("../views.py", "chunks/../../views.py", "app.js.gz", "nope.js", "..%2fviews.py"):
        assert client.get(f"/static/console/{bad}").status_code == 404, bad


def test_coverage_by_role(client: Client) -> None:
    cat = f"c{uuid.uuid4().hex[:8]}"
    ring = [[-0.2, 51.5], [-0.1, 51.5], [-0.1, 51.55], [-0.2, 51.55], [-0.2, 51.5]]
    admin = Caller("system", "admin", "t1")  # the tokens' tenant: zones are per tenant
    on = create_zone(admin, "on", [cat], {"type": "Polygon", "coordinates": [ring]})
    off = create_zone(admin, "off", [cat], {"type": "Polygon", "coordinates": [ring]}, active=False)
    assert client.get(f"/console/api/coverage?category={cat}").status_code == 401
    svc = client.get(f"/console/api/coverage?category={cat}", HTTP_AUTHORIZATION=f"Bearer {token('service')}")
    assert svc.status_code == 403
    cust = client.get(f"/console/api/coverage?category={cat}&cells=1",
                      HTTP_AUTHORIZATION=f"Bearer {token('customer')}").json()
    assert [z["id"] for z in cust["zones"]] == [on["id"]]  # inactive zones are for admins
    assert cust["coverage"]["cells"] and all(c["zone"] == on["id"] for c in cust["coverage"]["cells"])
    adm = client.get(f"/console/api/coverage?category={cat}", HTTP_AUTHORIZATION=f"Bearer {token('admin')}").json()
    assert {z["id"] for z in adm["zones"]} == {on["id"], off["id"]}


def test_providers_and_audit_are_for_admins(client: Client) -> None:
    for path in ("/console/api/providers", "/console/api/audit"):
        assert client.get(path).status_code == 401
        for role in ("customer", "provider", "service"):
            resp = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token(role)}")
            assert resp.status_code == 403, (path, role)


def test_audit_shows_the_admins_tenant_only(client: Client) -> None:
    mark = uuid.uuid4().hex[:8]
    audit.record("ann", f"test.{mark}", "x", role="admin", tenant="t-mine")
    audit.record("bob", f"test.{mark}", "y", role="admin", tenant="t-other")
    resp = client.get("/console/api/audit?limit=200", HTTP_AUTHORIZATION=f"Bearer {token('admin', tenant='t-mine')}")
    rows = [r for r in resp.json()["rows"] if r["action"] == f"test.{mark}"]
    assert [r["actor"] for r in rows] == ["ann"]
    for bad in ("0", "201", "x"):
        resp = client.get(f"/console/api/audit?limit={bad}", HTTP_AUTHORIZATION=f"Bearer {token('admin')}")
        assert resp.status_code == 400


def test_coverage_cells_stay_bounded_for_a_large_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 3 x 3 degree square (about 66,000 km2) would be some 600,000 cells at resolution 9: the
    # overlay picks a resolution whose estimate fits the cap before filling anything.
    filled: list[int] = []
    real = views.h3.geo_to_cells
    monkeypatch.setattr(views.h3, "geo_to_cells", lambda geo, res: filled.append(res) or real(geo, res))
    ring = [[-3.0, 52.0], [0.0, 52.0], [0.0, 55.0], [-3.0, 55.0], [-3.0, 52.0]]
    out = views._cells([{"id": f"z{uuid.uuid4().hex[:8]}", "version": 1,
                         "geometry": {"type": "Polygon", "coordinates": [ring]}}])
    assert filled == [6] and out["res"] == 6
    assert 0 < len(out["cells"]) <= views.MAX_COVERAGE_CELLS
