"""Caller identity for the producer: bearer token or signed trial cookie, and the `lang` cookie."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import Request, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lib.auth import TRIAL_COOKIE, TRIAL_COOKIE_MAX_AGE_S, Identity, resolve_identity
from lib.errors import Unauthorized
from lib.http_errors import LANG_COOKIE
from lib.i18n import normalize_lang

_STATE_KEY = "identity"
_ERROR_KEY = "identity_error"


def _cookie(name: str, value: str, *, max_age: int, secure: bool, http_only: bool) -> str:
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "SameSite=Lax"]
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class IdentityMiddleware:
    """Resolve who calls `/api/…` (no Redis involved) and set the cookies that need setting.

    No bearer token and no valid trial cookie: a new trial id, sent back as a signed cookie
    on this very response. An explicit `?lang=` is remembered in the `lang` cookie. An
    invalid bearer token is kept as an error that `identity()` raises inside the endpoint,
    so it is answered by the one error mapping.
    """

    def __init__(self, app: ASGIApp, *, app_secret: str, prefix: str = "/api/") -> None:
        self.app = app
        self._secret = app_secret
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self._prefix):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cookies = cookie_parser(request.headers.get("cookie", ""))
        set_cookies: list[str] = []
        secure = (
            scope.get("scheme") == "https"
            or request.headers.get("x-forwarded-proto", "").lower() == "https"
        )
        state = scope.setdefault("state", {})
        try:
            ident, new_trial = resolve_identity(
                self._secret, request.headers.get("authorization"), cookies.get(TRIAL_COOKIE)
            )
        except Unauthorized as exc:
            state[_ERROR_KEY] = exc
        else:
            state[_STATE_KEY] = ident
            if new_trial is not None:
                set_cookies.append(
                    _cookie(
                        TRIAL_COOKIE,
                        new_trial,
                        max_age=TRIAL_COOKIE_MAX_AGE_S,
                        secure=secure,
                        http_only=True,
                    )
                )
        lang = normalize_lang(request.query_params.get("lang"))
        if lang is not None and cookies.get(LANG_COOKIE) != lang:
            set_cookies.append(
                _cookie(LANG_COOKIE, lang, max_age=365 * 86_400, secure=secure, http_only=False)
            )
        if not set_cookies:
            await self.app(scope, receive, send)
            return

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for value in set_cookies:
                    headers.append("set-cookie", value)
            await send(message)

        await self.app(scope, receive, send_with_cookies)


def identity(request: Request) -> Identity:
    """The caller of an `/api/` endpoint.

    Raises:
        Unauthorized: the request carried an invalid bearer token.
    """
    state = request.scope.get("state", {})
    error = state.get(_ERROR_KEY)
    if error is not None:
        raise error
    ident = state.get(_STATE_KEY)
    if not isinstance(ident, Identity):
        raise Unauthorized("no identity resolved")
    return ident


def client_address(request: Request, trusted_proxies: int) -> str:
    """The caller's address: the socket peer, or the `X-Forwarded-For` entry that the
    outermost of `trusted_proxies` proxies saw (each proxy appends the address it got the
    request from, so entries further left could be written by the client itself).

    With no trusted proxy the headers are ignored: anyone can send them.
    """
    peer = request.client.host if request.client else ""
    if trusted_proxies <= 0:
        return peer
    forwarded = [p.strip() for p in request.headers.get("x-forwarded-for", "").split(",")]
    forwarded = [p for p in forwarded if p]
    if len(forwarded) >= trusted_proxies:
        return forwarded[-trusted_proxies]
    return request.headers.get("x-real-ip", "").strip() or peer
