"""`GET /api/queues`: the queue monitor's snapshot (lib/tasks/monitor.py) as JSON."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.clock import now_ms
from lib.redis.port import RedisPort
from lib.settings import Settings
from lib.tasks.monitor import snapshot


async def queues(request: Request) -> JSONResponse:
    """`GET /api/queues`."""
    settings: Settings = request.app.state.settings
    redis: RedisPort = request.app.state.redis
    body = await snapshot(redis, settings, now_ms())
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
