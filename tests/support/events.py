"""Event streams written from tests, in the shape the Lua scripts write them."""

from __future__ import annotations

from typing import Any

from lib.events import EventType, encode_data
from lib.redis.port import Arg, RedisPort


async def append_event(
    redis: RedisPort,
    key: str,
    type: EventType,
    data: Any,
    *,
    ttl_s: int | None,
    fields: dict[str, Arg] | None = None,
) -> str:
    """Append one event (and refresh the stream's TTL) in one round trip, as the scripts do.

    Production writes every event from Lua (`lib/tasks/lua/*.lua`, the worker's token
    batches in `append_token.lua`); tests use this to put a stream in a given state.

    Args:
        redis: the Redis port.
        key: the stream key (`keys.events(...)`).
        type: the event type.
        data: a JSON-serializable payload (see the `*Data` TypedDicts).
        ttl_s: the stream expires this long after its last event; None when the TTL is
            already set (the worker's token batches: the start script set it, finish
            refreshes it), which saves a billed command per write.
        fields: extra stream fields beside `type` and `data` (readers ignore them).

    Returns:
        The new entry's stream id.

    Raises:
        RedisReplyError: Redis refused a command.
    """
    xadd: list[Arg] = ["XADD", key, "*", "type", type, "data", encode_data(data)]
    for name, value in (fields or {}).items():
        xadd += [name, value]
    if ttl_s is None:
        return str(await redis.execute(*xadd))
    replies = await redis.pipeline([xadd, ["EXPIRE", key, ttl_s]])
    return str(replies[0])
