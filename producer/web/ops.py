"""The queue dashboard's data routes (`/api/ops/…`), for operators only; 404 for anyone else.

An operator is a signed-in user (bearer header or session cookie) listed in `OPERATORS`.
Everything here is ids and counts: no user's content.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.auth import Identity
from lib.clock import now_ms
from lib.errors import ConfigError, NotFound, ServiceUnavailable
from lib.redis.port import RedisPort
from lib.settings import Settings, secret
from lib.tasks.monitor import snapshot
from producer.identity import optional_identity
from producer.web.dlq import DeadLetters

FAILURE_MINUTES = 60
FAILURE_ROWS = 20
DEAD_LETTER_ROWS = 50
NO_STORE = {"Cache-Control": "no-store"}

logger = logging.getLogger(__name__)


def operator_of(request: Request) -> Identity | None:
    """The caller if it is an operator, else None."""
    settings: Settings = request.app.state.settings
    ident = optional_identity(request)
    if ident is None or ident.kind != "user" or ident.user_id not in settings.operators:
        return None
    return ident


def require_operator(request: Request) -> Identity:
    """The calling operator.

    Raises:
        NotFound: anyone else (the dashboard does not exist for them).
    """
    ident = operator_of(request)
    if ident is None:
        raise NotFound("not an operator")
    return ident


def dead_letters(request: Request) -> DeadLetters:
    """The app's dead-letter client, made on first use (no `qstash` import before)."""
    state = request.app.state
    client: DeadLetters | None = getattr(state, "dead_letters", None)
    if client is None:
        client = DeadLetters(state.settings)
        state.dead_letters = client
    return client


async def queues_data(request: Request) -> JSONResponse:
    """`GET /api/ops/queues`: every queue and slot pool now (one Redis pipeline)."""
    require_operator(request)
    settings: Settings = request.app.state.settings
    redis: RedisPort = request.app.state.redis
    now = now_ms()
    body = await snapshot(redis, settings, now)
    body["now_ms"] = now
    return JSONResponse(body, headers=NO_STORE)


async def failures_data(request: Request) -> JSONResponse:
    """`GET /api/ops/failures`: dead letters (QStash) and failed attempts (usage log).

    Either part is `null` with its `*_error` code when its source does not answer, so the
    other still shows.
    """
    require_operator(request)
    settings: Settings = request.app.state.settings
    body: dict[str, Any] = {"dead_letters": None, "failures": None}
    try:
        body["dead_letters"] = await dead_letters(request).list(DEAD_LETTER_ROWS)
    except (ServiceUnavailable, ConfigError) as exc:
        body["dead_letters_error"] = exc.code
    database_url = secret(settings.database_url)
    if not database_url:
        body["failures_error"] = "config_error"
    else:
        from lib.usage.store import recent_failures  # psycopg only when the dashboard asks

        try:
            rows = await recent_failures(database_url, FAILURE_MINUTES, FAILURE_ROWS)
        except ServiceUnavailable as exc:
            body["failures_error"] = exc.code
        else:
            body["failures"] = [
                {
                    "created_ms": int(row.created_at.timestamp() * 1000),
                    "provider": row.provider,
                    "model": row.model,
                    "template": row.template,
                    "error_kind": row.error_kind,
                }
                for row in rows
            ]
    return JSONResponse(body, headers=NO_STORE)


async def dlq_retry(request: Request) -> JSONResponse:
    """`POST /api/ops/dlq/{dlq_id}/retry`: publish a dead letter again.

    Raises:
        NotFound: not an operator, or no such dead letter.
        ServiceUnavailable: QStash did not answer.
    """
    ident = require_operator(request)
    dlq_id = request.path_params["dlq_id"]
    message_id = await dead_letters(request).retry(dlq_id)
    logger.info("operator %s retried dead letter %s", ident.user_id, dlq_id)
    return JSONResponse({"dlq_id": dlq_id, "message_id": message_id}, headers=NO_STORE)
