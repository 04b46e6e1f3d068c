"""hub.static: collected files served from STATIC_ROOT; without a collection, the apps' own files,
looked at again on each request (a rebuilt file is served whole); anything else goes on to Django."""
from __future__ import annotations

import asyncio
import gzip
from pathlib import Path
from typing import Any

from django.contrib.staticfiles import finders
from django.test import override_settings

from hub.static import StaticFiles


async def _django(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": [(b"x-from", b"django")]})
    await send({"type": "http.response.body", "body": b""})


def get(app: StaticFiles, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path,
             "headers": [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent[1:]))


def test_collected_files_are_served_with_their_gzip_variant(tmp_path: Path) -> None:
    root = tmp_path / "collected"
    (root / "admin" / "css").mkdir(parents=True)
    css = b"body { color: black; }\n" * 100
    (root / "admin" / "css" / "base.css").write_bytes(css)
    (root / "admin" / "css" / "base.css.gz").write_bytes(gzip.compress(css))
    with override_settings(STATIC_ROOT=str(root)):
        app = StaticFiles(_django)
        status, headers, body = get(app, "/static/admin/css/base.css")
        assert (status, body) == (200, css) and headers["content-type"].startswith("text/css")
        status, headers, body = get(app, "/static/admin/css/base.css", accept_encoding="gzip")
        assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == css
        # Not collected, not under STATIC_URL, or the gzip copy asked for by name: Django answers.
        assert get(app, "/static/admin/css/other.css")[1] == {"x-from": "django"}
        assert get(app, "/admin/css/base.css")[1] == {"x-from": "django"}
        assert get(app, "/static/admin/css/base.css.gz")[1] == {"x-from": "django"}


def test_without_a_collection_the_apps_files_are_served_as_they_are_now(tmp_path: Path) -> None:
    empty, own = tmp_path / "nothing-collected", tmp_path / "own"
    empty.mkdir()
    own.mkdir()
    (own / "app.css").write_bytes(b"a{}")
    finders.get_finder.cache_clear()
    try:
        with override_settings(STATIC_ROOT=str(empty), STATICFILES_DIRS=[str(own)]):
            app = StaticFiles(_django)
            assert get(app, "/static/app.css")[2] == b"a{}"
            assert get(app, "/static/admin/css/base.css")[0] == 200  # an app's own (the admin)
            (own / "app.css").write_bytes(b"a{color:red}")  # rebuilt while the process runs
            status, headers, body = get(app, "/static/app.css")
            assert (status, body, headers["content-length"]) == (200, b"a{color:red}", "12")
            (own / "app.css").unlink()
            assert get(app, "/static/app.css")[1] == {"x-from": "django"}
    finally:
        finders.get_finder.cache_clear()
