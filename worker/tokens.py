"""Token batching: stream deltas into the event stream by time and size, not one XADD per token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from lib import events
from lib.errors import RedisUnavailable
from lib.redisport import RedisPort
from worker.blips import through_blips

logger = logging.getLogger(__name__)


class TokenBatcher:
    """Buffers text deltas and appends them as `token` events.

    The first delta is written at once (time to first token matters most); after
    that a batch is written when `flush_ms` have passed since the last write or
    when `max_chars` are buffered, and a timer flushes a stalled buffer. Each write
    is one XADD (the start script set the stream's TTL; finish refreshes it).
    Writes are serialized so events keep their order. Each batch also carries `n`,
    the deltas written so far in this attempt: the row of an attempt that dies is
    closed with it (`lib/lua/attempt_row.lua`). A write that cannot reach Redis keeps
    its text for the next one, so a blip delays tokens instead of failing the task.
    """

    def __init__(
        self,
        redis: RedisPort,
        key: str,
        *,
        flush_ms: int,
        max_chars: int,
        blip_budget_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._blip_budget_s = blip_budget_s
        self._key = key
        self._flush_s = flush_ms / 1000
        self._max_chars = max_chars
        self._parts: list[str] = []
        self._size = 0
        self._last = 0.0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self._pending_deltas = 0
        self.deltas = 0
        self.writes = 0
        self.chars = 0

    async def __aenter__(self) -> TokenBatcher:
        self._timer = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        # The flag ends the timer even if its cancellation is swallowed (on 3.11 a
        # `wait_for` inside the Redis client can eat a cancel that races completion).
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if exc[0] is None:
            await through_blips(self._write, budget_s=self._blip_budget_s)

    async def add(self, text: str) -> None:
        """Buffer one delta; write when it is the first, or the batch is old or large."""
        if not text:
            return
        self._parts.append(text)
        self._size += len(text)
        self._pending_deltas += 1
        first = self.writes == 0
        if first or self._size >= self._max_chars or self._age() >= self._flush_s:
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered text as one `token` event (nothing when empty).

        While Redis is unreachable the text stays buffered for the next write.
        """
        try:
            await self._write()
        except RedisUnavailable as exc:
            logger.warning("token batch kept for the next write: %s", exc.detail)

    async def _write(self) -> None:
        async with self._lock:
            self._last = time.monotonic()
            if not self._parts:
                return
            # Take the batch out before awaiting: deltas keep arriving during the write.
            parts, count = self._parts, self._pending_deltas
            self._parts, self._size, self._pending_deltas = [], 0, 0
            text = "".join(parts)
            deltas = self.deltas + count
            try:
                await events.append(
                    self._redis,
                    self._key,
                    "token",
                    {"text": text},
                    ttl_s=None,
                    fields={"n": deltas},
                )
            except BaseException:
                # Not written: put the batch back in front of what arrived meanwhile.
                self._parts = [text, *self._parts]
                self._size += len(text)
                self._pending_deltas += count
                raise
            self.deltas = deltas
            self.writes += 1
            self.chars += len(text)

    async def restart(self, data: dict[str, Any]) -> None:
        """Drop buffered text and write a `restart` event (clients reset their text)."""
        async with self._lock:
            self._parts.clear()
            self._size = 0
            self._pending_deltas = 0
            await events.append(self._redis, self._key, "restart", data, ttl_s=None)

    def _age(self) -> float:
        return time.monotonic() - self._last

    async def _tick(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._flush_s)
            if self._parts and self._age() >= self._flush_s:
                await self.flush()
