"""The text of a DOCX with python-docx (imported here only when a DOCX arrives).

A DOCX is a zip, and python-docx reads every part it references: the sizes the zip's
directory declares are checked first (zipfile never inflates a member past its declared
size, and a member whose data disagrees fails its CRC), so a small file cannot unpack
into gigabytes. lxml, under python-docx, resolves no entities and refuses huge trees.
"""

from __future__ import annotations

import io
import logging
import zipfile

from lib.errors import FileTooLarge, FileUnreadable, SlotlineError
from lib.settings import Settings

logger = logging.getLogger(__name__)

# A Word document has a few dozen parts; thousands mean something else.
_MAX_PARTS = 2_000
_CELL_SEPARATOR = " | "


def check_zip(data: bytes, settings: Settings) -> None:
    """Refuse a zip that would unpack past the limits, before anything inflates it.

    Raises:
        FileTooLarge: the parts together are over `upload_max_unzipped_bytes`, or an XML
            part over `upload_max_docx_xml_bytes` (`file_unzipped`).
        FileUnreadable: the zip's directory cannot be read (`file_corrupt`), or it has
            more than 2,000 parts (`file_too_complex`).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _corrupt(exc) from exc
    if len(infos) > _MAX_PARTS:
        raise FileUnreadable(f"DOCX has {len(infos)} parts", reason="file_too_complex")
    total = sum(info.file_size for info in infos)
    largest_xml = max(
        (i.file_size for i in infos if i.filename.endswith((".xml", ".rels"))), default=0
    )
    for size, limit in (
        (total, settings.upload_max_unzipped_bytes),
        (largest_xml, settings.upload_max_docx_xml_bytes),
    ):
        if size > limit:
            logger.info("docx refused: %d bytes unzipped, an XML part of %d", total, largest_xml)
            raise FileTooLarge(
                f"DOCX unpacks to {size} bytes", reason="file_unzipped", max_bytes=limit
            )


def read_docx(data: bytes, settings: Settings) -> str:
    """The raw text of a DOCX: page headers, then paragraphs and tables in document order.

    Table rows become one line each, cells separated by " | " (a merged cell is named
    once). Text boxes, footnotes and comments are not read (python-docx does not expose
    them as part of the body).

    Args:
        data: the file's bytes (sniffed as a zip holding `word/document.xml`).
        settings: the zip limits (`check_zip`).

    Returns:
        The text, lines separated by "\\n" (not yet normalized).

    Raises:
        FileTooLarge: see `check_zip`.
        FileUnreadable: damaged (`file_corrupt`).
    """
    check_zip(data, settings)
    # Costly at import (docs/decisions.md, "Uploads"): only DOCX uploads pay for it.
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        lines: list[str] = []
        for section in document.sections:
            if not section.header.is_linked_to_previous:
                lines.extend(p.text for p in section.header.paragraphs)
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                lines.extend(_row_text([cell.text for cell in row.cells]) for row in block.rows)
            else:
                lines.append(block.text)
        return "\n".join(lines)
    except SlotlineError:
        raise
    except Exception as exc:
        # As for PDFs: a damaged package fails anywhere (KeyError for a missing part,
        # lxml's XMLSyntaxError, zipfile's BadZipFile on a CRC mismatch, ...).
        raise _corrupt(exc) from exc


def _row_text(cells: list[str]) -> str:
    texts: list[str] = []
    for cell in cells:
        text = " ".join(cell.split())
        # A merged cell is returned once per grid column it spans.
        if not texts or text != texts[-1]:
            texts.append(text)
    return _CELL_SEPARATOR.join(t for t in texts if t)


def _corrupt(exc: Exception) -> FileUnreadable:
    logger.info("docx refused: %s: %s", type(exc).__name__, exc)
    return FileUnreadable(
        f"DOCX unreadable: {type(exc).__name__}", reason="file_corrupt", file_type="DOCX"
    )
