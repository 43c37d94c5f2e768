"""The page routes: locale redirects, home, sign-in and sign-out, the workbench, the queue
dashboard, assets.

Built on the first request that is not `/api/…` (`producer/web/lazy.py`).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qs

import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route, Router
from starlette.types import Receive, Scope, Send

from lib.auth import app_secret, verify_token
from lib.clock import now_ms
from lib.errors import Unauthorized
from lib.http.errors import LANG_COOKIE
from lib.i18n import LANGS, Lang, choose_lang, message
from lib.redis.port import RedisPort
from lib.settings import Settings
from lib.tasks.monitor import snapshot
from producer.identity import SESSION_COOKIE, cookie_header, is_secure, optional_identity
from producer.web.assets import Assets
from producer.web.locale import PAGES, localized, redirect_target, safe_next, split_locale
from producer.web.ops import operator_of
from producer.web.render import Renderer

logger = logging.getLogger(__name__)

SEE_OTHER = 303


def _lang_of(request: Request) -> Lang:
    lang, _ = split_locale(request.url.path)
    if lang is not None:
        return lang
    return choose_lang(
        None, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
    )


class Pages:
    """The page endpoints of one app (its settings, secret, assets and templates)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = app_secret(settings)
        self.assets = Assets()
        self.renderer = Renderer(self.assets)

    def _common(self, request: Request) -> dict[str, Any]:
        ident = optional_identity(request)
        signed_in = ident if ident is not None and ident.kind == "user" else None
        return {"user": signed_in, "operator": operator_of(request) is not None}

    async def redirect(self, request: Request) -> Response:
        """A page path without a locale → the same page in the caller's language."""
        target = redirect_target(
            request.url.path,
            request.url.query,
            cookie=request.cookies.get(LANG_COOKIE),
            accept_language=request.headers.get("accept-language"),
        )
        if target is None:
            return self.not_found_page(request)
        return RedirectResponse(
            target,
            status_code=307,
            headers={"Vary": "Cookie, Accept-Language", "Cache-Control": "no-store"},
        )

    async def locale_root(self, request: Request) -> Response:
        """`/zh` → `/zh/`."""
        lang = _lang_of(request)
        return RedirectResponse(localized(lang, "/"), status_code=307)

    async def home(self, request: Request) -> Response:
        """`/{locale}/`: what this site offers the caller."""
        lang = _lang_of(request)
        return self.renderer.page(
            request, "home.html", lang=lang, page="/", **self._common(request)
        )

    async def signin_form(self, request: Request) -> Response:
        """`GET /{locale}/signin`: enter a bearer token once."""
        lang = _lang_of(request)
        return self._signin(request, lang)

    def _signin(
        self, request: Request, lang: Lang, *, error: str = "", status: int = 200
    ) -> Response:
        next_path = safe_next(request.query_params.get("next"), "")
        return self.renderer.page(
            request,
            "signin.html",
            lang=lang,
            page="/signin",
            status_code=status,
            error=error,
            next_path=next_path,
            **self._common(request),
        )

    async def signin(self, request: Request) -> Response:
        """`POST /{locale}/signin`: check the token, keep it in the session cookie.

        The cookie is HttpOnly and SameSite=Lax, and lives as long as the token (at most
        `SESSION_MAX_AGE_S`). A wrong token shows the form again with the reason (401).
        """
        lang = _lang_of(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=8)
        token = (form.get("token") or [""])[0].strip()
        try:
            user_id = verify_token(self.secret, token)
        except Unauthorized:
            return self._signin(request, lang, error=message("unauthorized", lang), status=401)
        claims = jwt.decode(token, options={"verify_signature": False})
        max_age = min(int(claims["exp"]) - int(time.time()), self.settings.session_max_age_s)
        if max_age <= 0:
            return self._signin(request, lang, error=message("unauthorized", lang), status=401)
        default = localized(lang, "/queues" if user_id in self.settings.operators else "/")
        target = safe_next((form.get("next") or [""])[0], default)
        response = RedirectResponse(target, status_code=SEE_OTHER)
        response.headers.append(
            "set-cookie",
            cookie_header(
                SESSION_COOKIE,
                token,
                max_age=max_age,
                secure=is_secure(request.scope, request),
                http_only=True,
            ),
        )
        logger.info("session started for %s", user_id)
        return response

    async def signout(self, request: Request) -> Response:
        """`POST /{locale}/signout`: drop the session cookie."""
        lang = _lang_of(request)
        response = RedirectResponse(localized(lang, "/signin"), status_code=SEE_OTHER)
        response.headers.append(
            "set-cookie",
            cookie_header(
                SESSION_COOKIE,
                "",
                max_age=0,
                secure=is_secure(request.scope, request),
                http_only=True,
            ),
        )
        return response

    async def workbench(self, request: Request) -> Response:
        """`/{locale}/workbench`: inputs → a service, followed live; the caller's history."""
        lang = _lang_of(request)
        return self.renderer.page(
            request,
            "workbench.html",
            lang=lang,
            page="/workbench",
            namespaces=("workbench", "errors"),
            **self._common(request),
        )

    async def queues(self, request: Request) -> Response:
        """`/{locale}/queues`: the queue dashboard (operators; the not-found page otherwise)."""
        if operator_of(request) is None:
            return self.not_found_page(request)
        lang = _lang_of(request)
        redis: RedisPort = request.app.state.redis
        now = now_ms()
        data = await snapshot(redis, self.settings, now)
        return self.renderer.page(
            request,
            "queues.html",
            lang=lang,
            page="/queues",
            namespaces=("queues", "errors"),
            data=data,
            now_ms=now,
            poll_ms=self.settings.dashboard_poll_ms,
            failures_poll_ms=self.settings.dashboard_failures_poll_ms,
            **self._common(request),
        )

    def not_found_page(self, request: Request) -> Response:
        """The one not-found page (unknown paths, and pages the caller may not see)."""
        lang = _lang_of(request)
        return self.renderer.page(
            request,
            "not_found.html",
            lang=lang,
            page="/",
            status_code=404,
            **self._common(request),
        )

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The router's default: the not-found page as an ASGI app."""
        await self.not_found_page(Request(scope, receive))(scope, receive, send)

    def routes(self) -> list[BaseRoute]:
        """Every page route, under each locale, and the redirects from paths without one."""
        routes: list[BaseRoute] = [
            Route("/static/{name}", self.assets.endpoint, methods=["GET", "HEAD"]),
        ]
        for lang in LANGS:
            routes += [
                Route(f"/{lang}", self.locale_root, methods=["GET", "HEAD"]),
                Route(f"/{lang}/", self.home, methods=["GET", "HEAD"]),
                Route(f"/{lang}/workbench", self.workbench, methods=["GET", "HEAD"]),
                Route(f"/{lang}/queues", self.queues, methods=["GET", "HEAD"]),
                Route(f"/{lang}/signin", self.signin_form, methods=["GET", "HEAD"]),
                Route(f"/{lang}/signin", self.signin, methods=["POST"]),
                Route(f"/{lang}/signout", self.signout, methods=["POST"]),
            ]
        routes += [Route(path, self.redirect, methods=["GET", "HEAD"]) for path in PAGES]
        return routes


def create_pages(settings: Settings) -> Router:
    """The pages as one router (its default: the not-found page)."""
    pages = Pages(settings)
    return Router(routes=pages.routes(), default=pages.not_found)
