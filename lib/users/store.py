"""The `users` table: the owner row of every asset and service, and erasing a user.

A row is made by the first write that needs an owner (an upload, a service), inside that
write's own statement (`lib.users.owner.UPSERT_OWNER`): requests that only read never
touch this table. `users.id` is the caller's identity (a signed-in id or a trial id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lib.db.pg import Postgres
from lib.users.owner import UPSERT_OWNER, Owner, owner_params

# Every table whose rows a user owns, counted before an erase (the cascade deletes them).
OWNED_TABLES: tuple[str, ...] = (
    "resumes",
    "detailed_resumes",
    "job_descriptions",
    "services",
    "summary_cache",
)


@dataclass(frozen=True)
class User:
    """A `users` row."""

    id: str
    kind: str
    email: str | None
    lang_pref: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ErasedRows:
    """What an erase removed from Postgres: rows per owned table, and the user row."""

    tables: dict[str, int]
    user: bool
    usage_rows_detached: int


class UserStore:
    """Reads, lazy creation and erasure of `users` rows."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def ensure(self, owner: Owner) -> None:
        """Create the owner's row if it does not exist yet (for a write that has no asset).

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            await conn.execute(UPSERT_OWNER, owner_params(owner))

    async def get(self, user_id: str) -> User | None:
        """The user's row, or None before their first write.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT id, kind, email, lang_pref, created_at, updated_at FROM users"
                " WHERE id = %(user)s",
                {"user": user_id},
            )
            row = await cur.fetchone()
        return User(**row) if row is not None else None

    async def erase(self, user_id: str) -> ErasedRows:
        """Delete everything the user owns in Postgres, in one transaction.

        The `users` row goes, and with it (ON DELETE CASCADE) their résumés, detailed
        résumés, job descriptions, cached summaries, services and service steps. Their
        LLM usage rows stay for accounting, detached from them (`lib.usage.store.forget_user`).
        Erasing a user who has nothing is a no-op.

        Returns:
            The rows removed per owned table, whether a user row existed, and how many
            usage rows were detached.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable (nothing changed).
        """
        from psycopg import sql

        from lib.usage.store import forget_user

        counts = sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM {} WHERE user_id = %(user)s) AS {}").format(
                sql.Identifier(table), sql.Identifier(table)
            )
            for table in OWNED_TABLES
        )
        params = {"user": user_id}
        async with self.pg.connection() as conn, conn.transaction():
            cur = await conn.execute(sql.SQL("SELECT ") + counts, params)
            row = await cur.fetchone()
            assert row is not None
            cur = await conn.execute("DELETE FROM users WHERE id = %(user)s", params)
            had_user = cur.rowcount == 1
            detached = await forget_user(conn, user_id)
        return ErasedRows({t: int(row[t]) for t in OWNED_TABLES}, had_user, detached)
