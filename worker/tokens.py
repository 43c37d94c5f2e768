"""Token batching: stream deltas into the event stream by time and size, not one XADD per token."""

from __future__ import annotations

import asyncio
import contextlib
import time

from lib import events
from lib.redisport import RedisPort


class TokenBatcher:
    """Buffers text deltas and appends them as `token` events.

    The first delta is written at once (time to first token matters most); after
    that a batch is written when `flush_ms` have passed since the last write or
    when `max_chars` are buffered, and a timer flushes a stalled buffer. Each write
    is one XADD (the start script set the stream's TTL; finish refreshes it).
    Writes are serialized so events keep their order.
    """

    def __init__(self, redis: RedisPort, key: str, *, flush_ms: int, max_chars: int) -> None:
        self._redis = redis
        self._key = key
        self._flush_s = flush_ms / 1000
        self._max_chars = max_chars
        self._parts: list[str] = []
        self._size = 0
        self._last = 0.0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
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
            await self.flush()

    async def add(self, text: str) -> None:
        """Buffer one delta; write when it is the first, or the batch is old or large."""
        if not text:
            return
        self._parts.append(text)
        self._size += len(text)
        first = self.writes == 0
        if first or self._size >= self._max_chars or self._age() >= self._flush_s:
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered text as one `token` event (nothing when empty)."""
        async with self._lock:
            self._last = time.monotonic()
            if not self._parts:
                return
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
            await events.append(self._redis, self._key, "token", {"text": text}, ttl_s=None)
            self.writes += 1
            self.chars += len(text)

    def discard(self) -> None:
        """Drop buffered text (the attempt restarts; clients reset on `restart`)."""
        self._parts.clear()
        self._size = 0

    def _age(self) -> float:
        return time.monotonic() - self._last

    async def _tick(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._flush_s)
            if self._parts and self._age() >= self._flush_s:
                await self.flush()
