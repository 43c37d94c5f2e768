"""lib/assets/files.py: uploads typed by content, read within limits, refused in en and zh."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import time
import zipfile

import docx
import pytest

from lib.assets import files
from lib.assets.files import Extracted, Kind, extract, from_text, text_limits
from lib.assets.text import normalize
from lib.errors import (
    FileTooLarge,
    FileUnreadable,
    NoTextInFile,
    SlotlineError,
    TextTooShort,
    UnsupportedFile,
)
from lib.i18n import text
from lib.local import example_files as ef
from lib.settings import Settings
from tests.support import asset_files as af
from tests.support.asset_files import assert_chinese_only, rendered
from tests.support.paths import ROOT

RESUME_EN = (ROOT / "examples/resume.en.txt").read_text()
RESUME_ZH = (ROOT / "examples/resume.zh.txt").read_text()
JOB_EN = (ROOT / "examples/job.en.txt").read_text()


@pytest.fixture
def settings() -> Settings:
    return Settings()


def refused(data: bytes, kind: Kind, settings: Settings) -> SlotlineError:
    with pytest.raises(SlotlineError) as caught:
        extract(data, kind=kind, settings=settings)
    return caught.value


def as_pdf_reads(text: str) -> str:
    """What a PDF of `text` reads back as: PDF text has no blank lines, only line positions."""
    return normalize(text).replace("\n\n", "\n")


def pdf_of(text: str, lines_per_page: int = 40) -> bytes:
    lines = text.split("\n")
    pages = ["\n".join(lines[i : i + lines_per_page]) for i in range(0, len(lines), lines_per_page)]
    return ef.text_pdf(pages)


# --- PDF -------------------------------------------------------------------------------


def test_text_pdf_is_read_page_by_page_and_normalized(settings: Settings) -> None:
    """A two-page PDF: its text in order, a paragraph break between pages, counted normalized."""
    data = ef.text_pdf(["Maya  Chen\nBackend   Engineer", "EXPERIENCE\n" + "Python " * 30])
    result = extract(data, kind="resume", settings=settings)
    assert (result.file_type, result.mime, result.pages) == ("pdf", "application/pdf", 2)
    assert result.text.startswith("Maya Chen\nBackend Engineer\n\nEXPERIENCE\nPython Python")
    assert result.chars == len(result.text)
    assert result.image is None


def test_chinese_pdf_is_read(settings: Settings) -> None:
    """A CJK PDF (CID font with a ToUnicode map) gives back the Chinese text, line by line."""
    result = extract(pdf_of(RESUME_ZH), kind="resume", settings=settings)
    assert result.file_type == "pdf"
    assert result.text == as_pdf_reads(RESUME_ZH)
    assert "高级后端工程师 — 星河教育科技（北京），2021 年至今" in result.text


def test_scanned_pdf_has_no_text_and_a_job_description_is_told_a_screenshot_works(
    settings: Settings,
) -> None:
    """Image-only pages are 422 no_text_in_file; for a JD the message offers a screenshot."""
    exc = refused(af.image_pdf(pages=2), "jd", settings)
    assert isinstance(exc, NoTextInFile)
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["error"]) == (422, "no_text_in_file")
    assert "screenshot of the job posting works" in en["message"]
    assert "PNG, JPEG or WebP" in en["message"]
    assert "截图" in zh["message"]
    assert_chinese_only(zh["message"])


@pytest.mark.parametrize("kind", ["resume", "detailed_resume"])
def test_scanned_resume_is_told_to_send_text_not_a_screenshot(
    kind: Kind, settings: Settings
) -> None:
    """A résumé has no image route: the message asks for a text PDF, a DOCX or pasted text."""
    en = rendered(refused(af.image_pdf(), kind, settings), "en")
    zh = rendered(refused(af.image_pdf(), kind, settings), "zh")
    assert en["error"] == "no_text_in_file"
    assert "paste the text" in en["message"] and "screenshot" not in en["message"]
    assert "粘贴文本" in zh["message"] and "截图" not in zh["message"]


def test_pdf_whose_only_text_is_a_scanner_watermark_has_no_text(settings: Settings) -> None:
    """A scan stamped by a scanner app ("扫描全能王 创建", page numbers) counts as no text."""
    data = ef.text_pdf(["扫描全能王 创建\n1", "扫描全能王 创建\n2"])
    assert isinstance(refused(data, "jd", settings), NoTextInFile)


def test_pdf_with_a_user_password_is_unreadable(settings: Settings) -> None:
    """Encrypted with a password: 422 file_unreadable saying it is password-protected."""
    data = af.encrypted_pdf(pdf_of(RESUME_EN), user_password="s3cret")
    exc = refused(data, "resume", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_encrypted"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["error"]) == (422, "file_unreadable")
    assert "password-protected" in en["message"]
    assert "密码保护" in zh["message"]
    assert_chinese_only(zh["message"])


def test_pdf_with_only_an_owner_password_is_read(settings: Settings) -> None:
    """Permissions-only encryption (empty user password) opens as any viewer opens it."""
    data = af.encrypted_pdf(pdf_of(RESUME_EN), user_password="")
    assert extract(data, kind="resume", settings=settings).text == as_pdf_reads(RESUME_EN)


def test_aes_encrypted_pdf_is_unreadable_as_encrypted(settings: Settings) -> None:
    """AES needs the `cryptography` package, not installed: refused as encrypted, not as a crash."""
    exc = refused(af.aes_encrypted_pdf(), "resume", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_encrypted"


def test_truncated_pdf_is_unreadable_and_named_damaged(settings: Settings) -> None:
    """A cut-off PDF: 422 file_unreadable, the message names the format."""
    data = pdf_of(RESUME_EN)
    exc = refused(data[: len(data) // 3], "resume", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_corrupt"
    assert "damaged or not a valid PDF file" in rendered(exc, "en")["message"]
    zh = rendered(exc, "zh")["message"]
    assert "已损坏" in zh and "PDF" in zh
    assert_chinese_only(zh)


def test_pdf_over_the_page_limit_is_refused_before_any_page_is_read(settings: Settings) -> None:
    """413 file_too_large (pages), before the first page: reading one would pass the deadline."""
    data = ef.text_pdf(["Page one", "Page two", "Page three", "Page four"])
    limited = settings.model_copy(update={"upload_max_pdf_pages": 3, "upload_pdf_max_seconds": 0})
    exc = refused(data, "detailed_resume", limited)
    assert isinstance(exc, FileTooLarge) and exc.params["reason"] == "file_pages"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["error"], en["max_pages"]) == (413, "file_too_large", 3)
    assert "more than 3 pages" in en["message"]
    assert "超过 3 页" in zh["message"]
    assert_chinese_only(zh["message"])


def test_pdf_stream_bomb_is_stopped_at_the_stream_limit(settings: Settings) -> None:
    """20 KB of PDF inflating to 20 MiB: refused as too complex, without inflating it all."""
    data = af.bomb_pdf(20 * 1024 * 1024)
    assert len(data) < 64 * 1024
    started = time.monotonic()
    exc = refused(data, "resume", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_too_complex"
    assert time.monotonic() - started < 10
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert "too large or too complex" in en["message"]
    assert_chinese_only(zh["message"])


def test_pdf_too_costly_to_parse_is_refused(settings: Settings) -> None:
    """A page of 80,000 operators (a dense real page has ~5,000): over the parsing budget."""
    exc = refused(af.busy_pdf(16_000), "resume", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_too_complex"


def test_pdf_reading_stops_at_the_deadline(settings: Settings) -> None:
    """Past `upload_pdf_max_seconds` reading stops: file_too_complex, whatever the file."""
    rushed = settings.model_copy(update={"upload_pdf_max_seconds": 0.0})
    exc = refused(pdf_of(RESUME_EN), "resume", rushed)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_too_complex"


def test_pdf_text_over_the_kind_limit_is_413(settings: Settings) -> None:
    """More characters than the kind takes: 413 file_too_large (chars), the limit in the body."""
    limited = settings.model_copy(update={"upload_max_chars_resume": 500})
    exc = refused(pdf_of(RESUME_EN), "resume", limited)
    assert isinstance(exc, FileTooLarge) and exc.params["reason"] == "file_chars"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["max_chars"]) == (413, 500)
    assert "longer than 500 characters" in en["message"]
    assert "超过 500 个字符" in zh["message"]
    assert_chinese_only(zh["message"])


# --- DOCX and other zips ---------------------------------------------------------------


def test_docx_header_paragraphs_and_tables_are_read_in_order(settings: Settings) -> None:
    """Header first, then paragraphs and table rows (cells joined by " | ") in document order."""
    data = af.docx_file(
        RESUME_EN.split("\n"),
        table=[["Skill", "Level"], ["Python", "expert"]],
        header="Curriculum vitae",
    )
    result = extract(data, kind="resume", settings=settings)
    assert result.file_type == "docx"
    assert result.mime.endswith("wordprocessingml.document")
    assert result.pages is None
    assert result.text.startswith("Curriculum vitae\nMaya Chen\nBackend Engineer")
    assert result.text.endswith("Skill | Level\nPython | expert")
    assert normalize(RESUME_EN) in result.text


def test_docx_merged_cell_is_named_once(settings: Settings) -> None:
    """A cell merged across columns is one value in its row, not repeated per column."""
    document = docx.Document()
    document.add_paragraph(JOB_EN)
    table = document.add_table(rows=1, cols=3)
    table.cell(0, 0).merge(table.cell(0, 1)).text = "Requirements"
    table.cell(0, 2).text = "Python"
    out = io.BytesIO()
    document.save(out)
    result = extract(out.getvalue(), kind="jd", settings=settings)
    assert result.text.endswith("\nRequirements | Python")


def test_docx_without_text_has_no_text(settings: Settings) -> None:
    """A DOCX of empty paragraphs (a pasted picture of a page): 422 no_text_in_file."""
    exc = refused(af.docx_file(["", "   ", "3"]), "jd", settings)
    assert isinstance(exc, NoTextInFile) and exc.params["reason"] == "no_text_jd"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(af.zip_file({"notes.txt": b"hello " * 100}), id="plain-zip"),
        pytest.param(af.xlsx_like(), id="xlsx"),
        pytest.param(af.zip_file({"word/document.xml": b"<w:document/>"}), id="no-content-types"),
    ],
)
def test_zip_that_is_not_a_word_document_is_415(data: bytes, settings: Settings) -> None:
    """A zip, an .xlsx, or a zip merely holding word/document.xml: 415 unsupported_file."""
    exc = refused(data, "resume", settings)
    assert isinstance(exc, UnsupportedFile)
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["error"]) == (415, "unsupported_file")
    assert "PDF, DOCX or plain-text (UTF-8)" in en["message"]
    assert "screenshot" not in en["message"]
    assert_chinese_only(zh["message"])


def test_word_template_is_415(settings: Settings) -> None:
    """A .dotx (template content type) is a Word package python-docx will not open: 415."""
    source = af.docx_file([RESUME_EN])
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        types = archive.read("[Content_Types].xml")
    template = types.replace(b"wordprocessingml.document.main", b"wordprocessingml.template.main")
    data = af.rezip(source, {"[Content_Types].xml": template})
    assert isinstance(refused(data, "resume", settings), UnsupportedFile)


def test_truncated_docx_is_unreadable(settings: Settings) -> None:
    """A cut-off DOCX (its zip directory lost) is a damaged DOCX, not an unknown type."""
    data = af.docx_file(RESUME_EN.split("\n"))
    exc = refused(data[: len(data) // 2], "resume", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_corrupt"
    assert "not a valid DOCX file" in rendered(exc, "en")["message"]


def test_docx_whose_xml_unpacks_past_the_limit_is_refused_before_inflating(
    settings: Settings,
) -> None:
    """A 20 KB DOCX whose document.xml unpacks to 20 MiB: 413, from the zip's directory alone."""
    source = af.docx_file(["Hello"])
    bomb = b'<?xml version="1.0"?>' + b" " * (20 * 1024 * 1024) + b"<w:document/>"
    data = af.rezip(source, {"word/document.xml": bomb})
    assert len(data) < 128 * 1024
    exc = refused(data, "resume", settings)
    assert isinstance(exc, FileTooLarge) and exc.params["reason"] == "file_unzipped"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert en["max_bytes"] == settings.upload_max_docx_xml_bytes
    assert f"unpacks to more than {settings.upload_max_docx_xml_bytes} bytes" in en["message"]
    assert "解压后超过" in zh["message"]
    assert_chinese_only(zh["message"])


