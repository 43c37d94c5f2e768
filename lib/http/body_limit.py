"""Limits before work: request bodies capped per endpoint kind, worker calls must carry a signature.

`BodyLimitMiddleware` is pure ASGI and sits outside everything that reads a body:

- a rule marked `signed` (the worker's QStash endpoints) answers 401 `invalid_signature`
  when the `Upstash-Signature` header is missing, before a byte of the body is read;
- a `Content-Length` over the endpoint kind's limit is answered 413 `payload_too_large` at
  once, without reading the body;
- otherwise the body is counted while it streams (chunked requests have no length): the
  read that passes the limit raises `PayloadTooLarge`, so at most the limit is ever
  buffered and nothing has parsed it yet.

Both refusals close the connection (`Connection: close`): the rest of the body is never
read. Limits come from `Settings` (`BODY_LIMIT_<KIND>_BYTES`). A new kind (file uploads)
is one `BodyKind` member, one setting, one line in `body_limits()` and one `BodyRule`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lib.errors import InvalidSignature, PayloadTooLarge, SlotlineError
from lib.http.errors import error_response, request_lang
from lib.settings import Settings

logger = logging.getLogger(__name__)

BodyKind = Literal["default", "tasks", "upload", "worker", "callback"]

SIGNATURE_HEADER = "upstash-signature"


@dataclass(frozen=True)
class BodyRule:
    """Requests whose method is `method` and whose path matches `path` in full get `kind`.

    `signed`: the endpoint only takes QStash calls; without an `Upstash-Signature` header
    the request is refused before its body is read.
    """

    kind: BodyKind
    path: re.Pattern[str]
    method: str = "POST"
    signed: bool = False


PRODUCER_RULES: tuple[BodyRule, ...] = (
    BodyRule("tasks", re.compile(r"/api/tasks")),
    BodyRule("upload", re.compile(r"/api/upload/(?:resume|detailed-resume|jd)")),
)

WORKER_RULES: tuple[BodyRule, ...] = (
    BodyRule("callback", re.compile(r"/api/worker/failed"), signed=True),
    BodyRule("default", re.compile(r"/api/worker/drain"), signed=True),
    BodyRule("worker", re.compile(r"/api/worker/[^/]+/[^/]+/[^/]+"), signed=True),
)


def body_limits(settings: Settings) -> dict[BodyKind, int]:
    """The body limit of each endpoint kind, in bytes."""
    return {
        "default": settings.body_limit_default_bytes,
        "tasks": settings.body_limit_tasks_bytes,
        "upload": settings.upload_body_limit(),
        "worker": settings.body_limit_worker_bytes,
        "callback": settings.body_limit_callback_bytes,
    }


def body_limit_middleware(settings: Settings, rules: Sequence[BodyRule]) -> Middleware:
    """`BodyLimitMiddleware` with `rules` and the limits from `settings`, for `Starlette(...)`."""
    return Middleware(BodyLimitMiddleware, rules=rules, limits=body_limits(settings))


def _content_length(headers: Headers) -> int | None:
    """The declared body length; None when absent or not a plain decimal (then counted)."""
    value = headers.get("content-length", "").strip()
    if value.isascii() and value.isdigit():
        return int(value)
    return None


def _route_path(scope: Scope) -> str:
    """The path the app routes on (the full path, less a `root_path` it starts with)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BodyLimitMiddleware:
    """Refuse oversized or unsigned requests before the app reads (or parses) their body."""

    def __init__(
        self, app: ASGIApp, *, rules: Sequence[BodyRule], limits: Mapping[BodyKind, int]
    ) -> None:
        self.app = app
        self.rules = tuple(rules)
        self.limits = dict(limits)

    def rule_for(self, method: str, path: str) -> BodyRule | None:
        """The first rule matching the request, or None (the `default` kind)."""
        for rule in self.rules:
            if rule.method == method and rule.path.fullmatch(path):
                return rule
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        rule = self.rule_for(scope.get("method", ""), path)
        kind: BodyKind = rule.kind if rule is not None else "default"
        limit = self.limits[kind]
        headers = Headers(scope=scope)
        if rule is not None and rule.signed and not headers.get(SIGNATURE_HEADER):
            logger.warning("refused %s: no Upstash-Signature header", path)
            await _refuse(
                InvalidSignature("missing Upstash-Signature header"), scope, receive, send
            )
            return
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            logger.info(
                "refused %s: Content-Length %d over the %s limit %d", path, declared, kind, limit
            )
            await _refuse(_too_large(kind, limit), scope, receive, send)
            return

        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    logger.info("refused %s: body passed the %s limit %d", path, kind, limit)
                    raise _too_large(kind, limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except PayloadTooLarge as exc:
            # The app maps it itself (the one error handler); an app that does not, or one
            # that read the body outside its handlers, is answered here.
            if started:
                raise
            await _refuse(exc, scope, receive, send)


def _too_large(kind: BodyKind, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{kind} body over {limit} bytes", max_bytes=limit)


async def _refuse(exc: SlotlineError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the error's usual body and close the connection (the body stays unread)."""
    response = error_response(exc, request_lang(Request(scope)))
    response.headers["connection"] = "close"
    await response(scope, receive, send)
