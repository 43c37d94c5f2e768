"""Real upload files, made in the tests (PDFs, DOCX, images, zips, an OLE2 container), and
how an upload error reads. The PDF writer and the example files (a PDF résumé, a job
screenshot) are production-side, for `make demo` too: `lib/local/example_files.py`."""

from __future__ import annotations

import io
import json
import random
import re
import struct
import zipfile
from typing import Any

import docx
import pypdf
from PIL import Image

from lib.errors import SlotlineError
from lib.http.errors import error_response
from lib.local.example_files import write_pdf

# --- Errors as the client sees them ----------------------------------------------------


def rendered(exc: SlotlineError, lang: str) -> dict[str, Any]:
    """The HTTP answer the error gets: status and JSON body."""
    response = error_response(exc, lang)
    body: dict[str, Any] = json.loads(bytes(response.body))
    return {"status": response.status_code, **body}


def assert_chinese_only(text: str) -> None:
    """No English word in a Chinese message (the dictionaries' format and product names aside)."""
    from tests.test_i18n import ALLOWED_LATIN

    words = set(re.findall(r"[A-Za-z]+", text))
    assert words <= ALLOWED_LATIN, (text, words - ALLOWED_LATIN)
    assert re.search("[\u4e00-\u9fff]", text), text


# --- PDF -------------------------------------------------------------------------------


def bomb_pdf(inflated_bytes: int) -> bytes:
    """A one-page PDF whose content stream inflates to `inflated_bytes` (spaces, then text)."""
    body = b" " * inflated_bytes + b"\nBT /F1 11 Tf 50 700 Td (Hello) Tj ET"
    return write_pdf([body], objects=[])


def busy_pdf(text_ops: int) -> bytes:
    """A one-page PDF drawing `text_ops` one-letter strings: cheap to send, costly to read."""
    return write_pdf([b"BT /F1 11 Tf 50 700 Td (x) Tj ET\n" * text_ops], objects=[])


def image_pdf(pages: int = 1) -> bytes:
    """A scanned-style PDF: each page is a picture of text, with no text layer."""
    images = [_picture(600, 800, (250, 250, 250)) for _ in range(pages)]
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=72)
    return buffer.getvalue()


def encrypted_pdf(pdf: bytes, *, user_password: str, owner_password: str = "owner") -> bytes:
    """`pdf` encrypted with RC4-128 (what pypdf writes without the `cryptography` package)."""
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(pdf))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def aes_encrypted_pdf() -> bytes:
    """The shape of an AES-256 encrypted PDF with an empty user password (V5, R6).

    pypdf cannot write AES without `cryptography`; the trailer's /Encrypt dictionary is
    what a reader looks at first, and what it cannot read without that package.
    """
    encrypt = (
        b"<< /Filter /Standard /V 5 /R 6 /Length 256 /P -4 "
        b"/CF << /StdCF << /AuthEvent /DocOpen /CFM /AESV3 /Length 32 >> >> "
        b"/StmF /StdCF /StrF /StdCF "
        b"/O <" + b"11" * 48 + b"> /U <" + b"22" * 48 + b"> "
        b"/OE <" + b"33" * 32 + b"> /UE <" + b"44" * 32 + b"> /Perms <" + b"55" * 16 + b"> >>"
    )
    pdf = write_pdf([b"BT /F1 11 Tf 50 700 Td (secret) Tj ET"], objects=[encrypt])
    return pdf.replace(b"/Info 4 0 R >>", b"/Info 4 0 R /Encrypt 6 0 R /ID [<00> <00>] >>")


# --- DOCX and other zips ---------------------------------------------------------------


def docx_file(
    paragraphs: list[str], *, table: list[list[str]] | None = None, header: str | None = None
) -> bytes:
    """A Word document written by python-docx: a header, paragraphs, then a table."""
    document = docx.Document()
    if header is not None:
        section = document.sections[0]
        section.header.is_linked_to_previous = False
        section.header.paragraphs[0].text = header
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, values in zip(grid.rows, table, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_file(members: dict[str, bytes]) -> bytes:
    """A zip archive of these members (deflated)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def rezip(source: bytes, replace: dict[str, bytes]) -> bytes:
    """`source`, a zip, with some members' contents replaced."""
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(source)) as archive:
        for name in archive.namelist():
            members[name] = replace.get(name, archive.read(name))
    return zip_file(members)


