"""The console in a real browser (Playwright driving Debian's Chromium) against a live development
hub: a customer and a provider through chat, AI assist streaming, a call, a custom job with a bid
and its acceptance, an on-demand booking offer and its acceptance; an admin draws a zone, the
explorer shows it and match.find answers inside it.

Every test asserts that no request left 127.0.0.1 and that the page logged no errors. Screenshots
of each page go to var/console-shots/ (test artefacts; on a failure also what every page showed, see
conftest.py), and to docs/console/ as well when
HUB_CONSOLE_DOC_SHOTS=1 (how the pictures in docs/console.md are made). The first-load size, time
to interactive and chat latency are printed (run with -s), never asserted.

A missing Chromium, Playwright or built console fails these tests; they never skip.
"""
from __future__ import annotations

import os
import shutil
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from console import views
from tests.fakes.ai_upstream import FakeUpstreamServer
from tests.support import ROOT, HubServer, http_json, mint

CHROMIUM = os.environ.get("HUB_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "var" / "console-shots"
DOC_SHOTS = ROOT / "docs" / "console"
LATENCY_MESSAGES = 50
TENANT = "default"
# A square in central London serving the flows' category; the admin test draws its own elsewhere.
FLOW_CAT = f"plumbing-{uuid.uuid4().hex[:6]}"  # its own category: other tests' providers stay out
FLOW_ZONE = [[-0.16, 51.49], [-0.08, 51.49], [-0.08, 51.53], [-0.16, 51.53], [-0.16, 51.49]]
SPOT = (51.51, -0.12)

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstreamServer]:
    # The OpenAI SDK against a wire-true fake that streams slowly enough to watch, and cuts on demand.
    srv = FakeUpstreamServer(tokens=24, delay_s=0.02).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def hub(upstream: FakeUpstreamServer) -> Iterator[HubServer]:
    if not (views.ASSETS / "app.js").is_file():
        pytest.fail("the console is not built: run `make install` (npm ci, then the console build)")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: install Debian's chromium package")
    # The session's database: what other tests left there is told apart by unique names and categories.
    server = HubServer(env={"HUB_ENV": "development", "AI_PROVIDERS": "openai",
                            "OPENAI_API_KEY": "sk-console-test-0123456789abcdef",
                            "OPENAI_BASE_URL": upstream.openai_base_url,
                            "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY_FILE": "", "ANTHROPIC_API_KEY_FILE": ""})
    server.start(timeout=90)
    try:
        status, zone = http_json("POST", server.http + "/api/zones",
                                 {"name": f"Flows {FLOW_CAT}", "categories": [FLOW_CAT],
                                  "geometry": {"type": "Polygon", "coordinates": [FLOW_ZONE]}},
                                 token=mint("setup-admin", "admin", tenant=TENANT))
        assert status == 201, zone
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


class Watch:
    """A browser context's pages: every request's host, and every console error or page error."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self.urls: list[str] = []
        self.pages: list[Any] = []
        self.errors: list[str] = []
        # Chromium logs an HTTP error answer as a console error; a test names the refusals it causes.
        self.expected_status: set[int] = set()

    def attach(self, context: Any) -> None:
        def on_request(req: Any) -> None:
            host = urlsplit(req.url).hostname
            if req.url.startswith(("data:", "blob:")):
                return
            self.urls.append(req.url)
            if host != "127.0.0.1":
                self.outside.append(req.url)

        context.on("request", on_request)
        # Anything not for the hub itself is refused before it leaves, and recorded above.
        context.route(lambda url: urlsplit(url).hostname not in ("127.0.0.1", None),
                      lambda route: route.abort())
        context.on("page", lambda page: self.page(page))

    def page(self, page: Any) -> None:
        self.pages.append(page)
        page.on("console", lambda m: self.console(m.type, m.text))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def console(self, kind: str, text: str) -> None:
        if kind != "error":
            return
        if any(f"status of {s} " in text for s in self.expected_status):
            return
        self.errors.append(f"console: {text}")

    def check(self) -> None:
        assert self.outside == [], f"requests left the machine: {self.outside}"
        assert self.errors == [], f"the page logged errors: {self.errors}"


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays at the top of the picture
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("HUB_CONSOLE_DOC_SHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOC_SHOTS / f"{name}.png")


def sign_in(browser: Any, hub: HubServer, watch: Watch, user: str, role: str,
            viewport: dict[str, int] | None = None) -> Any:
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 860})
    watch.attach(context)
    page = context.new_page()
    page.goto(hub.http + "/console/")
    page.get_by_test_id("dev-user").fill(user)
    page.get_by_test_id("dev-role").select_option(role)
    page.get_by_test_id("dev-submit").click()
    page.locator("[data-testid=conn-state]", has_text="connected").wait_for(timeout=15000)
    return page


LOAD_FIGURES = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const res = performance.getEntriesByType('resource').filter((r) => !r.name.startsWith('ws'));
    const bytes = nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0);
    const mark = (name) => { const m = performance.getEntriesByName(name)[0]; return m ? m.startTime : null; };
    return {bytes, files: res.length + 1, tti: mark('console-interactive'), connected: mark('console-connected')};
}"""


