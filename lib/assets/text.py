"""Plain text: decoding an uploaded text file, and normalizing any extracted text."""

from __future__ import annotations

import codecs
import re
import unicodedata

# Control characters (Unicode category Cc) but the ones text files hold (tab, line feed,
# vertical tab, form feed, carriage return): more than one in `_BINARY_ONE_IN` characters
# means the file is not text.
_BINARY_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_BINARY_ONE_IN = 100


def decode_text(data: bytes) -> str | None:
    """The text of a plain-text (or Markdown) file, or None when it is not one.

    UTF-8, with or without a byte-order mark; UTF-16 only with its byte-order mark (what
    Windows Notepad writes as "Unicode"). Text without a mark in another encoding
    (GBK, Latin-1) is not guessed: it would read as anything. A NUL, or more than one
    other control character in a hundred, means binary.
    """
    try:
        if data.startswith(codecs.BOM_UTF8):
            text = data[len(codecs.BOM_UTF8) :].decode("utf-8")
        elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = data.decode("utf-16")
        else:
            text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    if len(_BINARY_CONTROLS.findall(text)) * _BINARY_ONE_IN > len(text):
        return None
    return text


def _table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    # Line breaks of every kind become "\n".
    for c in "\v\f\x1c\x1d\x1e\x85\u2028\u2029":
        table[ord(c)] = "\n"
    # Spaces of every width (no-break, ideographic, thin, ...) and tabs become a space.
    for cp in [0x09, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000]:
        table[cp] = " "
    # Invisible: zero-width spaces and joiners, word joiner, byte-order mark, soft hyphen.
    for cp in (0x00AD, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF):
        table[cp] = None
    # Other control characters go (not "\n" or "\r": those are handled as line breaks).
    for cp in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]:
        table.setdefault(cp, None if cp not in (0x0A, 0x0D) else chr(cp))
    # PDF text layers often map CJK glyphs to the Kangxi radicals (U+2F00-2FD5, "⼯" for
    # "工") and Latin ones to ligatures ("ﬁ"): both are compatibility forms of the
    # ordinary characters, so their NFKC form is what the text means. (NFKC on the whole
    # text would also turn full-width Chinese punctuation into ASCII.)
    for cp in [*range(0x2F00, 0x2FD6), *range(0xFB00, 0xFB07)]:
        table[cp] = unicodedata.normalize("NFKC", chr(cp))
    return table


_TRANSLATE = _table()
_SPACES = re.compile(r" {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """Text as it is stored and counted: one space between words, paragraphs kept.

    NFC, every line break as "\\n", every kind of space as " ", invisible and control
    characters removed, runs of spaces collapsed, each line stripped, and runs of blank
    lines collapsed to one (a paragraph break). Single line breaks stay: a résumé's
    lines (bullets, dates) carry meaning.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.translate(_TRANSLATE)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def letters(text: str) -> int:
    """How many letters (any script) the text has: what tells text from page numbers."""
    return sum(1 for c in text if c.isalpha())
