"""Browser tests keep what the pages showed when a test fails (screenshots and text in
var/console-shots/), so a failure on a busy machine can be read afterwards."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.console_failed = report.failed  # type: ignore[attr-defined]


@pytest.fixture()
def watch(request: pytest.FixtureRequest) -> Iterator[Any]:
    from tests.console.test_browser import SHOTS, Watch

    w = Watch()
    yield w
    if getattr(request.node, "console_failed", False):
        SHOTS.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(w.pages):
            try:
                name = f"failed-{request.node.name}-{i}"
                page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
                (SHOTS / f"{name}.txt").write_text(f"{page.url}\n\n{page.inner_text('body')}")
            except Exception as exc:  # a closed page must not hide the test's own failure
                print(f"no artefact for page {i}: {exc}")