def first_load(browser: Any, hub: HubServer, watch: Watch) -> None:
    """Print the first load's transferred bytes (compressed, cold cache) and time to interactive: the
    sign-in page, and a signed-in tab (token already in the tab) until its socket is connected."""
    warm = browser.new_context()  # the browser's own start-up is not the console's
    warm.new_page().goto(hub.http + "/healthz")
    warm.close()
    context = browser.new_context()
    watch.attach(context)
    page = context.new_page()
    page.goto(hub.http + "/console/")
    page.get_by_test_id("login-submit").wait_for()
    cold = page.evaluate(LOAD_FIGURES)
    shot(page, "sign-in")
    context.close()
    context = browser.new_context()
    watch.attach(context)
    probe = mint("load-probe", "customer", tenant=TENANT)
    context.add_init_script(f"if (location.protocol === 'http:') sessionStorage.setItem('hub-token', {probe!r})")
    page = context.new_page()
    page.goto(hub.http + "/console/")
    page.locator("[data-testid=conn-state]", has_text="connected").wait_for(timeout=15000)
    page.get_by_test_id("zone-map").wait_for()
    signed = page.evaluate(LOAD_FIGURES)
    context.close()
    print(f"\nconsole first load (cold cache, compressed): sign-in page {cold['bytes'] / 1024:.1f} KiB in "
          f"{cold['files']} files, interactive at {cold['tti']:.0f} ms; signed-in explorer "
          f"{signed['bytes'] / 1024:.1f} KiB in {signed['files']} files, interactive at {signed['tti']:.0f} ms, "
          f"connected at {signed['connected']:.0f} ms (from navigation start)")


