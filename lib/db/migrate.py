"""Postgres connections and migrations: ordered versioned SQL files in `lib/db/migrations/`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row

logger = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
# Any constant shared by every migrator: concurrent `migrate` calls run one after the other.
_MIGRATION_LOCK = 0x736C6F74  # "slot"
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file: `NNNN_name.sql` → version `NNNN`."""

    version: str
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with the package, ordered by version."""
    folder = resources.files("lib.db").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        stem = entry.name.removesuffix(".sql")
        version, _, name = stem.partition("_")
        found.append(Migration(version, name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def connect(url: str, **kwargs: Any) -> psycopg.AsyncConnection[DictRow]:
    """Open one connection (rows as dicts, a short connect timeout so an outage fails fast).

    Raises:
        psycopg.OperationalError: the server cannot be reached.
    """
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    return await psycopg.AsyncConnection.connect(url, row_factory=dict_row, **kwargs)


async def migrate(url: str) -> list[str]:
    """Apply every migration not applied yet, each in its own transaction.

    Args:
        url: the Postgres URL.

    Returns:
        The versions applied by this call, in order (empty when up to date).

    Raises:
        psycopg.Error: the database is unreachable or a migration failed (that
            migration is rolled back; earlier ones stay applied).
    """
    table = sql.Identifier(MIGRATIONS_TABLE)
    applied: list[str] = []
    async with await connect(url, autocommit=True) as conn:
        # Lock first: even CREATE TABLE IF NOT EXISTS races with a concurrent migrator.
        await conn.execute("SELECT pg_advisory_lock(%(key)s)", {"key": _MIGRATION_LOCK})
        try:
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " version text PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            cur = await conn.execute(sql.SQL("SELECT version FROM {}").format(table))
            done = {row["version"] for row in await cur.fetchall()}
            for migration in migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    # A migration file is trusted package data: run it as one script.
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        sql.SQL("INSERT INTO {} (version, name) VALUES (%(v)s, %(n)s)").format(
                            table
                        ),
                        {"v": migration.version, "n": migration.name},
                    )
                logger.info("applied migration %s_%s", migration.version, migration.name)
                applied.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%(key)s)", {"key": _MIGRATION_LOCK})
    return applied
