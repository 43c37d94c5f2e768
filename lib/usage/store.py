"""LLM usage records: appended to a Redis stream, drained to Postgres in batches, queried.

The record itself (`UsageRecord`, its columns and wire form) lives in `lib/usage/record.py`,
free of psycopg; it is re-exported here for the storage side's callers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError

from lib import keys
from lib.db import migrate as db
from lib.errors import ServiceUnavailable
from lib.redis.port import RedisPort, load_script, run_script
from lib.usage.record import COLUMNS as COLUMNS
from lib.usage.record import ERROR_CHARS as ERROR_CHARS
from lib.usage.record import UsageRecord as UsageRecord
from lib.usage.record import decode as decode
from lib.usage.record import encode as encode

logger = logging.getLogger(__name__)

TABLE = "llm_usage_logs"
_ROWS_FIELD = "rows"


async def append(redis: RedisPort, records: Sequence[UsageRecord]) -> str | None:
    """Queue records for Postgres with one XADD (never trimmed: the drain removes them).

    Args:
        redis: the Redis port.
        records: the attempts to log; nothing is sent when empty.

    Returns:
        The stream entry id, or None when there was nothing to append.

    Raises:
        RedisReplyError: Redis refused the command.
    """
    if not records:
        return None
    entry_id = await redis.execute("XADD", keys.usage_stream(), "*", _ROWS_FIELD, encode(records))
    return str(entry_id)


async def pending(redis: RedisPort) -> int:
    """How many entries wait in the usage stream."""
    return int(await redis.execute("XLEN", keys.usage_stream()))


async def drain(
    redis: RedisPort,
    database_url: str,
    *,
    batch: int = 500,
    max_batches: int = 100,
    lock_ms: int = 60_000,
) -> int:
    """Flush the usage stream into `llm_usage_logs`, one transaction per batch of entries.

    At-least-once and idempotent: entries are deleted from the stream only after
    their rows are committed, and rows carry their entry id (`source_id`, unique),
    so an entry flushed twice (crash between COMMIT and XDEL) inserts nothing twice.
    Only one drain runs at a time (a Redis lock); a concurrent call asks the one running
    for another pass (`drain_unlock.lua`) and returns 0, so no row waits for a later
    drain because it arrived during a running one's last read.

    Args:
        redis: the Redis port.
        database_url: the Postgres URL.
        batch: stream entries per transaction.
        max_batches: most transactions in one call (bounds its run time).
        lock_ms: how long the drain lock lives if this process dies holding it.

    Returns:
        The number of rows inserted.

    Raises:
        ServiceUnavailable: Postgres is unreachable or failed; every entry not
            committed stays in the stream for the next drain.
    """
    lock_key, again, token = keys.usage_drain_lock(), keys.usage_drain_again(), uuid.uuid4().hex
    if not await redis.execute("SET", lock_key, token, "NX", "PX", lock_ms):
        await redis.execute("SET", again, 1, "PX", lock_ms)
        if not await redis.execute("SET", lock_key, token, "NX", "PX", lock_ms):
            return 0  # the running drain takes another pass for us
    inserted = 0
    passes = 0
    try:
        async with await db.connect(database_url) as conn:
            while True:
                inserted += await _drain_pass(redis, conn, batch, max_batches)
                passes += 1
                unlock = await run_script(
                    redis, load_script("lib.usage", "drain_unlock"), [lock_key, again], [token]
                )
                if int(unlock) != 2 or passes >= max_batches:
                    break
    except psycopg.Error as exc:
        # Release whatever was asked meanwhile: the rows stay queued for the next drain.
        while (
            int(
                await run_script(
                    redis, load_script("lib.usage", "drain_unlock"), [lock_key, again], [token]
                )
            )
            == 2
        ):
            pass
        logger.warning("usage drain failed, entries kept: %s", type(exc).__name__)
        raise ServiceUnavailable("usage drain: database unavailable") from exc
    if inserted:
        logger.info("usage drain: %d rows", inserted)
    return inserted


async def _drain_pass(redis: RedisPort, conn: Any, batch: int, max_batches: int) -> int:
    """Flush the stream as it is now, batch by batch; the rows inserted."""
    inserted = 0
    for _ in range(max_batches):
        entries = await redis.execute("XRANGE", keys.usage_stream(), "-", "+", "COUNT", batch)
        if not entries:
            break
        ids, rows = _rows_of(entries)
        if rows:
            inserted += await _insert(conn, rows)
        await redis.execute("XDEL", keys.usage_stream(), *ids)
        if len(entries) < batch:
            break
    return inserted


def _rows_of(entries: Sequence[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """XRANGE reply → (entry ids, table rows); an undecodable entry is logged and dropped."""
    ids: list[str] = []
    rows: list[tuple[Any, ...]] = []
    for entry_id, flat in entries:
        ids.append(str(entry_id))
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        try:
            rows.extend(decode(str(entry_id), str(fields.get(_ROWS_FIELD, ""))))
        except (ValueError, ValidationError):
            # A bug wrote it; keeping it would block nothing but would never flush either.
            logger.exception("usage entry %s undecodable, dropped: %r", entry_id, fields)
    return ids, rows


async def _insert(conn: psycopg.AsyncConnection[Any], rows: Sequence[tuple[Any, ...]]) -> int:
    """COPY rows into a temp table, then insert the ones not seen before (one transaction)."""
    table, tmp = sql.Identifier(TABLE), sql.Identifier("usage_in")
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
    async with conn.transaction():
        await conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA"
            ).format(tmp=tmp, cols=cols, table=table)
        )
        async with conn.cursor() as cur:
            copy_sql = sql.SQL("COPY {tmp} ({cols}) FROM STDIN").format(tmp=tmp, cols=cols)
            async with cur.copy(copy_sql) as copy:
                for row in rows:
                    await copy.write_row(row)
            await cur.execute(
                sql.SQL(
                    "INSERT INTO {table} ({cols}) SELECT {cols} FROM {tmp}"
                    " ON CONFLICT (source_id) DO NOTHING"
                ).format(table=table, cols=cols, tmp=tmp)
            )
            return max(cur.rowcount, 0)


# What `forget_user` puts in place of an erased user's id.
ERASED_USER = "erased"


async def forget_user(conn: psycopg.AsyncConnection[Any], user_id: str) -> int:
    """Detach a user's usage rows from them (`DELETE /api/me`), in the caller's transaction.

    The rows stay for the operator's accounting (tokens, cost, latency per model); their
    `user_id` becomes `ERASED_USER`. Rows still waiting in the usage stream are drained
    by the next drain with the old id; drain first to leave none.

    Returns:
        How many rows were detached.
    """
    cur = await conn.execute(
        sql.SQL("UPDATE {table} SET user_id = %(erased)s WHERE user_id = %(user)s").format(
            table=sql.Identifier(TABLE)
        ),
        {"erased": ERASED_USER, "user": user_id},
    )
    return max(cur.rowcount, 0)


@dataclass(frozen=True)
class UsageBucket:
    """One user's usage for one day, model and template."""

    day: date
    model_id: str
    task_template_id: str
    calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: Decimal
    currency: str


