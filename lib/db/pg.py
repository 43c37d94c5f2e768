"""Postgres for the request handlers: a small pool in a long-lived process, one connection
per operation in a serverless function.

`Postgres.connection()` is the one way the storage modules get a connection. With
`pool_max > 0` (`slotline dev`, a self-hosted uvicorn) connections come from a
`psycopg_pool.AsyncConnectionPool` opened on first use; with 0 (Vercel, Lambda: the
default there, `Settings.pool_max()`) each operation opens its own connection and closes
it: a frozen or recycled function instance holds nothing, and a managed Postgres (Neon's
pooler) does the pooling. Either way a block is one transaction: committed when it ends,
rolled back when it raises.

psycopg and psycopg_pool are imported on the first connection, never with this module:
the producer's cold start does not pay for them (~0.2-0.4 s measured here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from lib.errors import ServiceUnavailable
from lib.settings import Settings, secret

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

logger = logging.getLogger(__name__)


def parse_id(value: str) -> uuid.UUID | None:
    """A row id (asset, service) from a path (32 hex digits, dashes allowed); None if not one."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


class Postgres:
    """Connections to one database, pooled or not (see the module docstring).

    Nothing connects before the first `connection()`; `aclose()` closes the pool.
    """

    def __init__(self, url: str | None, *, pool_max: int, timeout_s: float = 5.0) -> None:
        self.url = url
        self.pool_max = pool_max
        self.timeout_s = timeout_s
        self._pool: AsyncConnectionPool[AsyncConnection[DictRow]] | None = None
        self._opening = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Postgres:
        """The request handlers' database from `DATABASE_URL` and the pool settings."""
        return cls(
            secret(settings.database_url),
            pool_max=settings.pool_max(),
            timeout_s=settings.database_timeout_s,
        )

    @property
    def configured(self) -> bool:
        return bool(self.url)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[DictRow]]:
        """A connection for one transaction (rows as dicts).

        Raises:
            ServiceUnavailable: no database configured, or it cannot be reached (connect,
                pool wait or a dropped connection); the transaction was rolled back.
        """
        if not self.url:
            raise ServiceUnavailable("no database configured")
        import psycopg

        try:
            if self.pool_max > 0:
                pool = await self._open_pool()
                async with pool.connection(timeout=self.timeout_s) as conn:
                    yield conn
            else:
                from lib.db import migrate as db

                async with await db.connect(
                    self.url, connect_timeout=max(1, round(self.timeout_s))
                ) as conn:
                    yield conn
        except psycopg.OperationalError as exc:
            # psycopg_pool's PoolTimeout (no connection within the timeout) is one too.
            logger.warning("postgres unavailable: %s", type(exc).__name__)
            raise ServiceUnavailable("database unavailable") from exc

    async def _open_pool(self) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                from psycopg import AsyncConnection
                from psycopg.rows import DictRow, dict_row
                from psycopg_pool import AsyncConnectionPool

                kwargs: dict[str, Any] = {
                    "row_factory": dict_row,
                    "connect_timeout": max(1, round(self.timeout_s)),
                }
                pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
                    self.url or "",
                    connection_class=AsyncConnection[DictRow],
                    kwargs=kwargs,
                    # No idle connection is kept open for a process that serves nothing.
                    min_size=0,
                    max_size=self.pool_max,
                    max_idle=60.0,
                    timeout=self.timeout_s,
                    # A connection dropped while idle (a Postgres restart) is replaced
                    # before it is handed out, not failed on first use.
                    check=AsyncConnectionPool.check_connection,
                    open=False,
                )
                await pool.open()
                self._pool = pool
        return self._pool

    async def aclose(self) -> None:
        """Close the pool (if one was opened)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
