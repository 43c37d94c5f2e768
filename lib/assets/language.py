"""Which language a text is in (English or Chinese), and whether it is the declared one.

No detector library: telling Chinese from English needs only the share of Chinese
characters. The share is counted in *units* that carry about the same meaning: one Han
character, or one Latin word. Counting letters instead would call Chinese text with
English terms English ("熟悉 Python、Kubernetes 和 AWS" has 3 Han characters and 19 Latin
letters, but 3 words: half its units are Chinese). Digits, punctuation and other scripts
do not count.

Thresholds (units that are Han characters):
- `detect()`: Chinese from `ZH_SHARE` (30 %) up. A Chinese résumé full of English tool
  names stays well above it (examples/resume.zh.txt: 89 %); an English one naming Chinese
  companies, schools or cities stays well below (a few %).
- `check()`: a declared language is refused only when the text is clearly the other one:
  declared English with at least `CLEARLY_ZH` (50 %), declared Chinese under
  `CLEARLY_EN` (10 %). Between the two, mixed text keeps the language its writer chose.
  A text with fewer than `MIN_UNITS` units is never refused (nothing to tell from).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lib.errors import LanguageMismatch
from lib.i18n import Lang

ZH_SHARE = 0.30
CLEARLY_ZH = 0.50
CLEARLY_EN = 0.10
MIN_UNITS = 10

# CJK Unified Ideographs, Extension A, Compatibility Ideographs, Extensions B-H.
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
# A Latin word: ASCII letters and the Latin-1/Extended-A/B letters (é, ü, ł, ...).
_LATIN_WORD = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f]+")


@dataclass(frozen=True, slots=True)
class Share:
    """A text's Han characters and Latin words."""

    han: int
    latin_words: int

    @property
    def units(self) -> int:
        return self.han + self.latin_words

    @property
    def zh(self) -> float:
        """The share of units that are Han characters (0 when there are none)."""
        return self.han / self.units if self.units else 0.0


def share(text: str) -> Share:
    """Count the Han characters and Latin words of `text`."""
    return Share(len(_HAN.findall(text)), len(_LATIN_WORD.findall(text)))


def detect(text: str) -> Lang:
    """ "zh" when at least `ZH_SHARE` of the text's units are Han characters, else "en"."""
    return "zh" if share(text).zh >= ZH_SHARE else "en"


def check(declared: Lang | None, text: str) -> Lang:
    """The language of an asset: the declared one, unless the text is clearly another.

    Args:
        declared: the language the caller gave, or None to take the detected one.
        text: the asset's (normalized) text.

    Returns:
        `declared`, or the detected language when nothing was declared.

    Raises:
        LanguageMismatch: 422 `language_mismatch`, naming the detected language
            (`detected` param) and asking for one language.
    """
    counted = share(text)
    if declared is None:
        return "zh" if counted.zh >= ZH_SHARE else "en"
    if counted.units < MIN_UNITS:
        return declared
    if declared == "en" and counted.zh >= CLEARLY_ZH:
        detected: Lang = "zh"
    elif declared == "zh" and counted.zh < CLEARLY_EN:
        detected = "en"
    else:
        return declared
    raise LanguageMismatch(
        f"declared {declared}, text is {detected} ({counted.zh:.0%} Han)",
        reason=f"lang_detected_{detected}",
        detected=detected,
        declared=declared,
    )
