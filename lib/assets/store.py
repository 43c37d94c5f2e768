"""Assets in Postgres: résumés, detailed résumés and job descriptions, owner-only.

One store for the three kinds: they share their shape (owner, language, text, where it
came from, a summary written back with its tokens) and differ in table and column names
(`_TABLES`). Every read and delete is filtered by owner, so another user's asset is
`NotFound`, never "forbidden" (its existence is not revealed).

The owner's `users` row is created by the first write that needs it, in the same
statement (a CTE), so no request pays a round trip for it; reads never touch `users`.
psycopg is imported by `lib.db.pg` on the first connection, not with this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from lib.assets.files import Kind
from lib.db.pg import Postgres, parse_id
from lib.errors import NotFound
from lib.i18n import Lang
from lib.users.owner import UPSERT_OWNER, Owner, owner_params

if TYPE_CHECKING:
    from psycopg import sql

Source = Literal["text", "pdf", "docx", "image"]
PREVIEW_CHARS = 120
MAX_LIST = 500


@dataclass(frozen=True)
class _Table:
    name: str
    text: str
    summary: str
    tokens: str
    extra: str | None  # resumes.structured_json, job_descriptions.parsed_json


_TABLES: dict[Kind, _Table] = {
    "resume": _Table(
        "resumes",
        "original_text",
        "resume_summary_json",
        "resume_summary_tokens",
        "structured_json",
    ),
    "detailed_resume": _Table(
        "detailed_resumes",
        "original_text",
        "detailed_summary_json",
        "detailed_summary_tokens",
        None,
    ),
    "jd": _Table(
        "job_descriptions", "raw_text", "job_summary_json", "job_summary_tokens", "parsed_json"
    ),
}


def table_name(kind: Kind) -> str:
    """The table of an asset kind."""
    return _TABLES[kind].name


@dataclass(frozen=True)
class NewAsset:
    """An upload, checked and ready to store (text, or a job description's screenshot)."""

    kind: Kind
    lang: Lang
    source: Source
    text: str = ""
    image: bytes | None = None
    image_mime: str | None = None

    @property
    def chars(self) -> int:
        return len(self.text)

    def content_sha256(self) -> str:
        """The summary cache's content key: SHA-256 of the text, or of the image bytes."""
        data = self.image if self.image is not None else self.text.encode("utf-8")
        return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Asset:
    """A stored asset as its owner reads it (`image` only when asked for)."""

    id: str
    kind: Kind
    user_id: str
    lang: Lang
    text: str | None
    source: Source
    chars: int
    content_sha256: str
    summary: Any
    summary_tokens: int | None
    extra: Any  # structured_json (résumé) / parsed_json (job description)
    active: bool | None  # résumés only
    image_mime: str | None
    image: bytes | None
    created_at: datetime
    updated_at: datetime

    @property
    def has_image(self) -> bool:
        return self.image_mime is not None


@dataclass(frozen=True)
class AssetListing:
    """One line of the owner's asset list: no full text."""

    id: str
    kind: Kind
    lang: Lang
    preview: str
    chars: int
    source: Source
    summarized: bool
    created_at: datetime


def _ident(name: str) -> sql.Identifier:
    from psycopg import sql

    return sql.Identifier(name)


def _q(template: str, **names: str) -> sql.Composed:
    """A statement with table/column names filled in as identifiers."""
    from psycopg import sql

    return sql.SQL(template).format(**{k: _ident(v) for k, v in names.items()})


class AssetStore:
    """The three asset tables (owner-only reads, writes that create the owner)."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def put(self, owner: Owner, asset: NewAsset) -> Asset:
        """Store an upload (and the owner's `users` row if it is their first write).

        A new résumé becomes the owner's active one (the others are marked inactive in
        the same statement).

        Returns:
            The stored asset (without the image bytes).

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        t = _TABLES[asset.kind]
        retire = ""
        if asset.kind == "resume":
            retire = (
                ", retired AS (UPDATE resumes SET active = false, updated_at = now()"
                " WHERE user_id = %(user)s AND active)"
            )
        columns = "user_id, lang, {text}, source, chars, content_sha256"
        values = "%(user)s, %(lang)s, %(text)s, %(source)s, %(chars)s, %(sha)s"
        if asset.kind == "jd":
            columns += ", image, image_mime"
            values += ", %(image)s, %(image_mime)s"
        query = _q(
            "WITH owner AS (" + UPSERT_OWNER + ")" + retire + " INSERT INTO {table}"
            " (" + columns + ") VALUES (" + values + ") RETURNING " + _select(asset.kind),
            table=t.name,
            text=t.text,
            summary=t.summary,
            tokens=t.tokens,
            extra=t.extra or t.summary,
        )
        params = {
            **owner_params(owner),
            "lang": asset.lang,
            "text": asset.text if asset.image is None else None,
            "source": asset.source,
            "chars": asset.chars,
            "sha": asset.content_sha256(),
            "image": asset.image,
            "image_mime": asset.image_mime,
        }
        async with self.pg.connection() as conn:
            cur = await conn.execute(query, params)
            row = await cur.fetchone()
        assert row is not None
        return _asset(asset.kind, row)

    async def get(
        self, kind: Kind, asset_id: str, user_id: str, *, with_image: bool = False
    ) -> Asset:
        """The asset, for its owner only.

        Raises:
            NotFound: no such asset, or it is someone else's.
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        key = parse_id(asset_id)
        if key is None:
            raise NotFound(asset_id=asset_id)
        t = _TABLES[kind]
        image = ", image" if kind == "jd" and with_image else ""
        query = _q(
            "SELECT "
            + _select(kind)
            + image
            + " FROM {table} WHERE id = %(id)s AND user_id = %(user)s",
            table=t.name,
            text=t.text,
            summary=t.summary,
            tokens=t.tokens,
            extra=t.extra or t.summary,
        )
        async with self.pg.connection() as conn:
            cur = await conn.execute(query, {"id": key, "user": user_id})
            row = await cur.fetchone()
        if row is None:
            raise NotFound(asset_id=asset_id)
        return _asset(kind, row)

    async def list(self, user_id: str, *, limit: int = 100) -> list[AssetListing]:
        """The owner's assets of every kind, newest first (a preview, never the full text).

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        parts = []
        for kind, t in _TABLES.items():
            parts.append(
                _q(
                    "SELECT '" + kind + "' AS kind, id, lang,"
                    " left(coalesce({text}, ''), %(preview)s) AS preview, chars, source,"
                    " {summary} IS NOT NULL AS summarized, created_at"
                    " FROM {table} WHERE user_id = %(user)s",
                    table=t.name,
                    text=t.text,
                    summary=t.summary,
                )
            )
        from psycopg import sql

        query = sql.SQL(" UNION ALL ").join(parts) + sql.SQL(
            " ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
        )
        params = {"user": user_id, "preview": PREVIEW_CHARS, "limit": max(1, min(limit, MAX_LIST))}
        async with self.pg.connection() as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return [
            AssetListing(
                id=row["id"].hex,
                kind=row["kind"],
                lang=row["lang"],
                preview=" ".join(row["preview"].split()),
                chars=row["chars"],
                source=row["source"],
                summarized=row["summarized"],
                created_at=row["created_at"],
            )
            for row in rows
        ]

    async def delete(self, kind: Kind, asset_id: str, user_id: str) -> None:
        """Delete the owner's asset (services that used it keep their results).

        Raises:
            NotFound: no such asset, or it is someone else's.
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        key = parse_id(asset_id)
        if key is None:
            raise NotFound(asset_id=asset_id)
        query = _q(
            "DELETE FROM {table} WHERE id = %(id)s AND user_id = %(user)s", table=table_name(kind)
        )
        async with self.pg.connection() as conn:
            cur = await conn.execute(query, {"id": key, "user": user_id})
            deleted = cur.rowcount
        if deleted != 1:
            raise NotFound(asset_id=asset_id)

    async def set_summary(
        self, kind: Kind, asset_id: str, user_id: str, summary: Any, tokens: int
    ) -> bool:
        """Write a summary back to its asset, with its tokens.

        Returns:
            False when the asset is gone (deleted meanwhile) or not the user's.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        key = parse_id(asset_id)
        if key is None:
            return False
        from psycopg.types.json import Jsonb

        t = _TABLES[kind]
        query = _q(
            "UPDATE {table} SET {summary} = %(summary)s, {tokens} = %(tokens)s,"
            " updated_at = now() WHERE id = %(id)s AND user_id = %(user)s",
            table=t.name,
            summary=t.summary,
            tokens=t.tokens,
        )
        params = {"summary": Jsonb(summary), "tokens": tokens, "id": key, "user": user_id}
        async with self.pg.connection() as conn:
            cur = await conn.execute(query, params)
            return cur.rowcount == 1


def _select(kind: Kind) -> str:
    """The columns every read returns (`{extra}` is the summary column again for a kind
    without one; `_asset` ignores it there), plus the kind's own."""
    own = {"resume": ", active", "detailed_resume": "", "jd": ", image_mime"}[kind]
    return (
        "id, user_id, lang, {text} AS text, source, chars, content_sha256,"
        " {summary} AS summary, {tokens} AS summary_tokens, {extra} AS extra,"
        " created_at, updated_at" + own
    )


def _asset(kind: Kind, row: dict[str, Any]) -> Asset:
    return Asset(
        id=row["id"].hex,
        kind=kind,
        user_id=row["user_id"],
        lang=row["lang"],
        text=row["text"],
        source=row["source"],
        chars=row["chars"],
        content_sha256=row["content_sha256"],
        summary=row["summary"],
        summary_tokens=row["summary_tokens"],
        extra=row["extra"] if _TABLES[kind].extra else None,
        active=row.get("active"),
        image_mime=row.get("image_mime"),
        image=bytes(row["image"]) if row.get("image") is not None else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
