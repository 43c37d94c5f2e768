"""Locale routing: pages live under `/{locale}/…`; a path without one goes to the caller's."""

from __future__ import annotations

from lib.i18n import LANGS, Lang, choose_lang

# The pages that exist under every locale, as paths without it: `/queues` redirects to
# `/{locale}/queues`. The home page is `/{locale}/`.
PAGES: tuple[str, ...] = ("/", "/workbench", "/queues", "/signin")


def split_locale(path: str) -> tuple[Lang | None, str]:
    """`/zh/queues` → (`zh`, `/queues`); `/zh` → (`zh`, `/`); `/queues` → (None, `/queues`)."""
    head, _, rest = path.lstrip("/").partition("/")
    for lang in LANGS:
        if head == lang:
            return lang, "/" + rest
    return None, path or "/"


def localized(lang: Lang, page: str) -> str:
    """The path of `page` (`/queues`, `/`) under `lang`: `/zh/queues`, `/zh/`."""
    return f"/{lang}{page}" if page != "/" else f"/{lang}/"


def other_lang(lang: Lang) -> Lang:
    """The language the language switch moves to."""
    return LANGS[(LANGS.index(lang) + 1) % len(LANGS)]


def redirect_target(
    path: str, query: str, *, cookie: str | None, accept_language: str | None
) -> str | None:
    """Where a path without a locale goes (the `lang` cookie, else Accept-Language, else
    en), keeping its query; None for a path that is no page.
    """
    if path not in PAGES:
        return None
    target = localized(choose_lang(None, cookie, accept_language), path)
    return f"{target}?{query}" if query else target


def safe_next(value: str | None, default: str) -> str:
    """A post-sign-in destination: a path on this site only (no `//host`, no scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(c) < 0x21 for c in value):
        return default
    return value
