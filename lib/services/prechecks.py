"""Checks a service's assets pass before anything is queued or charged.

Each failure is a localized 422 with a stable code and an `asset` param naming the
input it concerns: the text is long enough (`text_too_short`), shows the sections a
résumé and a job description need (`sections_missing`, naming them), and every asset is
in the service's language (`language_mismatch`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lib import headings
from lib.assets import language
from lib.errors import LanguageMismatch, SectionsMissing, TextTooShort
from lib.i18n import Lang
from lib.settings import Settings

AssetName = Literal["resume", "detailed_resume", "jd"]

# Headings (en and zh) by section (lib/headings.py). A heading is a short line that starts
# with one of these (case-insensitive), with or without a colon. A résumé's "projects"
# count as experience (a graduate's résumé).
_SECTIONS: dict[str, tuple[str, ...]] = {
    "summary": headings.RESUME["summary"],
    "experience": headings.RESUME["experience"] + headings.RESUME["projects"],
    "skills": headings.RESUME["skills"],
    **headings.JOB,
}
# An e-mail, a phone number (9 digits or more: "2019-2023" is a period, not a number), a
# profile link.
_CONTACT = re.compile(
    r"[\w.+-]+@[\w-]+\.[\w.]+|\+?\d(?:[\s()-]?\d){8,14}|linkedin\.com|github\.com"
)
_HEADING_MAX = 40

RESUME_SECTIONS = ("header", "summary", "experience", "skills")
JD_SECTIONS = ("responsibilities", "requirements")


def sections(text: str) -> set[str]:
    """The sections a text shows: headings found, and `header` for contact details."""
    found: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip().strip("#*").strip().lower()
        if not line or len(line) > _HEADING_MAX:
            continue
        for name, heads in _SECTIONS.items():
            if any(line.startswith(head) for head in heads):
                found.add(name)
    if _CONTACT.search(text[:2000]):
        found.add("header")
    return found


def resume_missing(text: str) -> list[str]:
    """What a résumé lacks: it needs experience and three of its four sections."""
    shown = sections(text)
    missing = [s for s in RESUME_SECTIONS if s not in shown]
    if "experience" in missing or len(missing) > 1:
        return missing
    return []


def jd_missing(text: str) -> list[str]:
    """What a job description lacks: its responsibilities or its requirements."""
    shown = sections(text)
    return [s for s in JD_SECTIONS if s not in shown]


@dataclass(frozen=True)
class Asset:
    """One asset as a precheck sees it."""

    name: AssetName
    lang: Lang
    text: str | None  # None: a screenshot (read by the vision model, not checked here)


def check(assets: list[Asset], service_lang: Lang, settings: Settings) -> None:
    """Raise the first precheck failure (length, then sections, then language).

    Raises:
        TextTooShort: an asset's text is under its minimum (`asset`, `chars`, `min_chars`).
        SectionsMissing: a résumé or job description lacks sections (`asset`, `missing`).
        LanguageMismatch: an asset is not in the service's language (`asset`, `detected`).
    """
    minimum = {
        "resume": settings.text_min_chars_resume,
        "detailed_resume": settings.text_min_chars_detailed_resume,
        "jd": settings.text_min_chars_jd,
    }
    for asset in assets:
        if asset.text is not None and len(asset.text) < minimum[asset.name]:
            raise TextTooShort(
                f"{asset.name}: {len(asset.text)} < {minimum[asset.name]}",
                asset=asset.name,
                chars=len(asset.text),
                min_chars=minimum[asset.name],
            )
    for asset in assets:
        if asset.text is None or asset.name == "detailed_resume":
            continue
        missing = resume_missing(asset.text) if asset.name == "resume" else jd_missing(asset.text)
        if missing:
            raise SectionsMissing(
                f"{asset.name} lacks {missing}",
                asset=asset.name,
                missing=missing,
                reason=f"sections_{asset.name}",
            )
    for asset in assets:
        if asset.lang != service_lang:
            raise LanguageMismatch(
                f"{asset.name} is {asset.lang}, the service {service_lang}",
                reason="service_languages",
                asset=asset.name,
                detected=asset.lang,
                declared=service_lang,
            )
        if asset.text is not None:
            try:
                language.check(service_lang, asset.text)
            except LanguageMismatch as exc:
                exc.params["asset"] = asset.name
                raise
