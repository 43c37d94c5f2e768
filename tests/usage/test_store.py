"""Usage records: migrations, stream append, drain to Postgres (COPY, idempotent), queries."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from lib import keys
from lib.db import migrate as db
from lib.errors import ServiceUnavailable
from lib.llm.cost import cost
from lib.local.embedded import EmbeddedPostgres
from lib.redis.port import RedisPort, load_script, run_script
from lib.redis.tcp import TcpRedis
from lib.usage import store as usage
from lib.usage.store import UsageRecord
from tests.support.pg import count, fresh_database, truncate


@pytest.fixture(scope="module")
def usage_db_url(postgres_url: str) -> str:
    """A migrated database of its own on the session Postgres."""
    url = fresh_database(postgres_url, "usage")
    asyncio.run(db.migrate(url))
    return url


@pytest.fixture
def pg(usage_db_url: str) -> Iterator[str]:
    """The usage database with an empty `llm_usage_logs`."""
    truncate(usage_db_url)
    yield usage_db_url


def rec(**overrides: object) -> UsageRecord:
    values: dict[str, object] = {
        "user_id": "u1",
        "service_id": "svc",
        "task_template_id": "job_summary",
        "provider": "deepseek",
        "model_id": "deepseek-chat",
        "input_tokens": 100,
        "output_tokens": 50,
        "total_tokens": 150,
        "latency_ms": 120,
        "cost": Decimal("0.0006"),
        "currency": "CNY",
        "is_stream": False,
        "is_success": True,
    }
    values.update(overrides)
    return UsageRecord.model_validate(values)


async def test_migrate_applies_each_version_once(postgres_url: str) -> None:
    """`migrate` applies every version on an empty database and nothing the second time."""
    url = fresh_database(postgres_url, "mig")
    assert await db.migrate(url) == ["0001", "0002", "0003"]
    assert await db.migrate(url) == []
    assert count(url, "schema_migrations") == 3


async def test_concurrent_migrations_apply_once(postgres_url: str) -> None:
    """Two migrators at once: one applies, the other finds it done (advisory lock)."""
    url = fresh_database(postgres_url, "mig")
    results = await asyncio.gather(db.migrate(url), db.migrate(url))
    assert sorted(results) == [[], ["0001", "0002", "0003"]]


SPECIFIED_COLUMNS = [
    ("id", "bigint", True),
    ("user_id", "text", True),
    ("service_id", "text", True),
    ("task_template_id", "text", True),
    ("provider", "text", True),
    ("model_id", "text", True),
    ("input_tokens", "integer", True),
    ("output_tokens", "integer", True),
    ("total_tokens", "integer", True),
    ("latency_ms", "integer", True),
    ("cost", "numeric", True),
    ("is_stream", "boolean", True),
    ("is_success", "boolean", True),
    ("error_message", "character varying", False),
    ("created_at", "timestamp with time zone", True),
]
ADDED_COLUMNS = ["source_id", "currency", "task_id", "attempt", "is_degraded"]


def _columns(url: str) -> list[tuple[str, str, bool, int | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable = 'NO', character_maximum_length"
            " FROM information_schema.columns WHERE table_name = 'llm_usage_logs'"
            " ORDER BY ordinal_position"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _indexes(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'llm_usage_logs'"
        ).fetchall()
    return {r[0]: r[1] for r in rows}


async def test_table_has_the_specified_columns_and_indexes(usage_db_url: str) -> None:
    """llm_usage_logs: the specified columns in order, additions after; the two indexes."""
    columns = _columns(usage_db_url)
    assert [c[:3] for c in columns[: len(SPECIFIED_COLUMNS)]] == SPECIFIED_COLUMNS
    assert [c[0] for c in columns[len(SPECIFIED_COLUMNS) :]] == ADDED_COLUMNS
    assert dict((c[0], c[3]) for c in columns)["error_message"] == 500
    defs = set(_indexes(usage_db_url).values())
    assert any(d.endswith("USING btree (user_id, created_at DESC)") for d in defs), defs
    assert any(d.endswith("USING btree (task_template_id, created_at DESC)") for d in defs), defs
    assert list(usage.COLUMNS) == [c[0] for c in columns[1:]]  # the drain writes them all


V1_INSERT = (
    "INSERT INTO llm_usage_logs (source_id, user_id, service_id, template, provider, model,"
    " input_tokens, output_tokens, total_tokens, latency_ms, cost, currency, is_stream,"
    " success, error_message, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    " %s, %s, %s, %s, %s, %s)"
)


async def test_migration_0002_keeps_every_row_of_0001(
    postgres_url: str, tcp_redis: TcpRedis
) -> None:
    """A 0001 table with rows, migrated: every row is there under the new names, ids kept."""
    url = fresh_database(postgres_url, "mig")
    with psycopg.connect(url) as conn:
        conn.execute(db.migrations()[0].sql.encode())
        conn.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO schema_migrations VALUES ('0001', 'llm_usage_logs')")
        base = datetime(2025, 3, 1, 12, tzinfo=UTC)
        rows = [
            (
                f"1-{i}:0",
                f"user{i % 3}",
                "svc",
                ["job_match", "job_summary", "interview_prep"][i % 3],
                "deepseek" if i % 2 else "offline",
                "deepseek-chat" if i % 2 else "glm-4.5-flash",
                10 * i,
                5 * i,
                15 * i,
                100 + i,
                Decimal(i) / 1000,
                "USD" if i == 4 else "CNY",
                i % 2 == 0,
                i % 5 != 0,
                None if i % 5 else f"HTTP 500 #{i}",
                base + timedelta(minutes=i),
            )
            for i in range(12)
        ]
        conn.cursor().executemany(V1_INSERT, rows)
        conn.execute("DELETE FROM llm_usage_logs WHERE source_id = '1-3:0'")  # a gap in ids
        before = conn.execute("SELECT * FROM llm_usage_logs ORDER BY id").fetchall()
        top = conn.execute("SELECT max(id) FROM llm_usage_logs").fetchone()
    assert len(before) == 11 and top is not None

    assert await db.migrate(url) == ["0002", "0003"]

    with psycopg.connect(url) as conn:
        after = conn.execute(
            "SELECT id, source_id, user_id, service_id, task_template_id, provider, model_id,"
            " input_tokens, output_tokens, total_tokens, latency_ms, cost, currency, is_stream,"
            " is_success, error_message, created_at FROM llm_usage_logs ORDER BY id"
        ).fetchall()
        added = conn.execute(
            "SELECT DISTINCT task_id, attempt, is_degraded FROM llm_usage_logs"
        ).fetchall()
    assert after == before  # same rows, same ids, same values, column for column
    assert added == [(None, None, False)]
    # New rows continue after the largest old id.
    await usage.append(tcp_redis, [rec(task_id="t1", attempt=2, is_degraded=True)])
    assert await usage.drain(tcp_redis, url) == 1
    with psycopg.connect(url) as conn:
        new = conn.execute(
            "SELECT id, task_id, attempt, is_degraded FROM llm_usage_logs WHERE task_id = 't1'"
        ).fetchone()
    assert new == (top[0] + 1, "t1", 2, True)
    assert await db.migrate(url) == []


def test_records_round_trip_through_the_stream_encoding() -> None:
    """encode → decode keeps every field and numbers rows by entry id and index."""
    records = [rec(), rec(is_success=False, error_message="HTTP 500", cost=Decimal(0))]
    rows = usage.decode("1-0", usage.encode(records))
    first = dict(zip(usage.COLUMNS, rows[0], strict=True))
    assert [dict(zip(usage.COLUMNS, r, strict=True))["source_id"] for r in rows] == [
        "1-0:0",
        "1-0:1",
    ]
    assert first["cost"] == Decimal("0.0006") and first["created_at"] == records[0].created_at
    assert dict(zip(usage.COLUMNS, rows[1], strict=True))["error_message"] == "HTTP 500"


async def test_rows_queued_by_the_previous_release_still_drain(redis: RedisPort, pg: str) -> None:
    """A stream entry with the 0001 names (template, model, success) lands in the new columns."""
    old = {
        "user_id": "u1",
        "service_id": "svc",
        "template": "job_match",
        "provider": "zhipu",
        "model": "glm-4.5",
        "success": False,
        "error_message": "x" * 900,
        "created_at": 1_767_225_600_000,
    }
    await redis.execute("XADD", keys.usage_stream(), "*", "rows", json.dumps([old]))
    assert await usage.drain(redis, pg) == 1
    with psycopg.connect(pg) as conn:
        row = conn.execute(
            "SELECT task_template_id, model_id, is_success, length(error_message), created_at"
            " FROM llm_usage_logs"
        ).fetchone()
    assert row == ("job_match", "glm-4.5", False, 500, datetime(2026, 1, 1, tzinfo=UTC))


def test_error_message_is_cut_at_500_characters() -> None:
    """A record never carries more error text than the column holds."""
    assert rec(error_message="é" * 501).error_message == "é" * 500


@pytest.mark.parametrize(
    ("model", "tokens", "expected"),
    [
        ("deepseek-chat", (1_000_000, 0), (Decimal("2.00000000"), "CNY")),
        ("deepseek-chat", (0, 1_000_000), (Decimal("8.00000000"), "CNY")),
        ("deepseek-reasoner", (1000, 500), (Decimal("0.01200000"), "CNY")),
        ("glm-4.5-flash", (5000, 5000), (Decimal("0E-8"), "CNY")),
        ("unknown-model", (10, 10), (Decimal(0), "CNY")),
    ],
)
def test_cost_from_price_table(
    model: str, tokens: tuple[int, int], expected: tuple[Decimal, str]
) -> None:
    """cost() = input × input price + output × output price, per million tokens."""
    assert cost(model, *tokens) == expected


def test_cost_uses_a_given_price_table() -> None:
    """A custom table (settings' `prices`) overrides prices and currency."""
    table: dict[str, dict[str, float | str]] = {"m": {"input": 1.5, "output": 3, "currency": "USD"}}
    assert cost("m", 2_000_000, 1_000_000, prices=table) == (Decimal("6.00000000"), "USD")


async def test_append_is_one_stream_entry_per_batch(redis: RedisPort) -> None:
    """Three records go out in one XADD; nothing is sent for an empty batch."""
    assert await usage.append(redis, []) is None
    await usage.append(redis, [rec(), rec(), rec()])
    assert await usage.pending(redis) == 1


async def test_drain_copies_rows_and_removes_entries(redis: RedisPort, pg: str) -> None:
    """drain writes every record with its fields and empties the stream."""
    await usage.append(redis, [rec(), rec(is_success=False, error_message="boom")])
    await usage.append(redis, [rec(user_id="u2", is_stream=True)])
    assert await usage.drain(redis, pg) == 3
    assert await usage.pending(redis) == 0
    with psycopg.connect(pg) as conn:
        rows = conn.execute(
            "SELECT user_id, is_success, error_message, is_stream, cost, total_tokens"
            " FROM llm_usage_logs ORDER BY source_id"
        ).fetchall()
    assert rows == [
        ("u1", True, None, False, Decimal("0.00060000"), 150),
        ("u1", False, "boom", False, Decimal("0.00060000"), 150),
        ("u2", True, None, True, Decimal("0.00060000"), 150),
    ]
    assert await usage.drain(redis, pg) == 0


async def test_drain_works_in_batches(redis: RedisPort, pg: str) -> None:
    """More entries than `batch` are flushed over several transactions in one call."""
    for _ in range(7):
        await usage.append(redis, [rec()])
    assert await usage.drain(redis, pg, batch=3) == 7
    assert count(pg) == 7 and await usage.pending(redis) == 0


async def test_drain_is_idempotent_after_commit_without_delete(redis: RedisPort, pg: str) -> None:
    """Rows committed but entry not deleted (crash): the next drain inserts nothing twice."""
    await usage.append(redis, [rec(), rec()])
    entries = await redis.execute("XRANGE", keys.usage_stream(), "-", "+")
    _, rows = usage._rows_of(entries)
    async with await db.connect(pg) as conn:
        assert await usage._insert(conn, rows) == 2  # committed; XDEL never happened
    assert await usage.pending(redis) == 1
    assert await usage.drain(redis, pg) == 0
    assert count(pg) == 2 and await usage.pending(redis) == 0


async def test_drain_skips_while_another_holds_the_lock(redis: RedisPort, pg: str) -> None:
    """A concurrent drain (lock held) returns 0 and asks the holder for one more pass."""
    await usage.append(redis, [rec()])
    await redis.execute("SET", keys.usage_drain_lock(), "other", "PX", 10_000)
    assert await usage.drain(redis, pg) == 0
    assert await usage.pending(redis) == 1
    assert await redis.execute("GET", keys.usage_drain_lock()) == "other"
    # The holder, releasing after its last read, is told to pass again (and keeps the
    # lock); the next release lets it go.
    unlock = load_script("lib.usage", "drain_unlock")
    lock, again = keys.usage_drain_lock(), keys.usage_drain_again()
    assert await run_script(redis, unlock, [lock, again], ["other"]) == 2
    assert await run_script(redis, unlock, [lock, again], ["other"]) == 1
    assert await redis.execute("EXISTS", lock) == 0


async def test_rows_that_arrive_during_a_drain_are_drained_by_it(redis: RedisPort, pg: str) -> None:
    """Two tasks end while one drain runs: the second's drain leaves it to the first, which
    takes another pass: nothing stays in Redis."""
    await usage.append(redis, [rec()])
    real_insert = usage._insert
    arrived = asyncio.Event()

    async def slow_insert(conn: object, rows: list[tuple[object, ...]]) -> int:
        if not arrived.is_set():
            await usage.append(redis, [rec()])  # the next task's row, mid-drain
            assert await usage.drain(redis, pg) == 0  # its own drain: the lock is held
            arrived.set()
        return await real_insert(conn, rows)  # type: ignore[arg-type]

    usage._insert = slow_insert  # type: ignore[assignment]
    try:
        assert await usage.drain(redis, pg) == 2
    finally:
        usage._insert = real_insert
    assert await usage.pending(redis) == 0 and count(pg) == 2


async def test_undecodable_entry_is_logged_and_dropped(
    redis: RedisPort, pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt entry does not block the others; it is logged with its content."""
    await redis.execute("XADD", keys.usage_stream(), "*", "rows", "not json")
    await usage.append(redis, [rec()])
    with caplog.at_level(logging.ERROR, "lib.usage.store"):
        assert await usage.drain(redis, pg) == 1
    assert "undecodable" in caplog.text and "not json" in caplog.text
    assert await usage.pending(redis) == 0


async def test_rows_arrive_after_postgres_comes_back(redis: RedisPort, pg_tmp: Path) -> None:
    """Postgres stopped: drain fails, entries stay; restarted: every row arrives."""
    server = EmbeddedPostgres(data_dir=pg_tmp / "pg")
    url = server.start()
    try:
        await db.migrate(url)
        await usage.append(redis, [rec(), rec(is_success=False)])
        server.stop()
        await usage.append(redis, [rec(user_id="u3")])
        with pytest.raises(ServiceUnavailable):
            await usage.drain(redis, url)
        assert await usage.pending(redis) == 2
        assert await redis.execute("EXISTS", keys.usage_drain_lock()) == 0  # released
        url = server.start()
        assert await usage.drain(redis, url) == 3
        assert count(url) == 3 and await usage.pending(redis) == 0
    finally:
        server.stop()


async def test_usage_for_user_groups_by_day_model_template(redis: RedisPort, pg: str) -> None:
    """A user's usage: tokens and cost summed by day, model and template; others excluded."""
    today = datetime.now(UTC)
    yesterday = today - timedelta(days=1)
    await usage.append(
        redis,
        [
            rec(created_at=today),
            rec(created_at=today, input_tokens=10, output_tokens=5, total_tokens=15),
            rec(created_at=today, task_template_id="job_match", model_id="glm-4.5"),
            rec(created_at=yesterday),
            rec(created_at=today - timedelta(days=40)),
            rec(user_id="someone-else", created_at=today),
        ],
    )
    await usage.drain(redis, pg)
    buckets = await usage.usage_for_user(pg, "u1", days=30)
    summary = [
        (b.day, b.model_id, b.task_template_id, b.calls, b.total_tokens, b.cost) for b in buckets
    ]
    assert summary == [
        (yesterday.date(), "deepseek-chat", "job_summary", 1, 150, Decimal("0.00060000")),
        (today.date(), "deepseek-chat", "job_summary", 2, 165, Decimal("0.00120000")),
        (today.date(), "glm-4.5", "job_match", 1, 150, Decimal("0.00060000")),
    ]
    assert [b.day for b in await usage.usage_for_user(pg, "u1", days=1)] == [today.date()] * 2


async def test_usage_summary_per_model(redis: RedisPort, pg: str) -> None:
    """Operator summary: calls, success rate, tokens, cost and latency percentiles per model."""
    records = [rec(latency_ms=ms) for ms in range(10, 110, 10)]
    records += [rec(is_success=False, latency_ms=1000), rec(provider="zhipu", model_id="glm-4.5")]
    await usage.append(redis, records)
    await usage.drain(redis, pg)
    summary = {s.model_id: s for s in await usage.usage_summary(pg, days=1)}
    ds = summary["deepseek-chat"]
    assert (ds.calls, ds.successes, ds.total_tokens) == (11, 10, 1650)
    assert ds.success_rate == pytest.approx(10 / 11)
    assert ds.p50_latency_ms == pytest.approx(60.0)
    assert ds.p95_latency_ms == pytest.approx(550.0)
    assert ds.cost == Decimal("0.00660000")
    assert summary["glm-4.5"].provider == "zhipu" and summary["glm-4.5"].calls == 1


async def test_queries_raise_service_unavailable_when_postgres_is_down(tmp_path: Path) -> None:
    """A query against an unreachable database is a 503-class error, not a crash."""
    url = f"postgresql://nobody@/postgres?host={tmp_path}&connect_timeout=1"
    with pytest.raises(ServiceUnavailable):
        await usage.usage_summary(url)
