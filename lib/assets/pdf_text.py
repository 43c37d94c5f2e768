"""The text of a PDF, page by page, with pypdf (imported here only when a PDF arrives).

pypdf is pure Python: a hostile file can cost time and memory, never memory safety.
Its own limits are lowered for the duration of one read (`pypdf.apply_configuration`,
a context variable: other threads and tasks keep theirs), the page count is checked
before any page is read, and a deadline stops a file whose content streams are too
costly to interpret. docs/decisions.md, "Uploads", has the measurements and why not
pypdfium2 (10x faster, but no resource limits: 1 MB of PDF took 6 GB and 27 s).
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

from lib.errors import FileTooLarge, FileUnreadable, SlotlineError
from lib.settings import Settings

logger = logging.getLogger(__name__)

# Parsing budget of one content stream (pypdf counts operands, operators and the elements
# of arrays and dictionaries; its default is 2,000,000). The densest real résumé page
# measured (Chromium's print of examples/detailed_resume.en.txt) has 5,100 operators,
# 12,854 units. Parsing runs before any deadline check can stop it: 500,000 units took 6 s.
_STREAM_PARSING_UNITS = 150_000
# A page may draw at most this many form XObjects (pypdf's default is 5,000).
_XFORMS_PER_PAGE = 500


def read_pdf(data: bytes, settings: Settings) -> tuple[list[str], int]:
    """The raw text of each page of a PDF, and the page count.

    Args:
        data: the file's bytes (its type already sniffed as PDF).
        settings: `upload_max_pdf_pages`, `upload_max_pdf_stream_bytes`,
            `upload_pdf_max_seconds`.

    Returns:
        The text of every page, in order (empty for a page without text), and the count.

    Raises:
        FileUnreadable: the PDF is encrypted with a password (`file_encrypted`), damaged
            (`file_corrupt`), or reading its text passed the deadline
            (`file_too_complex`).
        FileTooLarge: more pages than `upload_max_pdf_pages` (`file_pages`).
    """
    # Costly at import (docs/decisions.md, "Uploads"): only PDF uploads pay for it.
    import pypdf
    from pypdf.errors import DependencyError, LimitReachedError

    stream_bytes = settings.upload_max_pdf_stream_bytes
    limits: dict[str, Any] = {
        "maximum_declared_stream_length": stream_bytes,
        "zlib_maximum_output_length": stream_bytes,
        "lzw_maximum_output_length": stream_bytes,
        "run_length_maximum_output_length": stream_bytes,
        "brotli_maximum_output_length": stream_bytes,
        "array_based_stream_maximum_output_length": stream_bytes,
        "stream_parsing_work_maximum_count": _STREAM_PARSING_UNITS,
        "xform_maximum_invocations_per_extraction": _XFORMS_PER_PAGE,
    }
    deadline = time.monotonic() + settings.upload_pdf_max_seconds

    def on_operator(*_: Any) -> None:
        if time.monotonic() > deadline:
            raise FileUnreadable("PDF text took too long", reason="file_too_complex")

    try:
        with pypdf.apply_configuration(**limits):
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
                raise FileUnreadable("PDF needs a password", reason="file_encrypted")
            count = len(reader.pages)
            if count > settings.upload_max_pdf_pages:
                raise FileTooLarge(
                    f"PDF has {count} pages",
                    reason="file_pages",
                    max_pages=settings.upload_max_pdf_pages,
                )
            pages: list[str] = []
            for page in reader.pages:
                on_operator()
                pages.append(page.extract_text(visitor_operand_before=on_operator) or "")
            return pages, count
    except SlotlineError:
        raise
    except LimitReachedError as exc:
        # A bomb: a stream inflating past the limit, or too much to parse.
        logger.info("pdf refused: %s", exc)
        raise FileUnreadable("PDF over pypdf's limits", reason="file_too_complex") from exc
    except DependencyError as exc:
        # An AES-encrypted file (even one with an empty user password) needs the
        # `cryptography` package, which is left out (docs/decisions.md, "Uploads").
        logger.info("pdf refused: encrypted, %s", exc)
        raise FileUnreadable("PDF encryption not supported", reason="file_encrypted") from exc
    except Exception as exc:
        # A hostile or damaged file can fail anywhere in the parser, with any exception
        # type (pypdf's own errors, but also ValueError, KeyError, RecursionError, ...):
        # every one of them means this file cannot be read.
        logger.info("pdf refused: %s: %s", type(exc).__name__, exc)
        raise FileUnreadable(
            f"PDF unreadable: {type(exc).__name__}", reason="file_corrupt", file_type="PDF"
        ) from exc
