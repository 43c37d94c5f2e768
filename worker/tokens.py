"""Token batching: stream deltas into the event stream by time and size, not one XADD per token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from lib import events
from lib.errors import RedisUnavailable
from lib.redis.port import RedisPort, load_script, run_script
from worker.blips import through_blips

logger = logging.getLogger(__name__)


class Fenced(Exception):
    """The attempt no longer owns its task (taken over, or ended): it must stop writing."""


@dataclass(frozen=True)
class Attempt:
    """Where an attempt writes: the task hash and stream keys, and its lease (the fence)."""

    task_key: str
    stream_key: str
    lease_id: str


class TokenBatcher:
    """Buffers text deltas and appends them as `token` events.

    The first delta is written at once (time to first token matters most); after
    that a batch is written when `flush_ms` have passed since the last write or
    when `max_chars` are buffered, and a timer flushes a stalled buffer. Each write
    is one script call (`lib/tasks/lua/append_token.lua`): fenced by the attempt's lease, so a
    zombie attempt never mixes text into its successor's, and idempotent by `n`, the
    deltas written so far in the attempt, so a write whose reply was lost is not
    written twice when it is tried again. (`n` also closes the usage row of an attempt
    that dies: `lib/tasks/lua/attempt_row.lua`.) Writes are serialized so events keep their
    order. A batch that cannot reach Redis is kept as it is and sent again before
    anything newer, so a blip delays tokens instead of failing the task.
    """

    def __init__(
        self,
        redis: RedisPort,
        attempt: Attempt,
        *,
        flush_ms: int,
        max_chars: int,
        blip_budget_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._attempt = attempt
        self._blip_budget_s = blip_budget_s
        self._flush_s = flush_ms / 1000
        self._max_chars = max_chars
        self._parts: list[str] = []
        self._size = 0
        self._pending_deltas = 0
        self._unsent: list[tuple[str, int]] = []  # batches whose write failed: (text, n)
        self._last = 0.0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False
        self.fenced = False
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
        if exc[0] is None and not self.fenced:
            await through_blips(self._write, budget_s=self._blip_budget_s)

    async def add(self, text: str) -> None:
        """Buffer one delta; write when it is the first, or the batch is old or large.

        Raises:
            Fenced: the attempt lost its task; stop.
        """
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

        Raises:
            Fenced: the attempt lost its task.
        """
        try:
            await self._write()
        except RedisUnavailable as exc:
            logger.warning("token batch kept for the next write: %s", exc.detail)

    async def _write(self) -> None:
        if self.fenced:
            raise Fenced(self._attempt.task_key)
        async with self._lock:
            self._last = time.monotonic()
            if self._parts:
                # Cut the batch before awaiting: deltas keep arriving during the write.
                self.deltas += self._pending_deltas
                self._unsent.append(("".join(self._parts), self.deltas))
                self._parts, self._size, self._pending_deltas = [], 0, 0
            while self._unsent:
                text, n = self._unsent[0]
                await self._append("token", {"text": text}, n)
                self._unsent.pop(0)
                self.writes += 1
                self.chars += len(text)

    async def restart(self, data: dict[str, Any]) -> None:
        """Drop buffered text and write a `restart` event (clients reset their text).

        Raises:
            Fenced: the attempt lost its task.
        """
        async with self._lock:
            self._parts, self._size, self._pending_deltas = [], 0, 0
            self._unsent.clear()
            await self._append("restart", data, self.deltas)

    async def switch(
        self, model: str, *, attempt: int, provider: str, out_price: float | str
    ) -> None:
        """The attempt moves to a fallback model: a `started` event, the task on `model`.

        The task hash's `model` (what `GET /api/tasks/{id}` says) and the `started`
        event change together, fenced like every write of the attempt.

        Raises:
            Fenced: the attempt lost its task.
        """
        async with self._lock:
            data = events.StartedData(model=model, attempt=attempt, fallback=True)
            await self._append("started", dict(data), self.deltas, model, provider, out_price)

    async def _append(self, kind: str, data: dict[str, Any], n: int, *extra: Any) -> None:
        a = self._attempt
        reply = await run_script(
            self._redis,
            load_script("lib.tasks", "append_token"),
            [a.task_key, a.stream_key],
            [a.lease_id, kind, events.encode_data(data), n, *extra],
        )
        if reply == "fenced":
            # Nothing more of this attempt can ever be written.
            self.fenced = True
            self._parts, self._size, self._pending_deltas = [], 0, 0
            self._unsent.clear()
            raise Fenced(a.task_key)

    def _age(self) -> float:
        return time.monotonic() - self._last

    async def _tick(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._flush_s)
            if self._parts and self._age() >= self._flush_s:
                try:
                    await self.flush()
                except Fenced:
                    return  # the next add() says so to the runner
