"""The en/zh dictionaries (`lib/locales/`): complete in both languages, used as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lib.app.demo_view import LATER, STATUSES, STEPS
from lib.errors import SlotlineError
from lib.i18n import LANGS, MissingText, catalog, message, namespace, text
from tests.support.paths import ROOT

WEB = ROOT / "producer" / "web"
# Product, model and format names that a Chinese text keeps in Latin letters, and the
# switch's own label (the other language's name, written in it).
ALLOWED_LATIN = {
    "slotline",
    "PDF",
    "DOCX",
    "Word",
    "doc",
    "UTF",
    "PNG",
    "JPEG",
    "WebP",
    "GIF",
    "data",
    "URL",
    "JSON",
    "Cookie",
    "English",
}
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _error_codes() -> set[str]:
    codes: set[str] = set()
    stack: list[type[SlotlineError]] = [SlotlineError]
    while stack:
        cls = stack.pop()
        codes.add(cls.code)
        stack.extend(cls.__subclasses__())
    return codes


def test_every_key_exists_in_every_language() -> None:
    """A key that exists in one language only fails (and no text is empty)."""
    keys = {lang: set(catalog(lang)) for lang in LANGS}
    for lang in LANGS:
        for other in LANGS:
            assert not keys[lang] - keys[other], (lang, "not in", other, keys[lang] - keys[other])
        assert all(value.strip() for value in catalog(lang).values()), lang


def test_placeholders_match_across_languages() -> None:
    """Each text has the same `{placeholders}` in every language."""
    for key, en in catalog("en").items():
        for lang in LANGS:
            assert set(PLACEHOLDER.findall(catalog(lang)[key])) == set(PLACEHOLDER.findall(en)), key


def test_chinese_texts_have_no_english_words() -> None:
    """No English inside a Chinese text, except a few product and format names."""
    for key, value in catalog("zh").items():
        words = set(re.findall(r"[A-Za-z]{2,}", PLACEHOLDER.sub("", value)))
        assert words <= ALLOWED_LATIN, (key, value, words - ALLOWED_LATIN)


def test_every_error_code_has_a_message() -> None:
    """Every code of the error hierarchy has its `errors.*` text in both languages."""
    for code in _error_codes():
        for lang in LANGS:
            assert f"errors.{code}" in catalog(lang), (code, lang)


@pytest.mark.parametrize(
    ("code", "lang", "params", "expected"),
    [
        ("rate_limited", "zh", {"retry_after": 3}, "请求过于频繁，请在 3 秒后重试。"),
        (
            "queue_full",
            "en-US",
            {"retry_after": 5},
            "The queue is full right now. Try again in 5 seconds.",
        ),
        (
            "invalid_request",
            "zh",
            {"reason": "not_json", "detail": "x"},
            "请求无效：请求体不是有效的 JSON。",
        ),
        ("invalid_request", "en", {"detail": "bad thing"}, "Invalid request: bad thing"),
        ("no_such_code", "fr", None, "Internal error."),
        ("image_too_large", "zh", None, "图片超过  字节。"),
    ],
)
def test_message_keeps_its_contract(
    code: str, lang: str, params: dict[str, object] | None, expected: str
) -> None:
    """`message(code, lang, params)` answers as before the move to data files."""
    assert message(code, lang, params) == expected


def test_text_of_a_missing_key_raises() -> None:
    """A page never shows a key: asking for a missing one raises."""
    with pytest.raises(MissingText):
        text("queues.no_such_key", "en")
    assert text("common.signed_in_as", "zh", {"user": "alice"}) == "已登录：alice"
    assert set(namespace("en", "queues")) == {k for k in catalog("en") if k.startswith("queues.")}


def _keys_used(pattern: str, suffix: str) -> set[str]:
    found: set[str] = set()
    for path in WEB.rglob(f"*{suffix}"):
        found |= set(re.findall(pattern, path.read_text(encoding="utf-8")))
    return found


def test_templates_and_scripts_name_only_existing_keys() -> None:
    """Every `t("…")` in a template or script names a key of the dictionaries."""
    used = _keys_used(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']\s*[,)]""", ".html")
    used |= _keys_used(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']\s*[,)]""", ".js")
    used |= _keys_used(r"""data-empty-key="([a-z_.]+)\"""", ".html")
    assert len(used) > 40
    assert not used - set(catalog("en")), used - set(catalog("en"))


def test_the_demo_names_only_existing_keys() -> None:
    """The demo (`lib/app/demo*.py`) asks only for keys of the `demo` namespace, and for all.

    Its literal keys (`t("report.total")`) and those it makes from data (a step's name, a
    status, a tier, a count, a block's title, a report column) exist in both languages;
    the namespace has no other key.
    """
    used: set[str] = set()
    for path in (ROOT / "lib" / "app").glob("demo*.py"):
        source = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_]+(?:\.[a-z_]+)*)["']""", source))
    assert len(used) > 60, used
    made = {f"step.{s}" for s in ("service", *STEPS)} | {f"status.{s}" for s in STATUSES}
    made |= {f"block.{s}" for s in LATER} | {"tier.free", "tier.paid"}
    made |= {f"input.{s}" for s in ("resume", "detailed_resume", "jd")}
    made |= {f"source.{s}" for s in ("text", "pdf", "docx")}
    made |= {"timeline.summaries_done", "timeline.summaries_done_parallel"}
    columns = ("step", "task", "status", "queue", "model", "start", "end", "in", "out", "cost")
    made |= {f"report.col_{c}" for c in columns}
    for name in ("skill", "role", "project", "must_have", "nice_to_have", "quota_unit"):
        made |= {f"count.{name}_one", f"count.{name}_other"}
    for lang in LANGS:
        assert set(namespace(lang, "demo")) == {f"demo.{k}" for k in used | made}, lang


def test_dictionaries_are_read_once_per_process() -> None:
    """The files are read on first use only (functools.cache), not at import."""
    code = (
        "import lib.i18n as i; assert i.catalog.cache_info().currsize == 0; "
        "i.message('not_found', 'en'); i.message('not_found', 'zh'); i.message('x', 'en'); "
        "print(i.catalog.cache_info().misses)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "2"
