"""Test helpers for Postgres: a fresh migrated database on the session server."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def fresh_database(server_url: str, prefix: str = "t") -> str:
    """Create an empty database on the server; return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server_url, dbname=name)


def count(url: str, table: str = "llm_usage_logs") -> int:
    """Rows in a table."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()
    assert row is not None
    return int(row[0])


def truncate(url: str, table: str = "llm_usage_logs") -> None:
    """Empty a table."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
