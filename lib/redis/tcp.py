"""TCP adapter: redis-py asyncio, RESP2 and decoded strings so replies match REST."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import NoScriptError as _RedisNoScript
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as _RedisTimeout

from lib.errors import RedisUnavailable
from lib.redis.port import (
    Arg,
    KeyedEntry,
    NoScriptError,
    RedisReplyError,
    StreamEntry,
    parse_xread_streams,
    xread_command,
)

# Connection errors (refused, reset, no pooled connection in time) and timeouts.
_UNAVAILABLE = (_RedisConnectionError, _RedisTimeout, OSError)


def _client(
    url: str,
    *,
    max_connections: int,
    pool_timeout_s: float,
    socket_timeout_s: float | None,
    connect_timeout_s: float,
) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        protocol=2,
        decode_responses=True,
    )
    client = aioredis.Redis.from_pool(pool)
    # Raw RESP2 replies, exactly as the REST protocol returns them: no per-command
    # post-processing (redis-py would turn XRANGE/HGETALL into tuples and dicts).
    client.response_callbacks.clear()
    return client


class TcpRedis:
    """`RedisPort` over two redis-py connection pools: commands, and blocking reads.

    A command must be answered within `socket_timeout_s` (a hung Redis answers 503 in a
    few seconds). A blocking XREAD is meant to wait: it runs on its own pool whose
    connections have no read timeout, under a deadline of its block time plus
    `socket_timeout_s` for that call alone. Live readers blocking there never take a
    connection from the commands (submits, status reads, the worker's scripts).
    """

    kind: Literal["tcp", "rest"] = "tcp"

    def __init__(
        self,
        client: aioredis.Redis,
        blocking: aioredis.Redis | None = None,
        *,
        socket_timeout_s: float = 3.0,
    ) -> None:
        self._client = client
        self._blocking = blocking or client
        self._socket_timeout_s = socket_timeout_s

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        max_connections: int = 256,
        pool_timeout_s: float = 5.0,
        socket_timeout_s: float = 3.0,
        connect_timeout_s: float = 2.0,
    ) -> TcpRedis:
        """Build the adapter (the pools connect lazily).

        Args:
            url: a `redis://` or `rediss://` URL.
            max_connections: per pool (commands, blocking reads). When all are busy a
                command waits up to `pool_timeout_s` for one (then `RedisUnavailable`),
                instead of failing at once.
            pool_timeout_s: how long a command waits for a free connection.
            socket_timeout_s: how long a command waits for its reply (redis-py's own
                default, 5 s, would also cut a blocking read longer than that).
            connect_timeout_s: how long a new connection may take.
        """
        common: dict[str, Any] = {
            "max_connections": max_connections,
            "pool_timeout_s": pool_timeout_s,
            "connect_timeout_s": connect_timeout_s,
        }
        return cls(
            _client(url, socket_timeout_s=socket_timeout_s, **common),
            _client(url, socket_timeout_s=None, **common),
            socket_timeout_s=socket_timeout_s,
        )

    async def execute(self, *args: Arg) -> Any:
        return await self._run(self._client, args)

    async def _run(self, client: aioredis.Redis, args: Sequence[Arg]) -> Any:
        try:
            return await client.execute_command(*args)  # type: ignore[no-untyped-call]
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
        """Entries after `after_id`; with `block_ms`, wait up to that long for the first.

        Raises:
            RedisReplyError: the key holds another type, or an id is invalid.
            RedisUnavailable: Redis cannot be reached, or did not answer in time.
        """
        found = await self.xread_streams([(key, after_id)], count=count, block_ms=block_ms)
        return [entry for _, entry in found]

    async def xread_streams(
        self, streams: Sequence[tuple[str, str]], *, count: int, block_ms: int | None
    ) -> list[KeyedEntry]:
        """Entries of several streams after their ids, in one command.

        A blocking read must be answered within `block_ms` plus the socket timeout
        (`block_ms=0`, Redis's "forever", has no deadline); redis-py closes a connection
        whose read is cut, so a late reply cannot reach the next command.

        Raises:
            RedisReplyError: a key holds another type, or an id is invalid.
            RedisUnavailable: Redis cannot be reached, or did not answer in time.
        """
        command = xread_command(streams, count, block_ms)
        if block_ms is None:
            return parse_xread_streams(await self.execute(*command))
        if block_ms == 0:
            return parse_xread_streams(await self._run(self._blocking, command))
        limit_s = block_ms / 1000 + self._socket_timeout_s
        try:
            async with asyncio.timeout(limit_s):
                reply = await self._run(self._blocking, command)
        except TimeoutError as exc:
            raise RedisUnavailable(f"redis: no reply to a blocking XREAD in {limit_s:g} s") from exc
        return parse_xread_streams(reply)

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._blocking is not self._client:
            await self._blocking.aclose()
