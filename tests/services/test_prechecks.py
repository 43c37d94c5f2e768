"""Service prechecks: lengths, sections (en and zh headings), one language; localized."""

from __future__ import annotations

import pytest

from lib.errors import LanguageMismatch, SectionsMissing, SlotlineError, TextTooShort
from lib.http.errors import error_response
from lib.services.prechecks import Asset, check, jd_missing, resume_missing, sections
from lib.settings import Settings
from tests.support.paths import EXAMPLES


def example(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


def body(exc: SlotlineError, lang: str) -> dict[str, object]:
    import json

    return dict(json.loads(bytes(error_response(exc, lang).body)))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("resume.en.txt", "resume"),
        ("resume.zh.txt", "resume"),
        ("detailed_resume.en.txt", "resume"),
        ("job.en.txt", "jd"),
        ("job.zh.txt", "jd"),
    ],
)
def test_the_examples_pass(name: str, kind: str) -> None:
    """Our own example documents show every section a service needs."""
    missing = resume_missing if kind == "resume" else jd_missing
    assert missing(example(name)) == []


def test_sections_are_found_by_heading_in_both_languages() -> None:
    """Headings count in English and Chinese, with colons, markdown marks or in capitals."""
    assert sections("## Work Experience:\n...\nSKILLS\nPython") == {"experience", "skills"}
    assert sections("岗位职责：\n- 写代码\n任职要求\n- Python") == {
        "responsibilities",
        "requirements",
    }
    assert "header" in sections("Ann Lee · ann@example.com\n")
    # A long line that merely mentions "experience" is not a heading.
    assert sections("I have experience with Python and many other things besides.") == set()


def test_a_resume_without_experience_is_refused_naming_what_is_missing() -> None:
    """A résumé needs its experience and three of its four sections."""
    text = "Ann Lee\nann@example.com\nSummary\nI like Python.\nSkills\nPython\n" * 3
    assert resume_missing(text) == ["experience"]
    text = "Ann Lee\nExperience\nAcme 2020-2024, built things.\n" * 3
    assert resume_missing(text) == ["header", "summary", "skills"]


def settings() -> Settings:
    return Settings(text_min_chars_resume=150, text_min_chars_jd=80)


def test_prechecks_in_order_with_the_asset_named() -> None:
    """Too short first, then sections, then language; each error names its input."""
    resume = Asset("resume", "en", example("resume.en.txt"))
    jd = Asset("jd", "en", example("job.en.txt"))
    with pytest.raises(TextTooShort) as short:
        check([resume, Asset("jd", "en", "Python role.")], "en", settings())
    assert short.value.params["asset"] == "jd"
    with pytest.raises(SectionsMissing) as lacking:
        check([resume, Asset("jd", "en", "We want a Python engineer. " * 10)], "en", settings())
    assert lacking.value.params["missing"] == ["responsibilities", "requirements"]
    with pytest.raises(LanguageMismatch) as mixed:
        check([resume, Asset("jd", "zh", example("job.zh.txt"))], "en", settings())
    assert mixed.value.params["asset"] == "jd"
    with pytest.raises(LanguageMismatch) as mislabeled:
        check([Asset("resume", "en", example("resume.zh.txt")), jd], "en", settings())
    assert mislabeled.value.params["asset"] == "resume"
    check([resume, jd, Asset("jd", "en", None)], "en", settings())  # a screenshot passes


def test_sections_missing_is_localized_with_section_names() -> None:
    """The message names the missing sections in the caller's language, codes in the body."""
    exc = SectionsMissing(
        "x", asset="jd", missing=["responsibilities", "requirements"], reason="sections_jd"
    )
    en, zh = body(exc, "en"), body(exc, "zh")
    assert en["missing"] == zh["missing"] == ["responsibilities", "requirements"]
    assert en["asset"] == "jd" and "responsibilities, requirements" in str(en["message"])
    assert "岗位职责、任职要求" in str(zh["message"])
    assert error_response(exc, "zh").status_code == 422
