"""User-facing text in English and Chinese (dictionaries in `lib/locales/`), and the language.

Each language has one JSON file per namespace (`lib/locales/{lang}/{namespace}.json`: `errors`
for API error messages, `common`, and one per page); nested objects flatten to dotted keys
(`errors.detail.not_json`). They are read once per process, on first use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any, Literal

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")


class MissingText(KeyError):
    """A dictionary key that the language's dictionaries do not have."""


def _flatten(prefix: str, node: Any, out: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(f"{prefix}.{key}", value, out)
    elif isinstance(node, str):
        out[prefix] = node
    else:
        raise ValueError(f"dictionary entry {prefix} is not text: {node!r}")


@functools.cache
def catalog(lang: Lang) -> Mapping[str, str]:
    """Every text of `lang`, by dotted key (`namespace.key`); read once per process.

    Raises:
        ValueError: a dictionary file is not an object of strings (a packaging bug).
    """
    out: dict[str, str] = {}
    folder = files("lib").joinpath("locales", lang)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        _flatten(entry.name.removesuffix(".json"), data, out)
    return out


def namespace(lang: Lang, name: str) -> dict[str, str]:
    """The texts of one namespace (`queues`), keyed by the whole dotted key."""
    prefix = name + "."
    return {k: v for k, v in catalog(lang).items() if k.startswith(prefix)}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def text(key: str, lang: Lang, params: Mapping[str, Any] | None = None) -> str:
    """The text of a dotted key in `lang`, with `{name}` placeholders filled.

    Raises:
        MissingText: no such key (a page must never show a key instead of its text).
    """
    try:
        template = catalog(lang)[key]
    except KeyError:
        raise MissingText(key) from None
    return template.format_map(_Blank(params or {})) if params else template


_LIST_SEPARATOR: dict[Lang, str] = {"en": ", ", "zh": "、"}
# Between the sentences of several field errors.
_SENTENCE_SEPARATOR: dict[Lang, str] = {"en": " ", "zh": ""}


def _named_list(texts: Mapping[str, str], lang: Lang, name: str, value: Any) -> str:
    """A list param shown as the texts of its items (`errors.{name}.{item}`), joined."""
    named = [texts.get(f"errors.{name}.{item}", str(item)) for item in value]
    return _LIST_SEPARATOR[lang].join(named)


def _label(texts: Mapping[str, str], field: str) -> str:
    return texts.get(f"errors.field_name.{field}") or texts["errors.field_name.unknown"]


def localize_fields(fields: Sequence[Mapping[str, Any]], lang: str) -> list[dict[str, Any]]:
    """Field errors (`lib.field_errors`) with their `message` in `lang`.

    The message names the field by its label (`errors.field_name.*`: never an English
    identifier inside a Chinese text, never the caller's own unknown names); items that
    have a message already keep it.
    """
    chosen = normalize_lang(lang) or "en"
    texts = catalog(chosen)
    out: list[dict[str, Any]] = []
    for item in fields:
        if "message" in item:
            out.append(dict(item))
            continue
        code = str(item.get("code", "invalid"))
        key = "empty" if code == "too_short" and item.get("min") == 1 else code
        template = texts.get(f"errors.field.{key}") or texts["errors.field.invalid"]
        values = _Blank({k: v for k, v in item.items() if k not in ("field", "code")})
        values["label"] = _label(texts, str(item.get("field", "")))
        one_of = item.get("one_of")
        if isinstance(one_of, list | tuple) and len(one_of) == 2:
            values["label"], values["other"] = (_label(texts, str(f)) for f in one_of)
        if "expected" in item:
            values["expected"] = texts.get(f"errors.field_type.{item['expected']}", "")
        for name, value in list(values.items()):
            if isinstance(value, list | tuple):
                values[name] = _named_list(texts, chosen, name, value)
        out.append({**item, "message": template.format_map(values)})
    return out


def message(code: str, lang: str, params: Mapping[str, Any] | None = None) -> str:
    """The user-facing text for an error code in `lang` (English when unknown).

    A list param whose items have texts under `errors.{param}.{item}` (e.g. `missing`:
    the sections a document lacks) is shown as those texts, joined in the language's way.
    `fields` (field errors) is shown as their localized messages. `{detail}` is the
    dictionary's `errors.detail.{reason}`, else the field messages; a raw `detail` (the
    exception's English text, for logs) fills it in English only, a Chinese message gets
    `errors.detail.generic` instead.
    """
    chosen = normalize_lang(lang) or "en"
    texts = catalog(chosen)
    template = texts.get(f"errors.{code}") or texts["errors.internal_error"]
    values = _Blank(params or {})
    fields = values.get("fields")
    if isinstance(fields, list | tuple) and all(isinstance(f, Mapping) for f in fields):
        joined = _SENTENCE_SEPARATOR[chosen].join(
            f["message"] for f in localize_fields(fields, chosen)
        )
        values["fields"] = joined
        if joined:
            values["detail"] = joined
    for name, value in list(values.items()):
        if isinstance(value, list | tuple):
            values[name] = _named_list(texts, chosen, name, value)
    detail = texts.get(f"errors.detail.{values.get('reason', '')}")
    if detail is not None:
        values["detail"] = detail.format_map(values)
    elif "{detail}" in template and (chosen != "en" or not values.get("detail")):
        if not (isinstance(fields, list | tuple) and fields):
            values["detail"] = texts["errors.detail.generic"]
    return template.format_map(values)


def normalize_lang(value: str | None) -> Lang | None:
    """`zh-CN`, `zh_TW`, `ZH` → `zh`; `en-US` → `en`; anything else → None."""
    if not value:
        return None
    head = value.strip().lower().replace("_", "-").split("-")[0]
    return head if head in LANGS else None


def from_accept_language(header: str | None) -> Lang | None:
    """The first supported language of an `Accept-Language` header, by q-value."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, rest = part.strip().partition(";")
        q = 1.0
        if rest.strip().startswith("q="):
            try:
                q = float(rest.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, index, tag))
    for neg_q, _, tag in sorted(ranked):
        lang = normalize_lang(tag)
        if lang and neg_q < 0:
            return lang
    return None


def choose_lang(explicit: str | None, cookie: str | None, accept_language: str | None) -> Lang:
    """Explicit `lang` → cookie `lang` → `Accept-Language` → `en`."""
    return (
        normalize_lang(explicit)
        or normalize_lang(cookie)
        or from_accept_language(accept_language)
        or "en"
    )
