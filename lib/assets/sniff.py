"""What a file is, from its first bytes (magic numbers), never from its name or declared type."""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Literal

Sniffed = Literal[
    "pdf", "docx", "image/png", "image/jpeg", "image/webp", "zip", "ole", "rtf", "other"
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
ZIP_MAGIC = b"PK\x03\x04"
# Compound File Binary (OLE2): legacy .doc/.xls, and also an encrypted Office document,
# whose zip is wrapped in a CFB container with an "EncryptedPackage" stream.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
DOCX_MAIN_PART = "word/document.xml"
# What `[Content_Types].xml` declares the main part of a Word document to be (not a
# template, .dotx, nor a macro-enabled file, .docm: python-docx refuses both).
_DOCX_CONTENT_TYPE = (
    b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
)
_CONTENT_TYPES = "[Content_Types].xml"
_MAX_CONTENT_TYPES_BYTES = 256 * 1024
# Other types whose first bytes are known and that must not be taken for text.
_OTHER_MAGIC = (
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\x1f\x8b",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!",
    b"%!PS",
)


def sniff(data: bytes) -> Sniffed:
    """The type of a file by its leading bytes (and, for a zip, its member names).

    A PDF starts with `%PDF-`; a DOCX is a zip holding `word/document.xml`, declared a
    Word document's main part (any other zip, an .xlsx, a .pptx, a .dotx, is "zip");
    images by their signatures; "ole" is a legacy Office file or an encrypted Office
    document; "other" is anything else, text included (the caller decides whether it
    decodes as text).
    """
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(PNG_MAGIC):
        return "image/png"
    if data.startswith(JPEG_MAGIC):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(ZIP_MAGIC):
        return "docx" if _is_docx(data) else "zip"
    if data.startswith(OLE_MAGIC):
        return "ole"
    if data.startswith(b"{\\rtf"):
        return "rtf"
    return "other"


def is_encrypted_office(data: bytes) -> bool:
    """Whether a CFB (OLE2) file is an encrypted Office document (ECMA-376 encryption)."""
    return data.startswith(OLE_MAGIC) and _ENCRYPTED_PACKAGE in data


def is_known_binary(data: bytes) -> bool:
    """Whether the leading bytes are another known binary format's (GIF, TIFF, gzip, ...)."""
    return data.startswith(_OTHER_MAGIC)


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if DOCX_MAIN_PART not in names or _CONTENT_TYPES not in names:
                return False
            if archive.getinfo(_CONTENT_TYPES).file_size > _MAX_CONTENT_TYPES_BYTES:
                return False
            return _DOCX_CONTENT_TYPE in archive.read(_CONTENT_TYPES)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, KeyError):
        # A damaged zip (a cut-off upload loses the directory at its end): a DOCX if its
        # local headers name the main part, and then reading it says it is damaged.
        return DOCX_MAIN_PART.encode() in data


def image_complete(data: bytes, mime: str) -> bool:
    """Whether an image's container is whole: cut-off uploads are the common corruption.

    PNG ends with its IEND chunk, JPEG with an end-of-image marker (some writers append
    a few bytes after it), WebP's RIFF header states the file's length. The pixels are
    decoded later, by the vision model's provider.
    """
    if mime == "image/png":
        return len(data) >= 57 and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    if mime == "image/jpeg":
        return b"\xff\xd9" in data[-64:]
    if mime == "image/webp":
        riff_size = int.from_bytes(data[4:8], "little")
        return len(data) >= max(riff_size + 8, 20)
    return False
