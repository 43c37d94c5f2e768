"""Caller identity for the producer: bearer token, sign-in session cookie or signed trial
cookie; the `lang` cookie; and the cross-site check on state-changing browser requests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lib.auth import TRIAL_COOKIE, TRIAL_COOKIE_MAX_AGE_S, Identity, bearer_of, resolve_identity
from lib.errors import CrossSiteRequest, Unauthorized
from lib.http.errors import LANG_COOKIE, error_response
from lib.i18n import LANGS, choose_lang, normalize_lang

# A signed-in browser: the bearer token entered once on the sign-in page, kept in an
# HttpOnly cookie (EventSource cannot send an Authorization header).
SESSION_COOKIE = "slotline_session"
LANG_COOKIE_MAX_AGE_S = 365 * 86_400
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Source = Literal["bearer", "session", "trial"]

_STATE_KEY = "identity"
_ERROR_KEY = "identity_error"
_SOURCE_KEY = "identity_source"


def cookie_header(name: str, value: str, *, max_age: int, secure: bool, http_only: bool) -> str:
    """A `Set-Cookie` value: site-wide, `SameSite=Lax`, `Secure` on https."""
    parts = [f"{name}={value}", "Path=/", f"Max-Age={max_age}", "SameSite=Lax"]
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def is_secure(scope: Scope, request: Request) -> bool:
    """Whether the caller reached us over https (directly or through a proxy)."""
    return (
        scope.get("scheme") == "https"
        or request.headers.get("x-forwarded-proto", "").lower() == "https"
    )


def origin_verdict(origin: str | None, referer: str | None, hosts: Iterable[str]) -> bool | None:
    """Whether a request's `Origin` (else its `Referer`) names one of our `hosts`.

    Returns:
        True for one of ours, False for another site (`Origin: null` included), None when
        the request names no origin at all (not a browser, or a very old one).
    """
    named = origin if origin is not None else referer
    if named is None or not named.strip():
        return None
    netloc = urlsplit(named.strip()).netloc.lower()
    return bool(netloc) and netloc in {h.lower() for h in hosts if h}


def _applies(path: str, prefix: str) -> bool:
    return path.startswith(prefix) or path.split("/")[1] in LANGS


class IdentityMiddleware:
    """Resolve who calls `/api/…` and the pages under `/{locale}/` (no Redis involved).

    A bearer header wins; else the session cookie (the same token); else the trial cookie,
    and with none a new trial id, sent back as a signed cookie on this very response. An
    invalid token is kept as an error that `identity()` raises inside the endpoint, so it
    is answered by the one error mapping; an invalid session cookie is also cleared.

    A state-changing request (POST/PUT/PATCH/DELETE) without a bearer header is a browser's
    until shown otherwise: its `Origin` (or `Referer`) must be this site, and one that
    carries a session cookie must name its origin at all (403 `cross_site_request`). The
    cookies are `SameSite=Lax` too, so browsers do not send them on cross-site posts.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        app_secret: str,
        prefix: str = "/api/",
        app_base_url: str | None = None,
    ) -> None:
        self.app = app
        self._secret = app_secret
        self._prefix = prefix
        self._base_host = urlsplit(app_base_url).netloc if app_base_url else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _applies(scope["path"], self._prefix):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        headers = request.headers
        cookies = cookie_parser(headers.get("cookie", ""))
        set_cookies: list[str] = []
        secure = is_secure(scope, request)
        session = cookies.get(SESSION_COOKIE)
        source: Source = (
            "bearer"
            if bearer_of(headers.get("authorization")) is not None
            else ("session" if session else "trial")
        )
        if scope["method"] in UNSAFE_METHODS and source != "bearer":
            verdict = origin_verdict(
                headers.get("origin"),
                headers.get("referer"),
                (headers.get("host", ""), self._base_host),
            )
            if verdict is False or (verdict is None and source == "session"):
                refusal_lang = choose_lang(
                    request.query_params.get("lang"),
                    cookies.get(LANG_COOKIE),
                    headers.get("accept-language"),
                )
                await error_response(CrossSiteRequest("cross-site request"), refusal_lang)(
                    scope, receive, send
                )
                return
        state = scope.setdefault("state", {})
        state[_SOURCE_KEY] = source
        authorization = f"Bearer {session}" if source == "session" else headers.get("authorization")
        try:
            ident, new_trial = resolve_identity(
                self._secret, authorization, cookies.get(TRIAL_COOKIE)
            )
        except Unauthorized as exc:
            state[_ERROR_KEY] = exc
            if source == "session":
                set_cookies.append(
                    cookie_header(SESSION_COOKIE, "", max_age=0, secure=secure, http_only=True)
                )
        else:
            state[_STATE_KEY] = ident
            if new_trial is not None:
                set_cookies.append(
                    cookie_header(
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
                cookie_header(
                    LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE_S, secure=secure, http_only=False
                )
            )
        if not set_cookies:
            await self.app(scope, receive, send)
            return

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for value in set_cookies:
                    out.append("set-cookie", value)
            await send(message)

        await self.app(scope, receive, send_with_cookies)


def identity(request: Request) -> Identity:
    """The caller of an `/api/` endpoint or a page.

    Raises:
        Unauthorized: the request carried an invalid bearer token or session cookie.
    """
    state = request.scope.get("state", {})
    error = state.get(_ERROR_KEY)
    if error is not None:
        raise error
    ident = state.get(_STATE_KEY)
    if not isinstance(ident, Identity):
        raise Unauthorized("no identity resolved")
    return ident


def optional_identity(request: Request) -> Identity | None:
    """The caller, or None when its token or session is invalid (a page shows it signed out)."""
    try:
        return identity(request)
    except Unauthorized:
        return None


def identity_source(request: Request) -> Source | None:
    """How the caller proved who it is: a bearer header, the session cookie, or trial."""
    source: Source | None = request.scope.get("state", {}).get(_SOURCE_KEY)
    return source


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
