"""Static files (the admin's CSS and JS) under every ASGI server, from the event loop.

WhiteNoise's file table and responses (precompressed gzip variants, ETag/Last-Modified, ranges,
cache headers) served as ASGI, ahead of Django: no Django middleware, so API requests never pay
for it. The table is built once per process from STATIC_ROOT (filled by `collectstatic`, which
`make install` runs); when nothing was collected there it is built from the apps' own static
directories instead (with the compressed copies an app ships beside its files, looked at again on
every request), so a checkout without `make install` still renders the admin.
Only files in the table are served: any other path under STATIC_URL goes on to Django (404).
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from whitenoise.base import WhiteNoise

log = logging.getLogger("hub.static")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
CHUNK = 64 * 1024


class Table:
    """url -> WhiteNoise StaticFile. Collected files never change under a running process, so their
    stat is taken once; the apps' own files may be rebuilt meanwhile (a developer's `make console`),
    so those are looked at again on every request."""

    def __init__(self) -> None:
        self.prefix = "/" + settings.STATIC_URL.strip("/") + "/"
        self.files = WhiteNoise(None, max_age=60)
        self.live: dict[str, str] = {}  # url -> path, for the apps' own files

    def get(self, url: str) -> Any:
        path = self.live.get(url)
        if path is None:
            return self.files.files.get(url)
        if not os.path.isfile(path):
            return None
        return self.files.get_static_file(path, url)


def build() -> Table:
    """The file table: STATIC_ROOT when it was collected, else the apps' static directories."""
    table = Table()
    root = settings.STATIC_ROOT
    if root and os.path.isdir(root):
        table.files.add_files(root, prefix=table.prefix)
    if not table.files.files:
        from django.contrib.staticfiles import finders

        log.warning("no collected static files in %s (run `manage.py collectstatic`; `make install` does): "
                    "serving the apps' own", root)
        for finder in finders.get_finders():
            for path, storage in finder.list(None):
                sub = getattr(storage, "prefix", None)
                url = table.prefix + (f"{sub}/" if sub else "") + path.replace(os.sep, "/")
                if not table.files.is_compressed_variant(storage.path(path)):
                    table.live.setdefault(url, storage.path(path))
    return table


class StaticFiles:
    """ASGI layer: GET/HEAD of a known file under STATIC_URL is answered here."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.prefix = "/" + settings.STATIC_URL.strip("/") + "/"
        self._files: Table | None = None
        self._lock = asyncio.Lock()

    async def files(self) -> Table:
        if self._files is None:
            async with self._lock:
                if self._files is None:
                    self._files = await asyncio.to_thread(build)  # walks directories: off the loop
        return self._files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        table = await self.files()
        static_file = table.get(scope["path"])
        if static_file is None:
            await self.app(scope, receive, send)
            return
        # WhiteNoise reads request headers in WSGI's form.
        environ = {"HTTP_" + name.decode("latin-1").upper().replace("-", "_"): value.decode("latin-1")
                   for name, value in scope.get("headers", ())}
        response = static_file.get_response(scope["method"], environ)
        await send({"type": "http.response.start", "status": int(response.status),
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]})
        body = response.file
        if body is None:
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            while True:
                chunk = await asyncio.to_thread(body.read, CHUNK)
                more = len(chunk) == CHUNK
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    break
        finally:
            body.close()