def xlsx_like() -> bytes:
    """A spreadsheet package: [Content_Types].xml, workbook, one sheet."""
    return zip_file(
        {
            "[Content_Types].xml": b'<?xml version="1.0"?><Types xmlns="http://schemas.'
            b'openxmlformats.org/package/2006/content-types"><Override PartName="/xl/'
            b'workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            b'spreadsheetml.sheet.main+xml"/></Types>',
            "xl/workbook.xml": b"<workbook/>",
            "xl/worksheets/sheet1.xml": b"<worksheet/>",
        }
    )


# --- OLE2 (Compound File Binary) -------------------------------------------------------

_FREE, _END, _FAT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def _dir_entry(name: str, kind: int, *, child: int, right: int, start: int, size: int) -> bytes:
    encoded = (name + "\x00").encode("utf-16-le") if name else b""
    return struct.pack(
        "<64sHBBIII16sIQQIQ",
        encoded,
        len(encoded),
        kind,
        1,  # black
        _FREE,
        right,
        child,
        b"\x00" * 16,
        0,
        0,
        0,
        start,
        size,
    )


def ole_file(streams: dict[str, bytes]) -> bytes:
    """A Compound File Binary (v3, 512-byte sectors) holding these streams at its root.

    Streams are padded to 4,096 bytes so none lives in the mini stream; siblings form a
    chain in the order CFB sorts names (shorter first).
    """
    names = sorted(streams, key=lambda n: (len(n), n.upper()))
    sectors: list[bytes] = []
    fat: list[int] = [_FAT, _END]  # sector 0: the FAT, sector 1: the directory
    entries = []
    for index, name in enumerate(names):
        data = streams[name].ljust(4096, b"\x00")
        start = 2 + len(sectors)
        count = (len(data) + 511) // 512
        sectors.extend(data[i * 512 : (i + 1) * 512].ljust(512, b"\x00") for i in range(count))
        fat.extend([*range(start + 1, start + count), _END])
        right = index + 2 if index + 1 < len(names) else _FREE
        entries.append(_dir_entry(name, 2, child=_FREE, right=right, start=start, size=len(data)))
    root = _dir_entry("Root Entry", 5, child=1 if names else _FREE, right=_FREE, start=_END, size=0)
    directory = root + b"".join(entries)
    directory += _dir_entry("", 0, child=_FREE, right=_FREE, start=0, size=0) * (
        4 - 1 - len(entries)
    )
    assert len(directory) == 512, "at most three streams"
    fat_sector = struct.pack("<128I", *(fat + [_FREE] * (128 - len(fat))))
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        b"\x00" * 16,
        0x3E,
        3,
        0xFFFE,
        9,
        6,
        b"\x00" * 6,
        0,
        1,  # FAT sectors
        1,  # first directory sector
        0,
        4096,
        _END,
        0,
        _END,
        0,
    ) + struct.pack("<109I", 0, *([_FREE] * 108))
    return header + fat_sector + directory + b"".join(sectors)


# --- Images ----------------------------------------------------------------------------


def _picture(width: int, height: int, color: tuple[int, int, int]) -> Image.Image:
    picture = Image.new("RGB", (width, height), color)
    for x in range(40, width - 40, 7):  # dark "lines of text"
        for y in range(60, height - 60, 28):
            picture.putpixel((x, y), (20, 20, 20))
    return picture


def image_bytes(fmt: str, *, width: int = 320, height: int = 200) -> bytes:
    """An image in `fmt` ("PNG", "JPEG", "WEBP") made with Pillow."""
    out = io.BytesIO()
    _picture(width, height, (255, 255, 255)).save(out, fmt)
    return out.getvalue()


def noisy_png(min_bytes: int) -> bytes:
    """A PNG of random pixels (incompressible) of at least `min_bytes`."""
    side = int((min_bytes / 3) ** 0.5) + 8
    picture = Image.frombytes("RGB", (side, side), _random_bytes(side * side * 3))
    out = io.BytesIO()
    picture.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _random_bytes(n: int) -> bytes:
    return random.Random(7).randbytes(n)
