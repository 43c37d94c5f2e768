"""Riding out short Redis outages: a running attempt must not fail for a blip."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from lib.errors import RedisUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_PAUSE_S = 0.1
MAX_PAUSE_S = 1.0


async def through_blips(call: Callable[[], Awaitable[T]], *, budget_s: float) -> T:
    """Run `call`, trying again while Redis is unreachable, for up to `budget_s`.

    Only for idempotent calls (the finish script is: a repeated finish of the same
    attempt changes nothing and logs nothing twice).

    Raises:
        RedisUnavailable: Redis stayed unreachable for the whole budget.
    """
    deadline = time.monotonic() + budget_s
    pause = FIRST_PAUSE_S
    while True:
        try:
            return await call()
        except RedisUnavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            logger.info("redis unreachable (%s); trying again in %.1f s", exc.detail, pause)
            await asyncio.sleep(min(pause, left))
            pause = min(MAX_PAUSE_S, pause * 2)
