"""Test helper: everything in a Redis database, so a test can assert a request changed nothing."""

from __future__ import annotations

from typing import Any

from lib.redis.port import RedisPort

_READ: dict[str, tuple[str, ...]] = {
    "string": ("GET",),
    "hash": ("HGETALL",),
    "list": ("LRANGE", "0", "-1"),
    "set": ("SMEMBERS",),
    "zset": ("ZRANGE", "0", "-1", "WITHSCORES"),
    "stream": ("XRANGE", "-", "+"),
}


async def snapshot(redis: RedisPort) -> dict[str, tuple[str, Any]]:
    """Every key with its type and content (sets sorted); works on both adapters."""
    found: dict[str, tuple[str, Any]] = {}
    for key in sorted(await redis.execute("KEYS", "*")):
        kind = str(await redis.execute("TYPE", key))
        command = _READ[kind]
        value = await redis.execute(command[0], key, *command[1:])
        found[key] = (kind, sorted(value) if kind == "set" else value)
    return found
