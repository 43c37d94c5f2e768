"""REST adapter: the Upstash REST protocol through upstash-redis, replies shaped like TCP's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from upstash_redis.asyncio import Redis as UpstashRedis
from upstash_redis.errors import UpstashError

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

logger = logging.getLogger(__name__)


def _raw(command: Sequence[Arg]) -> list[Arg]:
    """The command with its name lower-cased.

    upstash-redis post-processes replies by command name (HGETALL → dict, SET →
    bool, XRANGE → dicts, …) through an upper-case lookup table; Redis itself is
    case-insensitive, so a lower-case name gets the raw RESP2 reply through.
    """
    if not command:
        raise ValueError("empty Redis command")
    name, *rest = command
    return [str(name).lower(), *rest]


def _reply_error(exc: UpstashError) -> Exception:
    message = str(exc)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return RedisReplyError(message)


class RestRedis:
    """`RedisPort` over the Upstash REST API (hosted, or `lib.local.upstash_rest`)."""

    kind: Literal["tcp", "rest"] = "rest"

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 3.0,
        retries: int = 1,
        retry_interval_s: float = 0.2,
        poll_interval_s: float = 0.1,
    ) -> None:
        """Build the adapter (no request is made until the first command).

        Args:
            url: the REST base URL (`UPSTASH_REDIS_REST_URL`).
            token: the bearer token (`UPSTASH_REDIS_REST_TOKEN`).
            timeout_s: the time one attempt may take. The SDK's own client waits
                forever and takes no timeout, so each call (its retries included) is
                bounded here by `(retries + 1) * timeout_s` plus the pauses between
                attempts. Every request is short, a blocking read too (it is emulated
                by polling).
            retries: extra attempts after a failed HTTP request. The SDK retries on
                any transport failure, read timeouts included, so a retried write
                may have been applied once already; tests use 0.
            retry_interval_s: pause between attempts.
            poll_interval_s: how often `xread` polls while emulating a blocking read.
        """
        self._client = UpstashRedis(
            url,
            token,
            rest_retries=retries,
            rest_retry_interval=retry_interval_s,
            allow_telemetry=False,
        )
        # upstash-redis builds httpx.AsyncClient(timeout=None); one hung request would
        # hold a serverless function until its own time limit.
        self._call_timeout_s = (retries + 1) * timeout_s + retries * retry_interval_s
        self._poll_interval_s = poll_interval_s

    async def execute(self, *args: Arg) -> Any:
        """Run one command and return its raw RESP2-shaped reply.

        Raises:
            NoScriptError: the reply was a NOSCRIPT error.
            RedisReplyError: any other error reply.
            RedisUnavailable: the REST endpoint could not be reached.
        """
        try:
            async with asyncio.timeout(self._call_timeout_s):
                return await self._client.execute(_raw(args))
        except UpstashError as exc:
            raise _reply_error(exc) from exc
        except (httpx.HTTPError, TimeoutError) as exc:
            raise RedisUnavailable(f"redis rest: {type(exc).__name__}: {exc}") from exc

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Run the commands in one `/pipeline` request (not atomic).

        Raises:
            RedisReplyError: one of the commands answered with an error.
            RedisUnavailable: the REST endpoint could not be reached.
        """
        if not commands:
            return []
        pipe = self._client.pipeline()
        for command in commands:
            pipe.execute(_raw(command))
        try:
            async with asyncio.timeout(self._call_timeout_s):
                return list(await pipe.exec())
        except UpstashError as exc:
            raise RedisReplyError(str(exc)) from exc
        except (httpx.HTTPError, TimeoutError) as exc:
            raise RedisUnavailable(f"redis rest: {type(exc).__name__}: {exc}") from exc

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """EVALSHA; raises `NoScriptError` when the server does not know the script."""
        return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def xread(
        self, key: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        """Entries after `after_id`; a blocking read is emulated by polling (`xread_streams`).

        Raises:
            RedisReplyError: the key holds another type, or an id is invalid.
            RedisUnavailable: the REST endpoint could not be reached.
        """
        found = await self.xread_streams([(key, after_id)], count=count, block_ms=block_ms)
        return [entry for _, entry in found]

    async def xread_streams(
        self, streams: Sequence[tuple[str, str]], *, count: int, block_ms: int | None
    ) -> list[KeyedEntry]:
        """Entries of several streams in one request; a blocking read is emulated by polling.

        REST has no blocking XREAD, so with `block_ms` the streams are read every
        `poll_interval_s` until entries arrive or `block_ms` has passed (`0` waits
        forever, as Redis's `BLOCK 0` does). `$` is resolved once to the stream's last
        id so entries added between polls are not skipped.

        Raises:
            RedisReplyError: a key holds another type, or an id is invalid.
            RedisUnavailable: the REST endpoint could not be reached.
        """
        if block_ms is None:
            return await self._read(streams, count)
        streams = [
            (key, await self._last_id(key) if after == "$" else after) for key, after in streams
        ]
        deadline = None if block_ms == 0 else time.monotonic() + block_ms / 1000
        while True:
            entries = await self._read(streams, count)
            if entries:
                return entries
            pause = self._poll_interval_s
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                pause = min(pause, remaining)
            await asyncio.sleep(pause)

    async def _read(self, streams: Sequence[tuple[str, str]], count: int) -> list[KeyedEntry]:
        return parse_xread_streams(await self.execute(*xread_command(streams, count, None)))

    async def _last_id(self, key: str) -> str:
        last = await self.execute("XREVRANGE", key, "+", "-", "COUNT", 1)
        return str(last[0][0]) if last else "0-0"

    async def aclose(self) -> None:
        await self._client.close()
