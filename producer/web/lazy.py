"""The pages as an ASGI app built on first use: importing the producer loads no Jinja2."""

from __future__ import annotations

import threading

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from lib.settings import Settings


class LazyPages:
    """Every path the producer's API routes did not take: pages, assets, the 404 page.

    `/api/…` paths never build the pages (their 404 is the API's JSON one).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    def _build(self) -> ASGIApp:
        with self._lock:
            if self._app is None:
                from producer.web.pages import create_pages

                self._app = create_pages(self._settings)
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            raise HTTPException(status_code=404)
        app = self._app or self._build()
        await app(scope, receive, send)
