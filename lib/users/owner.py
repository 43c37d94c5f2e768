"""The owner of what a write stores, and the statement that makes their `users` row.

Every write that needs an owner (an asset, a service) runs `UPSERT_OWNER` as a CTE of its
own statement: the row is made by the first such write and no request pays a round trip
for it; reads never touch `users`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lib.i18n import Lang


@dataclass(frozen=True)
class Owner:
    """Who owns what is written: the caller's id and kind, and their language for `users`."""

    user_id: str
    kind: Literal["trial", "user"]
    lang: Lang


# The owner's row, made by the first write that needs it (nothing on later writes).
UPSERT_OWNER = (
    "INSERT INTO users (id, kind, lang_pref) VALUES (%(user)s, %(user_kind)s, %(lang_pref)s)"
    " ON CONFLICT (id) DO NOTHING"
)


def owner_params(owner: Owner) -> dict[str, Any]:
    """The parameters `UPSERT_OWNER` takes."""
    return {"user": owner.user_id, "user_kind": owner.kind, "lang_pref": owner.lang}