def test_docx_whose_parts_together_unpack_past_the_limit_is_413(settings: Settings) -> None:
    """The sum of all parts (media included) is held to `upload_max_unzipped_bytes`."""
    data = af.docx_file(RESUME_EN.split("\n"))
    limited = settings.model_copy(update={"upload_max_unzipped_bytes": 10_000})
    exc = refused(data, "resume", limited)
    assert isinstance(exc, FileTooLarge) and exc.params["max_bytes"] == 10_000


# --- OLE2: legacy .doc, encrypted Office ------------------------------------------------


def test_encrypted_office_document_is_unreadable_as_encrypted(settings: Settings) -> None:
    """A password-protected DOCX is an OLE2 container with an EncryptedPackage: file_unreadable."""
    data = af.ole_file({"EncryptionInfo": b"\x04\x00\x04\x00", "EncryptedPackage": b"\x01" * 512})
    exc = refused(data, "resume", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["reason"] == "file_encrypted"


def test_legacy_word_document_is_415_with_advice(settings: Settings) -> None:
    """An old .doc: 415, saying to save it as DOCX or PDF."""
    exc = refused(af.ole_file({"WordDocument": b"\xec\xa5" + b"\x00" * 600}), "resume", settings)
    assert isinstance(exc, UnsupportedFile) and exc.params["reason"] == "legacy_doc"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert en["status"] == 415 and "save it as DOCX or PDF" in en["message"]
    assert "另存为 DOCX 或 PDF" in zh["message"]
    assert_chinese_only(zh["message"])


# --- Images ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_screenshot_for_a_job_description_is_kept_as_it_is(
    fmt: str, mime: str, settings: Settings
) -> None:
    """PNG, JPEG, WebP by signature: the bytes unchanged, their type, and a data URL for vision."""
    data = af.image_bytes(fmt)
    result = extract(data, kind="jd", settings=settings)
    assert (result.file_type, result.mime, result.image) == ("image", mime, data)
    assert (result.text, result.chars, result.pages) == ("", 0, None)
    header, _, payload = result.data_url().partition(",")
    assert header == f"data:{mime};base64" and base64.b64decode(payload) == data


