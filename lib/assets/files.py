"""One file-processing step for every upload route: type by content, limits, text.

`extract()` takes a file's bytes (a résumé, a detailed résumé or a job description) and
returns its normalized text, or, for a job description's screenshot, the image itself;
`from_text()` applies the same normalization and limits to pasted text. Both are
synchronous and CPU-bound (a two-page PDF costs 0.1-0.5 s): an async handler runs them
in a worker thread (`anyio.to_thread.run_sync`). The extraction libraries (pypdf,
python-docx) are imported on the first PDF or DOCX, never with this module: the
producer's cold start does not pay for them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

from lib.assets.docx_text import read_docx
from lib.assets.pdf_text import read_pdf
from lib.assets.sniff import image_complete, is_encrypted_office, is_known_binary, sniff
from lib.assets.text import decode_text, letters, normalize
from lib.errors import FileTooLarge, FileUnreadable, NoTextInFile, TextTooShort, UnsupportedFile
from lib.settings import Settings

Kind = Literal["resume", "detailed_resume", "jd"]
FileType = Literal["pdf", "docx", "text", "image"]
KINDS: tuple[Kind, ...] = ("resume", "detailed_resume", "jd")

MIME_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "text": "text/plain",
}
_IMAGE_NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}
# A PDF (per page) or a DOCX with fewer letters than this has no text layer worth the
# name: page numbers, a scanner app's watermark ("扫描全能王 创建", "Scanned with ...").
NO_TEXT_LETTERS_PER_PAGE = 16


@dataclass(frozen=True, slots=True)
class Extracted:
    """What an upload yields.

    `text` is normalized (`lib.assets.text.normalize`) and `chars` is its length; both
    are empty for an image, whose bytes are in `image` (`mime` says which type). `pages`
    is a PDF's page count, None for other types.
    """

    kind: Kind
    file_type: FileType
    mime: str
    text: str
    chars: int
    pages: int | None = None
    image: bytes | None = None

    def data_url(self) -> str:
        """The image as a `data:` URL, the form the vision task takes."""
        if self.image is None:
            raise ValueError("not an image")
        return f"data:{self.mime};base64,{base64.b64encode(self.image).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class TextLimits:
    """The least and most characters of an asset's normalized text."""

    min_chars: int
    max_chars: int


def text_limits(kind: Kind, settings: Settings) -> TextLimits:
    """The character limits of `kind`, from settings."""
    if kind == "resume":
        return TextLimits(settings.text_min_chars_resume, settings.upload_max_chars_resume)
    if kind == "detailed_resume":
        return TextLimits(
            settings.text_min_chars_detailed_resume, settings.upload_max_chars_detailed_resume
        )
    return TextLimits(settings.text_min_chars_jd, settings.upload_max_chars_jd)


def extract(data: bytes, *, kind: Kind, settings: Settings) -> Extracted:
    """Type an uploaded file by its content and read it.

    PDF and DOCX give their text; a UTF-8 (or UTF-16 with a byte-order mark) text or
    Markdown file gives its text; a PNG, JPEG or WebP image is accepted for a job
    description only (a screenshot, for the vision route) and is returned as it is.

    Args:
        data: the file's bytes, as uploaded.
        kind: which asset the file is.
        settings: the upload limits (`upload_*`, `text_min_chars_*`).

    Returns:
        The normalized text and what was found (type, pages), or the image.

    Raises:
        UnsupportedFile: 415, another type (a zip that is not a DOCX, an .xlsx, a legacy
            .doc, binary data, text in an encoding other than UTF-8/UTF-16), or an image
            for a résumé.
        FileTooLarge: 413, over the byte limit (`upload_max_bytes`, for images
            `upload_max_image_bytes`), the page limit, a zip limit, or the kind's
            character limit.
        FileUnreadable: 422, damaged, password-protected, or too costly to read.
        NoTextInFile: 422, a PDF or DOCX without text (a scan); for a job description
            the message says that a screenshot works.
        TextTooShort: 422, fewer characters than the kind's minimum.
    """
    # The largest limit first: sniffing a zip reads its whole directory.
    _check_bytes(data, max(settings.upload_max_bytes, settings.upload_max_image_bytes))
    sniffed = sniff(data)
    if sniffed in _IMAGE_NAMES:
        if kind != "jd":
            raise UnsupportedFile(f"{sniffed} for a {kind}", reason="image_not_jd")
        _check_bytes(data, settings.upload_max_image_bytes)
        if not image_complete(data, sniffed):
            raise FileUnreadable(
                f"{sniffed} is cut off", reason="file_corrupt", file_type=_IMAGE_NAMES[sniffed]
            )
        return Extracted(kind, "image", sniffed, "", 0, image=data)
    _check_bytes(data, settings.upload_max_bytes)
    if sniffed == "pdf":
        raw_pages, count = read_pdf(data, settings)
        text = "\n\n".join(page for page in map(normalize, raw_pages) if page)
        _require_text(text, kind, pages=count)
        return _checked(kind, "pdf", text, settings, pages=count)
    if sniffed == "docx":
        text = normalize(read_docx(data, settings))
        _require_text(text, kind, pages=1)
        return _checked(kind, "docx", text, settings)
    if sniffed == "ole":
        if is_encrypted_office(data):
            raise FileUnreadable("encrypted Office file", reason="file_encrypted")
        raise UnsupportedFile("legacy Office file", reason="legacy_doc")
    decoded = None
    if sniffed == "other" and not is_known_binary(data):
        decoded = decode_text(data)
    if decoded is None:
        raise UnsupportedFile(f"not a supported type ({sniffed})", reason=_types(kind))
    return _checked(kind, "text", normalize(decoded), settings)


def from_text(text: str, *, kind: Kind, settings: Settings) -> Extracted:
    """Pasted text, normalized and held to the same character limits as a file's.

    Raises:
        FileTooLarge: 413, over the kind's character limit.
        TextTooShort: 422, under the kind's minimum.
    """
    return _checked(kind, "text", normalize(text), settings)


def _types(kind: Kind) -> str:
    return "types_jd" if kind == "jd" else "types_resume"


def _check_bytes(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise FileTooLarge(f"{len(data)} bytes", reason="file_bytes", max_bytes=max_bytes)


def _require_text(text: str, kind: Kind, *, pages: int) -> None:
    if letters(text) < NO_TEXT_LETTERS_PER_PAGE * max(pages, 1):
        reason = "no_text_jd" if kind == "jd" else "no_text_resume"
        raise NoTextInFile(f"{letters(text)} letters on {pages} pages", reason=reason)


def _checked(
    kind: Kind, file_type: FileType, text: str, settings: Settings, *, pages: int | None = None
) -> Extracted:
    limits = text_limits(kind, settings)
    chars = len(text)
    if chars > limits.max_chars:
        raise FileTooLarge(f"{chars} characters", reason="file_chars", max_chars=limits.max_chars)
    if chars < limits.min_chars:
        raise TextTooShort(f"{chars} characters", chars=chars, min_chars=limits.min_chars)
    return Extracted(kind, file_type, MIME_TYPES[file_type], text, chars, pages=pages)
