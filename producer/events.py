"""The events reader: `GET /api/tasks/{id}/events` as SSE, or as a JSON long-poll."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from lib import events
from lib.errors import InvalidRequest, RedisUnavailable
from lib.field_errors import field_error
from lib.redis.port import RedisPort
from lib.settings import Settings
from lib.tasks.store import TaskStore
from lib.tasks.view import StreamPlace
from producer.identity import identity

logger = logging.getLogger(__name__)

BATCH = 200
# REST has no blocking XREAD: poll, fast while events flow, slower when idle.
POLL_MIN_S = 0.05
POLL_MAX_S = 0.5


def _after(value: str | None) -> str:
    if value is None or value == "":
        return events.START
    if not events.valid_stream_id(value):
        raise InvalidRequest(f"not a stream id: {value[:40]!r}", reason="event_id")
    return value


class _Reader:
    """Reads a stream after a moving cursor: blocking on TCP, adaptive polling on REST."""

    def __init__(
        self, redis: RedisPort, key: str, after: str, *, min_interval_s: float = 0.0
    ) -> None:
        self.redis = redis
        self.key = key
        self.after = after
        self._poll_s = POLL_MIN_S
        self._min_interval_s = min_interval_s
        self._last_hit = 0.0

    async def next(self, wait_s: float) -> list[events.Event]:
        """Events after the cursor, waiting up to `wait_s` for the first one.

        After a read that returned tokens, the next one waits until `min_interval_s`
        has passed: a streaming answer is then read at most once per interval (token
        batches coalesce; each read is a billed command). Any other read leaves the
        next one free, so the first token after `started` arrives as soon as it is
        written, however fast the model.
        """
        gap = self._last_hit + self._min_interval_s - time.monotonic()
        if gap > 0 and wait_s > gap:
            await asyncio.sleep(gap)
            wait_s -= gap
        if self.redis.kind == "tcp" and wait_s > 0:
            block_ms = max(1, int(wait_s * 1000))
            batch = await events.read(
                self.redis, self.key, self.after, count=BATCH, block_ms=block_ms
            )
        else:
            deadline = time.monotonic() + max(0.0, wait_s)
            while True:
                batch = await events.read(self.redis, self.key, self.after, count=BATCH)
                left = deadline - time.monotonic()
                if batch or left <= 0:
                    break
                await asyncio.sleep(min(self._poll_s, left))
                self._poll_s = min(POLL_MAX_S, self._poll_s * 2)
        if batch:
            self.after = batch[-1].id
            self._poll_s = POLL_MIN_S
            if any(e.type == "token" for e in batch):
                self._last_hit = time.monotonic()
        return batch


async def _sse(reader: _Reader, located: StreamPlace, settings: Settings) -> AsyncIterator[bytes]:
    """SSE body: events until the terminal one, heartbeats, and a `retry:` before the limit.

    A heartbeat goes out every `sse_heartbeat_s` of silence, however long the task waits
    in its queue: each read blocks at most until the next beat is due. While the task
    waits, its position is looked up every `SSE_POSITION_REFRESH_S` and sent, when it
    changed, as a `queued` event without an id (it is not in the stream, so
    `Last-Event-ID` is not moved by it).
    """
    finished = located.finished
    started = time.monotonic()
    # End early enough that the host's time limit never cuts a message in half.
    margin = min(0.5, 0.1 * settings.sse_max_seconds)
    deadline = started + max(0.0, settings.sse_max_seconds - margin)
    next_beat = started + settings.sse_heartbeat_s
    waiting = bool(located.waiting_key)
    next_position = started + settings.sse_position_refresh_s
    shown: int | None = None
    yield events.sse_retry(settings.sse_retry_ms)
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if waiting and now >= next_position:
            try:
                where = await located.position(reader.redis)
            except RedisUnavailable as exc:
                logger.warning("events reader on %s: %s", reader.key, exc)
                break
            next_position = time.monotonic() + settings.sse_position_refresh_s
            if where is None:
                waiting = False
            elif where != shown:
                shown = where
                yield events.sse_unstored("queued", {"position": where})
        wake = min(deadline, next_beat, next_position if waiting else deadline)
        wait = max(0.0, wake - now)
        try:
            # A finished task has written everything: read what is left without waiting.
            batch = await reader.next(0 if finished else wait)
        except RedisUnavailable as exc:
            # The headers are sent, a 503 no longer can be: end with the retry hint, and
            # the client's next request (Last-Event-ID) gets its events or the 503.
            logger.warning("events reader on %s: %s", reader.key, exc)
            break
        for event in batch:
            yield events.sse_event(event)
            if event.terminal:
                return
            if event.type == "queued":
                shown = event.data.get("position") if isinstance(event.data, dict) else shown
            elif event.type != "backpressure":
                waiting = False  # started (or cancelled): no longer in the queue
        if finished and not batch:
            return  # resumed after the end (or the stream expired): nothing more will come
        if time.monotonic() >= next_beat:
            yield events.sse_heartbeat()
            next_beat = time.monotonic() + settings.sse_heartbeat_s
    # Not finished: tell the client to come back (with Last-Event-ID) shortly.
    yield events.sse_retry(settings.sse_retry_ms)


def _wants_json(request: Request) -> bool:
    q = request.query_params
    if "after" in q or "wait" in q:
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/event-stream" not in accept


async def stream(request: Request) -> Response:
    """`GET /api/tasks/{id}/events`: SSE (resumes after `Last-Event-ID`) or JSON long-poll."""
    settings: Settings = request.app.state.settings
    redis: RedisPort = request.app.state.redis
    user_id = identity(request).user_id
    task_id = request.path_params["task_id"]
    if _wants_json(request):
        return await _long_poll(request, redis, settings, task_id, user_id)
    after = _after(
        request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    )
    located = await TaskStore(redis, settings).locate(task_id, user_id)
    reader = _Reader(
        redis, located.key, after, min_interval_s=settings.sse_min_read_interval_ms / 1000
    )
    return StreamingResponse(
        _sse(reader, located, settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _long_poll(
    request: Request, redis: RedisPort, settings: Settings, task_id: str, user_id: str
) -> JSONResponse:
    after = _after(request.query_params.get("after"))
    try:
        wait = float(request.query_params.get("wait", "0"))
    except ValueError:
        fields = [field_error("wait", "invalid_type", expected="number")]
        raise InvalidRequest("wait must be a number of seconds", fields=fields) from None
    wait = min(max(0.0, wait), settings.longpoll_max_wait_s)
    located = await TaskStore(redis, settings).locate(task_id, user_id)
    reader = _Reader(redis, located.key, after)
    batch = await reader.next(0 if located.finished else wait)
    done = any(e.terminal for e in batch) or (located.finished and not batch)
    body = {
        "events": [e.to_json() for e in batch],
        "last_id": reader.after,
        "done": done,
        # Where the task stands in its queue now (null once it has started).
        "position": await located.position(redis),
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