@pytest.mark.parametrize("kind", ["resume", "detailed_resume"])
def test_image_for_a_resume_is_415(kind: Kind, settings: Settings) -> None:
    """Only a job description may be a picture: a résumé image is 415, saying so."""
    exc = refused(af.image_bytes("PNG"), kind, settings)
    assert isinstance(exc, UnsupportedFile) and exc.params["reason"] == "image_not_jd"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert en["status"] == 415
    assert "images are accepted for job descriptions only" in en["message"]
    assert "仅职位描述可以上传图片" in zh["message"]
    assert_chinese_only(zh["message"])


@pytest.mark.parametrize(("fmt", "name"), [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP")])
def test_cut_off_image_is_unreadable(fmt: str, name: str, settings: Settings) -> None:
    """An image missing its end (a cut-off upload): 422 file_unreadable naming the format."""
    data = af.image_bytes(fmt)
    exc = refused(data[: len(data) - 80], "jd", settings)
    assert isinstance(exc, FileUnreadable) and exc.params["file_type"] == name
    assert f"not a valid {name} file" in rendered(exc, "en")["message"]


def test_image_over_the_image_limit_is_413(settings: Settings) -> None:
    """A screenshot over `upload_max_image_bytes` (what the vision task takes): 413."""
    assert settings.upload_max_image_bytes < settings.upload_max_bytes
    data = af.noisy_png(settings.upload_max_image_bytes + 1)
    exc = refused(data, "jd", settings)
    assert isinstance(exc, FileTooLarge) and exc.params["reason"] == "file_bytes"
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["max_bytes"]) == (413, settings.upload_max_image_bytes)
    assert f"larger than {settings.upload_max_image_bytes} bytes" in en["message"]
    assert f"超过 {settings.upload_max_image_bytes} 字节" in zh["message"]
    assert_chinese_only(zh["message"])


# --- Text files ------------------------------------------------------------------------


def test_file_over_the_byte_limit_is_413_whatever_its_type(settings: Settings) -> None:
    """Bytes are checked before anything is parsed: a PDF or a text over the limit is 413."""
    limited = settings.model_copy(update={"upload_max_bytes": 1_000})
    for data in (pdf_of(RESUME_EN), RESUME_EN.encode()):
        exc = refused(data, "resume", limited)
        assert isinstance(exc, FileTooLarge) and exc.params == {
            "reason": "file_bytes",
            "max_bytes": 1_000,
        }


def test_markdown_file_is_text(settings: Settings) -> None:
    """UTF-8 Markdown is text: kept as written, whitespace normalized."""
    data = ("# Maya Chen\r\n\r\n\r\n## Skills\r\n- Python\u00a0 Redis\r\n" + RESUME_EN).encode()
    result = extract(data, kind="resume", settings=settings)
    assert (result.file_type, result.mime) == ("text", "text/plain")
    assert result.text.startswith("# Maya Chen\n\n## Skills\n- Python Redis\nMaya Chen")


def test_utf8_bom_is_dropped(settings: Settings) -> None:
    """A UTF-8 file with a byte-order mark reads as the same text without it."""
    data = b"\xef\xbb\xbf" + RESUME_ZH.encode()
    result = extract(data, kind="resume", settings=settings)
    assert result.text == normalize(RESUME_ZH)
    assert not result.text.startswith("\ufeff")


def test_utf16_with_bom_is_text(settings: Settings) -> None:
    """Notepad's "Unicode" (UTF-16 with its mark) is read too."""
    data = RESUME_ZH.encode("utf-16")
    assert extract(data, kind="resume", settings=settings).text == normalize(RESUME_ZH)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(RESUME_ZH.encode("gbk"), id="gbk-text"),
        pytest.param(bytes(range(256)) * 8, id="binary-junk"),
        pytest.param(("résumé " * 40 + "\x01\x02\x03\x04\x05" * 20).encode(), id="controls"),
        pytest.param(b"GIF89a" + b"\x00" * 500, id="gif"),
        pytest.param(b"\x1f\x8b\x08\x00" + b"\x00" * 500, id="gzip"),
        pytest.param(b"{\\rtf1\\ansi " + RESUME_EN.encode() + b"}", id="rtf"),
    ],
)
def test_binary_or_undecodable_data_is_415(data: bytes, settings: Settings) -> None:
    """Not UTF-8, binary, or a known non-text format: 415; for a JD the message offers images."""
    exc = refused(data, "jd", settings)
    assert isinstance(exc, UnsupportedFile)
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert en["status"] == 415 and "PNG, JPEG or WebP screenshot" in en["message"]
    assert "截图" in zh["message"]
    assert_chinese_only(zh["message"])


