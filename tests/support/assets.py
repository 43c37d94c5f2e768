"""Shared pieces of the asset and upload tests: a migrated database, the producer app on it,
direct row counts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lib.db.migrate import migrate
from lib.db.pg import Postgres
from lib.redis.port import RedisPort
from producer.app import create_app
from tests.support.pg import fresh_database
from tests.support.producer import RecordingPublisher, make_settings

# Every table that holds a user's rows, with the column naming the user.
USER_TABLES: dict[str, str] = {
    "users": "id",
    "resumes": "user_id",
    "detailed_resumes": "user_id",
    "job_descriptions": "user_id",
    "summary_cache": "user_id",
    "services": "user_id",
    "llm_usage_logs": "user_id",
}


def migrated_database(server_url: str, prefix: str) -> str:
    """A fresh database with every migration applied; its URL."""
    url = fresh_database(server_url, prefix)
    asyncio.run(migrate(url))
    return url


def new_user(prefix: str = "u") -> str:
    """A signed-in user id no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def app_on(
    tmp_path: Path, redis: RedisPort, database_url: str, **overrides: Any
) -> AsyncIterator[Any]:
    """The producer app on a database (its pool closed at the end)."""
    settings = make_settings(tmp_path, database_url=database_url, **overrides)
    pg = Postgres.from_settings(settings)
    try:
        yield create_app(settings, redis=redis, publisher=RecordingPublisher(), pg=pg)
    finally:
        await pg.aclose()


def rows_of(url: str, user_id: str) -> dict[str, int]:
    """How many rows each table holds for a user (service steps through their services)."""
    counts: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        for table, column in USER_TABLES.items():
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
                    sql.Identifier(table), sql.Identifier(column)
                ),
                (user_id,),
            ).fetchone()
            assert row is not None
            counts[table] = int(row[0])
        row = conn.execute(
            "SELECT count(*) FROM service_steps s JOIN services v ON v.id = s.service_id"
            " WHERE v.user_id = %s",
            (user_id,),
        ).fetchone()
        assert row is not None
        counts["service_steps"] = int(row[0])
    return counts


def all_steps(url: str) -> int:
    """Service steps in the whole database."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM service_steps").fetchone()
    assert row is not None
    return int(row[0])
