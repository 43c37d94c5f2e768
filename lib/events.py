"""A task's event stream: event types, reads of the Redis Stream (Lua writes it), SSE framing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, get_args

from lib.redis.port import RedisPort

EventType = Literal[
    "queued",
    "backpressure",
    "started",
    "token",
    "restart",
    "result",
    "done",
    "error",
    "cancelled",
]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
# After one of these nothing more is written to the stream.
TERMINAL: frozenset[str] = frozenset({"done", "error", "cancelled"})

# Stream ids: `ms-seq`, or `ms` alone (XREAD treats it as `ms-0`); ASCII digits only (`\d`
# also takes other scripts' digits), each part a 64-bit unsigned integer, as Redis parses them.
_STREAM_ID = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,20})?")
_MAX_ID_PART = 2**64 - 1
START = "0-0"


class QueuedData(TypedDict):
    position: int


class BackpressureData(TypedDict, total=False):
    """The task must wait for a slot: written once by admission (the waiting spell)."""

    position: int
    slots: int
    expected_wait_s: int  # absent until the queue has run times to estimate from


class StartedData(TypedDict):
    model: str
    attempt: int
    # Set on the `started` the worker writes when a fallback model takes over (same attempt).
    fallback: NotRequired[bool]


class TokenData(TypedDict):
    text: str


class RestartData(TypedDict):
    attempt: int


# `result` carries the task's validated JSON output itself.
ResultData = dict[str, Any]


class DoneData(TypedDict, total=False):
    usage: dict[str, Any]
    cost: float
    latency_ms: int


class ErrorData(TypedDict):
    code: str
    message: str


class CancelledData(TypedDict):
    refunded: int


EventData = (
    QueuedData
    | BackpressureData
    | StartedData
    | TokenData
    | RestartData
    | ResultData
    | DoneData
    | ErrorData
    | CancelledData
)


class EventJSON(TypedDict):
    """One event as the long-poll endpoint returns it."""

    id: str
    type: str
    data: Any


@dataclass(frozen=True)
class Event:
    """One stream entry: its id, type and the `data` field as stored (a JSON string)."""

    id: str
    type: str
    raw: str

    @property
    def data(self) -> Any:
        """The decoded `data` (the raw string when it is not JSON)."""
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL

    def to_json(self) -> EventJSON:
        return {"id": self.id, "type": self.type, "data": self.data}


def valid_stream_id(value: str) -> bool:
    """Whether `value` can be passed to XREAD as the id to read after.

    The whole value must match (a trailing newline is not allowed), and both parts must
    fit in 64 bits: Redis refuses `18446744073709551616` with an error.
    """
    if _STREAM_ID.fullmatch(value) is None:
        return False
    return all(int(part) <= _MAX_ID_PART for part in value.split("-"))


def encode_data(data: Any) -> str:
    """The `data` field's JSON (compact, UTF-8 kept, single line)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


async def read(
    redis: RedisPort, key: str, after_id: str, *, count: int = 100, block_ms: int | None = None
) -> list[Event]:
    """Events strictly after `after_id`, oldest first.

    Args:
        redis: the Redis port.
        key: the stream key.
        after_id: a stream id (`0-0` reads from the start).
        count: at most this many events.
        block_ms: wait up to this long for a first event (TCP only; REST returns at once).

    Returns:
        The events, possibly none.

    Raises:
        RedisReplyError: Redis refused the command (e.g. a malformed id).
    """
    entries = await redis.xread(key, after_id, count=count, block_ms=block_ms)
    return [
        Event(entry_id, fields.get("type", ""), fields.get("data", "null"))
        for entry_id, fields in entries
    ]


def sse_event(event: Event) -> bytes:
    """One SSE message: `id:` = stream id (so `Last-Event-ID` resumes), `event:`, `data:`."""
    # Stored data is single-line JSON; split anyway so a stray newline cannot break framing.
    lines = [f"id: {event.id}", f"event: {event.type}"]
    lines += [f"data: {line}" for line in event.raw.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def sse_unstored(type: EventType, data: Any) -> bytes:
    """An SSE message that is not in the stream (no `id:`: `Last-Event-ID` stays put)."""
    return f"event: {type}\ndata: {encode_data(data)}\n\n".encode()


def sse_heartbeat() -> bytes:
    """An SSE comment: keeps proxies from closing an idle connection."""
    return b": ping\n\n"


def sse_retry(retry_ms: int) -> bytes:
    """The reconnection delay hint."""
    return f"retry: {retry_ms}\n\n".encode()
