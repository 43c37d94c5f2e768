"""The summary cache: a summary already made of the same content is reused, not made again.

A summary is keyed by (owner, the content's SHA-256, template, output language, model,
prompt version): the same résumé uploaded twice, or used by a later service, hits; a new
model or a changed prompt misses. Per owner, so erasing a user erases the summaries of
their documents and one user's hit says nothing about another's documents. The asset's
own summary columns (`resume_summary_json`, ...) hold the summary its latest service
wrote back; this table is what a later service looks up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lib.db.pg import Postgres


@dataclass(frozen=True)
class CacheKey:
    """What a summary depends on."""

    user_id: str
    content_sha256: str
    template: str
    lang: str
    model: str
    prompt_version: str

    def params(self) -> dict[str, str]:
        return {
            "user": self.user_id,
            "sha": self.content_sha256,
            "template": self.template,
            "lang": self.lang,
            "model": self.model,
            "version": self.prompt_version,
        }


@dataclass(frozen=True)
class CachedSummary:
    """A cached summary: the task's validated result and its tokens."""

    result: Any
    tokens: int
    created_at: datetime


_WHERE = (
    "user_id = %(user)s AND content_sha256 = %(sha)s AND template = %(template)s"
    " AND lang = %(lang)s AND model = %(model)s AND prompt_version = %(version)s"
)


class SummaryCache:
    """`summary_cache` rows (the owner's `users` row must exist: an asset made it)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def get(self, key: CacheKey) -> CachedSummary | None:
        """The cached summary, or None.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT result_json, tokens, created_at FROM summary_cache WHERE " + _WHERE,
                key.params(),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return CachedSummary(row["result_json"], row["tokens"], row["created_at"])

    async def put(self, key: CacheKey, result: Any, tokens: int) -> bool:
        """Remember a summary (the first one made for a key stays).

        Returns:
            True when this call stored it.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        from psycopg.types.json import Jsonb

        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO summary_cache (user_id, content_sha256, template, lang, model,"
                " prompt_version, result_json, tokens) VALUES (%(user)s, %(sha)s,"
                " %(template)s, %(lang)s, %(model)s, %(version)s, %(result)s, %(tokens)s)"
                " ON CONFLICT DO NOTHING",
                {**key.params(), "result": Jsonb(result), "tokens": tokens},
            )
            return cur.rowcount == 1