def test_text_too_short_is_422_with_the_counts(settings: Settings) -> None:
    """Under the kind's minimum: 422 text_too_short, how many characters and how many needed."""
    minimum = settings.text_min_chars_resume
    exc = refused(b"Maya Chen\n\nBackend engineer.", "resume", settings)
    assert isinstance(exc, TextTooShort)
    en, zh = rendered(exc, "en"), rendered(exc, "zh")
    assert (en["status"], en["error"], en["chars"], en["min_chars"]) == (
        422,
        "text_too_short",
        28,
        minimum,
    )
    assert f"28 characters, at least {minimum}" in en["message"]
    assert f"共 28 个字符，至少需要 {minimum} 个" in zh["message"]
    assert_chinese_only(zh["message"])


def test_pasted_text_gets_the_same_normalization_and_limits(settings: Settings) -> None:
    """`from_text`: normalized like a file; too short and too long refused alike."""
    result = from_text("  " + JOB_EN.replace("\n", "\r\n") + "\n\n\n", kind="jd", settings=settings)
    assert result == Extracted(
        "jd", "text", "text/plain", normalize(JOB_EN), len(normalize(JOB_EN))
    )
    with pytest.raises(TextTooShort):
        from_text("Backend engineer", kind="jd", settings=settings)
    with pytest.raises(FileTooLarge):
        from_text("x" * (settings.upload_max_chars_jd + 1), kind="jd", settings=settings)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a  b\t\tc", "a b c"),
        ("line one\r\nline two\rline three", "line one\nline two\nline three"),
        ("para one\n\n\n\n  \npara two", "para one\n\npara two"),
        ("  padded  \n  lines  ", "padded\nlines"),
        ("no\u00a0break\u3000wide\u2009thin", "no break wide thin"),
        ("zero\u200bwidth\u00adsoft\ufeff", "zerowidthsoft"),
        ("form\ffeed\u2028sep", "form\nfeed\nsep"),
        ("bell\x07 gone", "bell gone"),
        ("\u2f2f\u7a0b\u5e08 \u2fbc\u7ea7", "工程师 高级"),  # Kangxi radicals from PDF text
        ("\ufb01le \ufb02ow", "file flow"),  # ligatures
        ("技能：Python，Redis。", "技能：Python，Redis。"),  # full-width punctuation kept
        ("e\u0301", "\u00e9"),  # NFC
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    """Spaces collapsed, paragraphs kept, invisible characters gone, compatibility forms mapped."""
    assert normalize(raw) == expected