def test_customer_and_provider(browser: Any, hub: HubServer, upstream: FakeUpstreamServer, watch: Watch) -> None:
    first_load(browser, hub, watch)
    tag = uuid.uuid4().hex[:6]
    ann, bob = f"ann-{tag}", f"bob-{tag}"
    cust = sign_in(browser, hub, watch, ann, "customer")
    prov = sign_in(browser, hub, watch, bob, "provider")

    # The provider goes available inside the zone (Provider page: location, categories, toggle).
    prov.get_by_test_id("nav-provider").click()
    prov.get_by_test_id("provider-lat").fill(str(SPOT[0]))
    prov.get_by_test_id("provider-lng").fill(str(SPOT[1]))
    prov.get_by_test_id("provider-categories").fill(FLOW_CAT)
    prov.get_by_test_id("availability-toggle").check()
    prov.locator("[data-testid=notice]", has_text="Available in cell").wait_for()

    # Chat: a room, messages both ways, history and presence.
    cust.get_by_test_id("nav-chat").click()
    cust.get_by_test_id("room-member").fill(bob)
    cust.get_by_test_id("room-create").click()
    cust.get_by_test_id("room-item").first.wait_for()
    prov.get_by_test_id("nav-chat").click()
    prov.get_by_test_id("room-item").first.click()
    prov.locator("[data-testid=presence]", has_text=ann).wait_for()
    cust.get_by_test_id("chat-input").fill("Hello, can you fix a leak today?")
    cust.get_by_test_id("chat-send").click()
    prov.get_by_test_id("chat-message").filter(has_text="fix a leak").wait_for(timeout=5000)
    prov.get_by_test_id("chat-input").fill("Yes, this afternoon.")
    cust.locator("[data-testid=typing]", has_text=bob).wait_for(timeout=5000)  # a signal, not stored
    prov.get_by_test_id("chat-input").press("Enter")
    cust.get_by_test_id("chat-message").filter(has_text="this afternoon").wait_for(timeout=5000)

    # Chat latency, browser to browser: submit time in one page, first appearance in the other.
    cust.evaluate("""() => { window.__sent = {};
        document.addEventListener('submit', () => { const el = document.querySelector('[data-testid=chat-input]');
            if (el) window.__sent[el.value] = Date.now(); }, true); }""")
    prov.evaluate("""() => { window.__seen = {};
        new MutationObserver(() => { for (const el of document.querySelectorAll('[data-testid=chat-message] .text')) {
            const t = el.textContent;
            if (t.startsWith('lat ') && !(t in window.__seen)) window.__seen[t] = Date.now(); } })
        .observe(document.body, {childList: true, subtree: true, characterData: true}); }""")
    for i in range(LATENCY_MESSAGES):
        cust.get_by_test_id("chat-input").fill(f"lat {i}")
        cust.get_by_test_id("chat-input").press("Enter")
        prov.get_by_test_id("chat-message").filter(has_text=f"lat {i}").last.wait_for(timeout=5000)
    sent = cust.evaluate("() => window.__sent")
    seen = prov.evaluate("() => window.__seen")
    lat = sorted(seen[k] - sent[k] for k in sent if k in seen)
    assert len(lat) == LATENCY_MESSAGES
    p95 = lat[max(0, int(len(lat) * 0.95 + 0.5) - 1)]
    print(f"chat latency browser to browser over {len(lat)} messages: p50 {statistics.median(lat):.0f} ms, "
          f"p95 {p95:.0f} ms, max {lat[-1]:.0f} ms")

    # AI assist: the answer streams in (seen partial: 30 tokens, 0.1 s apart), then says it is done.
    upstream.inject("openai", {"kind": "slow", "delay": 0.1, "tokens": 30})
    cust.get_by_test_id("assist-toggle").check()
    cust.get_by_test_id("chat-input").fill("What did we agree?")
    cust.get_by_test_id("chat-send").click()
    answer = cust.get_by_test_id("assist-answer").last
    cust.locator("[data-testid=assist-answer][data-state=streaming] .text:not(:empty)").wait_for(timeout=10000)
    partial = answer.locator(".text").inner_text()
    cust.locator("[data-testid=assist-answer][data-state=done]").wait_for(timeout=20000)
    full = answer.locator(".text").inner_text()
    assert partial and len(full) > len(partial) and full.startswith(partial[:10])
    # An answer the provider cut off mid-way says it is incomplete.
    upstream.inject("openai", {"kind": "truncate", "after": 3})
    cust.get_by_test_id("chat-input").fill("And the price?")
    cust.get_by_test_id("chat-send").click()
    cut = cust.locator("[data-testid=assist-answer][data-state=incomplete]")
    cut.wait_for(timeout=20000)
    assert "incomplete" in cut.inner_text()
    cust.get_by_test_id("assist-toggle").uncheck()
    shot(cust, "chat")

    # A call: invite, ring, accept; both see it live with its duration; then hang up.
    cust.get_by_test_id("call-start").click()
    cust.locator("[data-testid=call-state][data-state=ringing]").wait_for()
    prov.get_by_test_id("call-ring").wait_for()  # the invitee sees it ring, with the time left to answer
    prov.get_by_test_id("call-accept").click()
    cust.locator("[data-testid=call-state][data-state=active]").wait_for(timeout=5000)
    prov.locator("[data-testid=call-state][data-state=active]").wait_for(timeout=5000)
    assert prov.get_by_test_id("call-agora").count() == 1  # development credentials: token shown, no media
    # ... so the Agora Web SDK, a chunk of its own, was never fetched.
    assert not [u for u in watch.urls if "AgoraRTC" in u]
    prov.locator("[data-testid=call-duration]", has_text="00:01").wait_for(timeout=5000)
    shot(prov, "call")
    cust.get_by_test_id("call-end").click()
    prov.locator("[data-testid=call-state][data-state=ended]").wait_for(timeout=5000)

    # A custom job: posted, announced to the provider, a question answered, a bid, accepted, done.
    cust.get_by_test_id("nav-bookings").click()
    prov.get_by_test_id("nav-provider").click()
    cust.locator("#job-c option", has_text=FLOW_CAT).wait_for(state="attached")
    cust.locator("#job-c").select_option(FLOW_CAT)
    cust.locator("#bk-cat").select_option(FLOW_CAT)
    cust.get_by_test_id("job-title").fill(f"Fix the kitchen tap {tag}")
    cust.get_by_test_id("job-description").fill("Dripping since Monday.")
    cust.get_by_test_id("job-lat").fill(str(SPOT[0]))
    cust.get_by_test_id("job-lng").fill(str(SPOT[1]))
    cust.get_by_test_id("job-budget").fill("80")
    cust.get_by_test_id("job-create").click()
    cust.locator("[data-testid=notice]", has_text="1 providers told").wait_for(timeout=5000)
    feed = prov.get_by_test_id("feed-item").filter(has_text=f"kitchen tap {tag}")
    feed.get_by_test_id("ask-input").fill("Which tap brand?")
    feed.get_by_test_id("ask-send").click()
    feed.get_by_test_id("bid-amount").fill("65")
    feed.get_by_test_id("bid-note").fill("Parts included")
    feed.get_by_test_id("job-bid").click()
    job = cust.get_by_test_id("job-card").first
    job.get_by_test_id("bid-item").filter(has_text="£65.00").wait_for(timeout=5000)
    job.get_by_test_id("job-query").filter(has_text="Which tap brand?").wait_for(timeout=5000)
    job.get_by_test_id("answer-input").fill("A Grohe mixer")
    job.get_by_test_id("answer-send").click()
    job.get_by_test_id("comment-input").fill("Please ring the bell twice")
    job.get_by_test_id("comment-send").click()
    job.get_by_test_id("job-comment").filter(has_text="ring the bell").wait_for()
    shot(cust, "bookings")
    job.get_by_test_id("bid-accept").click()
    job.locator("[data-testid=job-status][data-status=accepted]").wait_for(timeout=5000)
    prov.locator("[data-testid=notice]", has_text="was accepted").wait_for(timeout=5000)
    mine = prov.get_by_test_id("job-card").first
    mine.get_by_test_id("job-start").click()
    mine.locator("[data-testid=job-status][data-status=in_progress]").wait_for(timeout=5000)
    mine.get_by_test_id("job-complete").click()
    mine.locator("[data-testid=job-status][data-status=completed]").wait_for(timeout=5000)
    job.locator("[data-testid=job-status][data-status=completed]").wait_for(timeout=5000)

    # An on-demand booking: offered to the provider (countdown), accepted, assigned to the customer.
    cust.get_by_test_id("booking-lat").fill(str(SPOT[0]))
    cust.get_by_test_id("booking-lng").fill(str(SPOT[1]))
    cust.get_by_test_id("booking-create").click()
    offer = prov.get_by_test_id("offer-item").first
    offer.get_by_test_id("offer-countdown").wait_for(timeout=5000)
    shot(prov, "provider")
    offer.get_by_test_id("offer-accept").click()
    cust.locator("[data-testid=booking-status][data-status=assigned]").wait_for(timeout=5000)
    prov.locator("[data-testid=notice]", has_text="assigned").wait_for(timeout=5000)

    # Phone-sized: the chat page still lays out and works.
    phone = sign_in(browser, hub, watch, ann, "customer", viewport={"width": 390, "height": 780})
    phone.get_by_test_id("nav-chat").click()
    phone.get_by_test_id("chat-message").filter(has_text="lat 49").wait_for(timeout=5000)
    assert phone.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(phone, "chat-phone")
    watch.check()