@dataclass(frozen=True)
class ModelUsage:
    """Operator view of one provider and model over a period."""

    provider: str
    model_id: str
    calls: int
    successes: int
    degraded: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: Decimal
    currency: str
    p50_latency_ms: float
    p95_latency_ms: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.calls if self.calls else 0.0


_SUMS = (
    "count(*) AS calls, sum(input_tokens)::bigint AS input_tokens,"
    " sum(output_tokens)::bigint AS output_tokens, sum(total_tokens)::bigint AS total_tokens,"
    " sum(cost) AS cost"
)


async def usage_for_user(database_url: str, user_id: str, days: int = 30) -> list[UsageBucket]:
    """A user's own usage over the last `days` days: tokens and cost by day, model and template.

    Args:
        database_url: the Postgres URL.
        user_id: whose usage.
        days: how far back (UTC days, today included).

    Returns:
        Buckets ordered by day, model, template.

    Raises:
        ServiceUnavailable: Postgres is unreachable.
    """
    query = sql.SQL(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model_id, task_template_id,"
        " currency, " + _SUMS + " FROM {table} WHERE user_id = %(user)s"
        " AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        " - make_interval(days => %(back)s)"
        " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    ).format(table=sql.Identifier(TABLE))
    rows = await _fetch(database_url, query, {"user": user_id, "back": max(days - 1, 0)})
    return [UsageBucket(**row) for row in rows]


async def usage_summary(database_url: str, days: int = 7) -> list[ModelUsage]:
    """Operator summary over the last `days` days, per provider and model.

    Args:
        database_url: the Postgres URL.
        days: how far back (24-hour periods from now).

    Returns:
        One row per provider, model and currency: calls, success count, calls
        of tasks that ended degraded, tokens, cost and p50/p95 latency.

    Raises:
        ServiceUnavailable: Postgres is unreachable.
    """
    query = sql.SQL(
        "SELECT provider, model_id, currency, "
        + _SUMS
        + ", count(*) FILTER (WHERE is_success) AS successes,"
        " count(*) FILTER (WHERE is_degraded) AS degraded,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_latency_ms,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95_latency_ms"
        " FROM {table} WHERE created_at >= now() - make_interval(days => %(days)s)"
        " GROUP BY provider, model_id, currency ORDER BY provider, model_id, currency"
    ).format(table=sql.Identifier(TABLE))
    rows = await _fetch(database_url, query, {"days": days})
    return [ModelUsage(**row) for row in rows]


@dataclass(frozen=True)
class FailedAttempt:
    """One failed LLM attempt, as the queue dashboard shows it (no user id, no text)."""

    created_at: datetime
    provider: str
    model: str
    template: str
    error_kind: str


def error_kind(error_message: str | None) -> str:
    """The kind of a logged error (`APIStatusError: HTTP 429` → `APIStatusError`, `lost: …`
    → `lost`): what comes before the first colon, reduced to identifier characters.
    """
    head = (error_message or "").split(":", 1)[0].strip()
    kept = "".join(c for c in head if c.isascii() and (c.isalnum() or c in "_.-"))
    return kept[:48] or "unknown"


async def recent_failures(
    database_url: str, minutes: int = 60, limit: int = 20
) -> list[FailedAttempt]:
    """The newest failed attempts of the last `minutes` minutes, newest first.

    Args:
        database_url: the Postgres URL.
        minutes: how far back.
        limit: at most this many rows.

    Raises:
        ServiceUnavailable: Postgres is unreachable.
    """
    query = sql.SQL(
        "SELECT created_at, provider, model_id, task_template_id, error_message FROM {table}"
        " WHERE NOT is_success AND created_at >= now() - make_interval(mins => %(minutes)s)"
        " ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
    ).format(table=sql.Identifier(TABLE))
    rows = await _fetch(database_url, query, {"minutes": minutes, "limit": limit})
    return [
        FailedAttempt(
            created_at=row["created_at"],
            provider=row["provider"],
            model=row["model_id"],
            template=row["task_template_id"],
            error_kind=error_kind(row["error_message"]),
        )
        for row in rows
    ]


async def _fetch(database_url: str, query: sql.Composed, params: dict[str, Any]) -> list[Any]:
    try:
        async with await db.connect(database_url) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable("usage: database unavailable") from exc
