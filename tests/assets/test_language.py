"""lib/assets/language.py: English or Chinese by the share of Han characters; the declared check."""

from __future__ import annotations

import pytest

from lib.assets import language
from lib.assets.language import CLEARLY_EN, CLEARLY_ZH, ZH_SHARE, check, detect, share
from lib.errors import LanguageMismatch
from lib.i18n import Lang
from tests.support.asset_files import assert_chinese_only, rendered
from tests.support.paths import EXAMPLES

# Chinese with English tool names inside: what Chinese résumés and JDs look like.
MIXED_ZH = (
    "负责订单服务的架构设计，使用 Python、FastAPI 和 Redis Streams 重构下单链路，"
    "通过 Kafka 实现异步消息分发，基于 Docker 和 Kubernetes 部署在 AWS 上，"
    "p99 延迟从 900 ms 降到 180 ms。熟悉 PostgreSQL、MySQL、Prometheus、Grafana。"
)
# English naming Chinese companies, schools and cities: what a Chinese engineer's English
# résumé looks like.
ENGLISH_WITH_CHINESE_NAMES = (
    (EXAMPLES / "resume.en.txt").read_text()
    + "\nNames: 陈玛雅 (Maya Chen); 浙江大学 (Zhejiang University); "
    + "启明旅行 (Qiming Travel), 杭州\n"
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resume.en.txt", "en"),
        ("detailed_resume.en.txt", "en"),
        ("job.en.txt", "en"),
        ("resume.zh.txt", "zh"),
        ("job.zh.txt", "zh"),
    ],
)
def test_examples_are_detected(name: str, expected: Lang) -> None:
    """The shipped examples are detected as their language."""
    assert detect((EXAMPLES / name).read_text()) == expected


def test_chinese_with_english_tech_terms_is_chinese() -> None:
    """Tool names are one unit per word, not per letter: the paragraph stays zh."""
    counted = share(MIXED_ZH)
    letters = sum(c.isascii() and c.isalpha() for c in MIXED_ZH)
    assert letters > counted.han  # by letters it would look English
    assert counted.zh >= CLEARLY_ZH
    assert detect(MIXED_ZH) == "zh"
    assert check("zh", MIXED_ZH) == "zh"


def test_english_naming_chinese_places_is_english() -> None:
    """A few Han names in an English résumé leave it en, and declared en is accepted."""
    assert 0 < share(ENGLISH_WITH_CHINESE_NAMES).zh < CLEARLY_EN
    assert detect(ENGLISH_WITH_CHINESE_NAMES) == "en"
    assert check("en", ENGLISH_WITH_CHINESE_NAMES) == "en"


def test_detect_threshold_is_thirty_percent_of_units() -> None:
    """3 Han characters and 7 words (30 %) is zh; 3 and 8 (27 %) is en."""
    assert ZH_SHARE == 0.30
    at = "中文字 " + "word " * 7
    below = "中文字 " + "word " * 8
    assert share(at).zh == pytest.approx(0.30)
    assert (detect(at), detect(below)) == ("zh", "en")


def test_units_count_han_characters_and_latin_words_only() -> None:
    """Digits, punctuation, kana and emoji are not units; accented Latin letters are."""
    counted = share("Résumé für Zoë — 2021–2024, 100%! 简历 カタカナ 😀")
    assert (counted.han, counted.latin_words) == (2, 3)
    assert share("").zh == 0.0
    assert detect("2021 – 2024, 100 %") == "en"


def test_declared_english_for_a_chinese_resume_is_a_language_mismatch() -> None:
    """422 language_mismatch: it names Chinese as detected and asks for one language."""
    text = (EXAMPLES / "resume.zh.txt").read_text()
    with pytest.raises(LanguageMismatch) as caught:
        check("en", text)
    exc = caught.value
    assert exc.params["detected"] == "zh" and exc.params["declared"] == "en"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["error"], en["detected"]) == (422, "language_mismatch", "zh")
    assert en["message"].startswith("The text is in Chinese, but English was chosen.")
    assert "Please use one language" in en["message"]
    assert zh["message"].startswith("文本是中文，但所选语言是英文。")
    assert "统一使用一种语言" in zh["message"]
    assert_chinese_only(zh["message"])


def test_declared_chinese_for_an_english_text_is_a_language_mismatch() -> None:
    """The other way round: detected en, said in both languages."""
    with pytest.raises(LanguageMismatch) as caught:
        check("zh", (EXAMPLES / "job.en.txt").read_text())
    en, zh = rendered(caught.value, "en"), rendered(caught.value, "zh")
    assert en["detected"] == "en"
    assert en["message"].startswith("The text is in English, but Chinese was chosen.")
    assert zh["message"].startswith("文本是英文，但所选语言是中文。")
    assert_chinese_only(zh["message"])


@pytest.mark.parametrize("declared", ["en", "zh"])
def test_mixed_text_between_the_bands_keeps_the_declared_language(declared: Lang) -> None:
    """40 % Han is neither clearly zh (≥ 50 %) nor clearly en (< 10 %): the declared one stands."""
    text = "中文内容 english words here and there more"
    assert CLEARLY_EN < share(text).zh < CLEARLY_ZH
    assert check(declared, text) == declared


def test_bands_are_refused_exactly_at_their_edges() -> None:
    """Declared en refused from 50 % Han; declared zh refused under 10 %."""
    half = "中文 " + "two words"  # 2 Han, 2 words: 50 %
    assert share(half).zh == pytest.approx(CLEARLY_ZH)
    with pytest.raises(LanguageMismatch):
        check("en", half * 3)
    tenth = "中 " + "word " * 9  # 1 Han, 9 words: 10 %
    assert share(tenth).zh == pytest.approx(CLEARLY_EN)
    assert check("zh", tenth) == "zh"
    with pytest.raises(LanguageMismatch):
        check("zh", "中 " + "word " * 10)


def test_nothing_declared_takes_the_detected_language() -> None:
    """No declared language: the detected one is returned, never an error."""
    assert check(None, MIXED_ZH) == "zh"
    assert check(None, (EXAMPLES / "job.en.txt").read_text()) == "en"


def test_too_little_text_is_never_refused() -> None:
    """Under `MIN_UNITS` units there is nothing to tell from: the declared language stands."""
    assert share("王磊 Maya").units < language.MIN_UNITS
    assert check("en", "王磊 王磊") == "en"
    assert check("zh", "Maya Chen") == "zh"
