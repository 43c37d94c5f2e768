"""Read-only endpoints: `GET /api/templates`, `GET /api/usage`, `GET /healthz`."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.errors import InvalidRequest, ServiceUnavailable
from lib.field_errors import field_error
from lib.settings import Settings, secret
from producer.identity import identity

MAX_USAGE_DAYS = 366


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


async def templates(request: Request) -> JSONResponse:
    """`GET /api/templates`: every template, its variables and output schemas."""
    from lib.templates.catalog import catalog  # schemas are built on first use only

    return JSONResponse({"templates": catalog()})


async def usage(request: Request) -> JSONResponse:
    """`GET /api/usage?days=N`: the caller's own usage by day, model and template."""
    settings: Settings = request.app.state.settings
    user_id = identity(request).user_id
    try:
        days = int(request.query_params.get("days", "30"))
    except ValueError:
        fields = [field_error("days", "invalid_type", expected="integer")]
        raise InvalidRequest("days must be an integer", fields=fields) from None
    if not 1 <= days <= MAX_USAGE_DAYS:
        item = (
            field_error("days", "too_small", min=1)
            if days < 1
            else field_error("days", "too_large", max=MAX_USAGE_DAYS)
        )
        raise InvalidRequest(f"days must be in 1..{MAX_USAGE_DAYS}", fields=[item])
    database_url = secret(settings.database_url)
    if not database_url:
        raise ServiceUnavailable("no database configured")
    from lib.usage.store import usage_for_user  # psycopg only when usage is asked for

    buckets = await usage_for_user(database_url, user_id, days)
    rows = [{k: _jsonable(v) for k, v in dataclasses.asdict(bucket).items()} for bucket in buckets]
    return JSONResponse({"user_id": user_id, "days": days, "usage": rows})


async def healthz(request: Request) -> JSONResponse:
    """`GET /healthz`: the process is up (no Redis call: cheap enough for probes)."""
    return JSONResponse({"ok": True})
