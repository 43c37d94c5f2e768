"""`DELETE /api/me`: erase everything the caller owns, in Postgres and in Redis.

Order, so that a refusal or a failure leaves a state the same call can finish later:
1. Redis: find the caller's tasks, cancel the queued ones; a running one refuses the
   erase (409 `account_busy`, nothing else changed: its worker would write back).
2. Postgres: the user row and, by cascade, assets, cached summaries, services and
   steps, in one transaction; usage rows are detached from the caller (kept for
   accounting). Pending usage rows are drained first, so none arrives after.
3. Redis: delete the caller's event streams, task hashes, idempotency keys, quota and
   locks.
Each step is idempotent: after a 503 the same call erases what is left.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.db.pg import Postgres
from lib.errors import ServiceUnavailable
from lib.redis.port import RedisPort
from lib.tasks.store import TaskStore
from lib.users import redis_state
from lib.users.store import UserStore
from producer.identity import identity

logger = logging.getLogger(__name__)


async def erase_me(request: Request) -> JSONResponse:
    """`DELETE /api/me` → 200 with what was erased."""
    redis: RedisPort = request.app.state.redis
    tasks: TaskStore = request.app.state.store
    pg: Postgres = request.app.state.pg
    user_id = identity(request).user_id
    if not pg.configured:
        raise ServiceUnavailable("no database configured")
    state = await redis_state.prepare(redis, tasks, user_id)
    from lib.usage.store import drain  # psycopg is loaded on this rare path only

    await drain(redis, pg.url or "")
    erased = await UserStore(pg).erase(user_id)
    keys_deleted = await redis_state.delete(redis, state)
    logger.info("erased %s: %s, %d redis keys", user_id, erased.tables, keys_deleted)
    return JSONResponse(
        {
            "user_id": user_id,
            "erased": {
                **erased.tables,
                "user": erased.user,
                "tasks": len(state.tasks),
                "tasks_cancelled": state.cancelled,
                "event_streams": len(state.streams),
                "redis_keys": keys_deleted,
            },
        }
    )