# --- Settings, errors, cold start ------------------------------------------------------


def test_default_limits_match_what_the_task_templates_take(settings: Settings) -> None:
    """Character limits are the templates' MAX_* (lib/templates/variables.py); images: vision's."""
    from lib.templates import variables

    assert text_limits("resume", settings).max_chars == variables.MAX_RESUME_CHARS
    assert text_limits("detailed_resume", settings).max_chars == variables.MAX_DETAILED_RESUME_CHARS
    assert text_limits("jd", settings).max_chars == variables.MAX_JOB_CHARS
    assert settings.upload_max_image_bytes <= variables.MAX_IMAGE_BYTES
    for kind in files.KINDS:
        limits = text_limits(kind, settings)
        assert 0 < limits.min_chars < limits.max_chars
    # A whole résumé / JD in Chinese is short: the minimums let the examples through.
    assert len(normalize(RESUME_ZH)) >= settings.text_min_chars_resume
    assert len(normalize((ROOT / "examples/job.zh.txt").read_text())) >= settings.text_min_chars_jd


_UPLOAD_CODES = (
    "unsupported_file",
    "file_too_large",
    "file_unreadable",
    "no_text_in_file",
    "text_too_short",
    "language_mismatch",
)
_UPLOAD_DETAILS = (
    "types_resume",
    "types_jd",
    "image_not_jd",
    "legacy_doc",
    "file_bytes",
    "file_unzipped",
    "file_pages",
    "file_chars",
    "file_encrypted",
    "file_corrupt",
    "file_too_complex",
    "no_text_jd",
    "no_text_resume",
    "lang_detected_zh",
    "lang_detected_en",
)


def test_every_upload_message_has_english_and_chinese_without_english_in_chinese() -> None:
    """Each new code and detail exists in both languages; the Chinese ones name only formats."""
    for prefix, keys in (("errors.", _UPLOAD_CODES), ("errors.detail.", _UPLOAD_DETAILS)):
        for key in keys:
            assert text(prefix + key, "en"), key
            assert_chinese_only(re.sub(r"\{\w+\}", "", text(prefix + key, "zh")))


def test_importing_the_module_loads_no_extraction_library() -> None:
    """Cold start: `lib.assets.files` and `.language` import without pypdf, docx, lxml or PIL."""
    code = (
        "import sys\n"
        "import lib.assets.files, lib.assets.language\n"
        "heavy = ('pypdf', 'docx', 'lxml', 'PIL', 'cryptography')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