def test_admin_draws_a_zone_the_explorer_finds_inside(browser: Any, hub: HubServer, watch: Watch) -> None:
    tag = uuid.uuid4().hex[:6]
    cat = f"gardening{tag}"
    admin = sign_in(browser, hub, watch, f"ada-{tag}", "admin")
    admin.get_by_test_id("nav-admin").click()
    # Open the flows' zone (the map frames it), then start a new one in the same view.
    admin.get_by_test_id("zone-edit").filter(has_text=f"Flows {FLOW_CAT}").click()
    admin.get_by_test_id("zone-new").click()
    box = admin.get_by_test_id("zone-map").bounding_box()
    assert box is not None
    # A square around the map's centre, clicked corner by corner.
    for fx, fy in ((0.35, 0.3), (0.65, 0.3), (0.65, 0.7), (0.35, 0.7)):
        admin.get_by_test_id("zone-map").click(position={"x": box["width"] * fx, "y": box["height"] * fy})
    admin.get_by_test_id("zone-name").fill(f"Drawn {tag}")
    # A refusal from the API is shown as given: no categories.
    watch.expected_status = {400}
    admin.get_by_test_id("zone-save").click()
    admin.locator("[data-testid=error]", has_text="bad_request").wait_for(timeout=5000)
    watch.expected_status = set()
    admin.get_by_test_id("zone-categories").fill(cat)
    admin.get_by_test_id("zone-save").click()
    admin.locator("[data-testid=zone-notice]", has_text=f"Saved zone Drawn {tag}").wait_for(timeout=5000)
    admin.locator(f"[data-testid=zone-shape][data-name='Drawn {tag}']").wait_for()
    admin.locator("[data-testid=audit-row]", has_text="zones.create").first.wait_for(timeout=10000)
    admin.locator("[data-testid=metric-sockets]:not(:text('—'))").wait_for(timeout=10000)
    admin.locator("[data-testid=metric-deliveries]:not(:text('—'))").wait_for(timeout=10000)  # a second sample
    shot(admin, "admin")

    # A provider available at the drawn zone's centre (over HTTP, as a provider app would).
    status, zones = http_json("GET", hub.http + f"/api/zones?category={cat}", token=mint("x", "admin", tenant=TENANT))
    ring = zones["zones"][0]["geometry"]["coordinates"][0]
    lat = sum(p[1] for p in ring[:4]) / 4
    lng = sum(p[0] for p in ring[:4]) / 4
    status, body = http_json("POST", hub.http + "/api/providers.update",
                             {"lat": lat, "lng": lng, "available": True, "categories": [cat]},
                             token=mint(f"gus-{tag}", "provider", tenant=TENANT))
    assert status == 200, body

    # The explorer (a customer's) shows the zone, and a click inside it finds that provider.
    cust = sign_in(browser, hub, watch, f"cleo-{tag}", "customer")
    cust.get_by_test_id("nav-explorer").click()
    cust.get_by_test_id("category-filter").select_option(cat)
    shape = cust.locator(f"[data-testid=zone-shape][data-name='Drawn {tag}']")
    shape.wait_for(timeout=5000)
    cust.get_by_test_id("h3-toggle").check()
    cust.get_by_test_id("h3-cell").first.wait_for()
    sbox = shape.bounding_box()
    mbox = cust.get_by_test_id("zone-map").bounding_box()
    assert sbox is not None and mbox is not None
    cust.get_by_test_id("zone-map").click(position={
        "x": sbox["x"] - mbox["x"] + sbox["width"] / 2, "y": sbox["y"] - mbox["y"] + sbox["height"] / 2})
    cust.get_by_test_id("match-result").filter(has_text=f"gus-{tag}").wait_for(timeout=5000)
    shot(cust, "explorer")
    # The admin's explorer also shows available providers where they are, live.
    admin.get_by_test_id("nav-explorer").click()
    admin.get_by_test_id("category-filter").select_option(cat)
    admin.get_by_test_id("provider-dot").first.wait_for(timeout=10000)
    watch.check()
