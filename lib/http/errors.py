"""The one place mapping errors to HTTP: `{"error", "message"}` in the caller's language."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lib.errors import SlotlineError
from lib.i18n import Lang, choose_lang, localize_fields, message

logger = logging.getLogger(__name__)

LANG_COOKIE = "lang"

# Params echoed in the body besides the message (clients switch on them).
_EXPOSED_PARAMS = (
    "retry_after",
    "fields",
    "template",
    "max_bytes",
    "task_id",
    "events_url",
    "supported",
    "max_priority",
    # uploads (lib/assets/)
    "max_pages",
    "max_chars",
    "chars",
    "min_chars",
    "detected",
    # service prechecks (lib/services/prechecks.py): the input concerned, what it lacks
    "asset",
    "missing",
    "max_pending",
    "service_id",
)


# Routing errors' localized details (`errors.detail.*`), by status.
_HTTP_REASONS: dict[int, str] = {405: "method_not_allowed"}


def request_lang(request: Request) -> Lang:
    """Explicit `lang` (query, or a JSON body already parsed) → cookie → Accept-Language → en."""
    explicit = getattr(request.state, "explicit_lang", None) or request.query_params.get("lang")
    return choose_lang(
        explicit, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
    )


def error_body(code: str, lang: str, params: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of an error response.

    `fields` (a list of field errors, `lib.field_errors`) is returned with each item's
    localized `message`.
    """
    fields = params.get("fields")
    if isinstance(fields, list):
        params = {**params, "fields": localize_fields(fields, lang)}
    body: dict[str, Any] = {"error": code, "message": message(code, lang, params)}
    for name in _EXPOSED_PARAMS:
        if name in params:
            body[name] = params[name]
    return body


def error_response(exc: SlotlineError, lang: str) -> JSONResponse:
    """The response for a domain error: its status, localized body and headers."""
    # `detail` fills the `{detail}` placeholder (invalid_request); other messages ignore it.
    params = {"detail": exc.detail, **exc.params}
    return JSONResponse(
        error_body(exc.code, lang, params), status_code=exc.status, headers=exc.headers
    )


async def slotline_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette handler for every `SlotlineError`."""
    assert isinstance(exc, SlotlineError)
    if exc.status >= 500:
        logger.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.detail)
    return error_response(exc, request_lang(request))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Routing errors (unknown path, wrong method) in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    lang = request_lang(request)
    if exc.status_code == 404:
        body = error_body("not_found", lang, {})
    else:
        # Starlette's own English detail ("Method Not Allowed") stays out of the message.
        reason = _HTTP_REASONS.get(exc.status_code, "generic")
        body = error_body("invalid_request", lang, {"detail": exc.detail, "reason": reason})
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged with its traceback, answered as a localized 500."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", request_lang(request), {}), status_code=500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    SlotlineError: slotline_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
