"""TCP adapter: redis-py asyncio, RESP2 and decoded strings so replies match REST."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import NoScriptError as _RedisNoScript
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as _RedisTimeout

from lib.errors import RedisUnavailable
from lib.redisport import Arg, NoScriptError, RedisReplyError, StreamEntry, parse_xread

# Connection errors (refused, reset, no pooled connection in time) and timeouts.
_UNAVAILABLE = (_RedisConnectionError, _RedisTimeout, OSError)


class TcpRedis:
    """`RedisPort` over a redis-py connection pool."""

    kind: Literal["tcp", "rest"] = "tcp"

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    @classmethod
    def from_url(
        cls, url: str, *, max_connections: int = 256, pool_timeout_s: float = 5.0
    ) -> TcpRedis:
        """Build the adapter (the pool connects lazily).

        Every command holds a pooled connection while it runs, a live SSE reader's
        blocking XREAD included. When all `max_connections` are busy a command waits up
        to `pool_timeout_s` for one (then `RedisUnavailable`), instead of failing at once.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout_s,
            protocol=2,
            decode_responses=True,
        )
        client = aioredis.Redis.from_pool(pool)
        # Raw RESP2 replies, exactly as the REST protocol returns them: no per-command
        # post-processing (redis-py would turn XRANGE/HGETALL into tuples and dicts).
        client.response_callbacks.clear()
        return cls(client)

    async def execute(self, *args: Arg) -> Any:
        try:
            return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
        except _RedisNoScript as exc:
            raise NoScriptError(str(exc)) from exc
        except ResponseError as exc:
            raise RedisReplyError(str(exc)) from exc
        except _UNAVAILABLE as exc:
            raise RedisUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            return list(await pipe.execute(raise_on_error=True))
        except ResponseError as exc:
            raise RedisReplyError(str(exc)) from exc
        except _UNAVAILABLE as exc:
            raise RedisUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def xread(
        self, key: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        command: list[Arg] = ["XREAD", "COUNT", count]
        if block_ms is not None:
            command += ["BLOCK", block_ms]
        command += ["STREAMS", key, after_id]
        return parse_xread(await self.execute(*command))

    async def aclose(self) -> None:
        await self._client.aclose()
