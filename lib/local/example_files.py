"""The example inputs as a user would send them: a PDF résumé, a screenshot of a job post.

`make demo` uploads these; the tests and benches use the same generators. The files are
made at run time from `examples/`: a PDF with a text layer (any script, one page per 45
lines) and a PNG of the text rendered with a CJK font (Debian's `fonts-noto-cjk`,
installed by `make fonts`). Pillow (the `local` extra has it, rapidocr-onnxruntime needs it)
is imported only by the screenshot's renderer.
"""

from __future__ import annotations

import base64
import io
import zlib
from importlib import resources
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LINES_PER_PAGE = 45
# Debian's fonts-noto-cjk (opentype/), older packages and other distributions (truetype/).
CJK_FONTS = (
    "opentype/noto/NotoSansCJK-Regular.ttc",
    "truetype/noto/NotoSansCJK-Regular.ttc",
)
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
# The detailed résumé in Chinese (the examples have it in English only): the résumé and
# more of its projects.
ZH_PROJECTS = "\n\n项目经历\n- 课程直播服务：使用 Python 与 Redis 重构，支持十万人同时在线。\n"


class MissingFont(RuntimeError):
    """No CJK font to render a screenshot with."""


def example(name: str) -> str:
    """The text of `examples/<name>` (the repository's sample files)."""
    path = EXAMPLES / name
    if not path.is_file():  # installed without the repository around it
        path = Path(str(resources.files("lib"))).parent / "examples" / name
    return path.read_text(encoding="utf-8")


def detailed_resume(lang: str) -> str:
    """The example detailed résumé of `lang` (in Chinese: the résumé with its projects)."""
    if lang == "en":
        return example("detailed_resume.en.txt")
    return example(f"resume.{lang}.txt") + ZH_PROJECTS


# --- PDF -------------------------------------------------------------------------------


def _pdf_string(text: str) -> bytes:
    raw = text.encode("latin-1")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _page_content(lines: list[str], cids: dict[str, int]) -> bytes:
    """One text object per line; Helvetica for Latin-1 lines, the CID font for the rest."""
    out = []
    for index, line in enumerate(lines):
        y = 760 - 14 * index
        try:
            shown = _pdf_string(line) + b" Tj"
            font = b"/F1"
        except UnicodeEncodeError:
            codes = "".join(f"{cids.setdefault(c, len(cids) + 1):04x}" for c in line)
            shown = b"<" + codes.encode() + b"> Tj"
            font = b"/F2"
        out.append(b"BT " + font + b" 11 Tf 50 %d Td " % y + shown + b" ET")
    return b"\n".join(out)


def _to_unicode(cids: dict[str, int]) -> bytes:
    entries = b"".join(
        b"<%04x> <%s>\n" % (cid, char.encode("utf-16-be").hex().encode())
        for char, cid in cids.items()
    )
    return (
        b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap\n"
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
        b"/CMapName /Adobe-Identity-UCS def /CMapType 2 def\n"
        b"1 begincodespacerange <0000> <FFFF> endcodespacerange\n"
        b"%d beginbfchar\n" % len(cids) + entries + b"endbfchar\n"
        b"endcmap CMapName currentdict /CMap defineresource pop end end"
    )


def pdf_stream(data: bytes, *, compress: bool = True) -> bytes:
    """A PDF stream object's body (Flate-compressed unless told otherwise)."""
    if compress:
        data = zlib.compress(data)
        return (
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + (b"\nendstream")
        )
    return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def write_pdf(contents: list[bytes], *, extra_fonts: bytes = b"", objects: list[bytes]) -> bytes:
    """A PDF with one page per content stream; `objects` are appended as objects 6, 7, ..."""
    n_pages = len(contents)
    first_page = 6 + len(objects)
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(n_pages))
    fonts = b"<< /F1 3 0 R " + extra_fonts + b">>"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % n_pages,
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Producer (slotline example files) >>",
        b"<< >>",  # unused (keeps the numbering of the optional objects at 6)
        *objects,
    ]
    for i, content in enumerate(contents):
        page_id = first_page + 2 * i
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font "
            + fonts
            + b" >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objs.append(pdf_stream(content))
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\n" % (len(objs) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def text_pdf(pages: list[str]) -> bytes:
    """A PDF whose pages show these texts (one line per "\\n"), any script.

    Latin-1 lines use Helvetica; others a CID font (Identity-H) whose ToUnicode map says
    what each code is, as PDF writers do for CJK text. No glyphs are embedded: a viewer
    shows boxes, a text extractor reads the text.
    """
    cids: dict[str, int] = {}
    contents = [_page_content(page.split("\n"), cids) for page in pages]
    if not cids:
        return write_pdf(contents, objects=[])
    objects = [
        # 6: the Type0 font, 7: its CIDFont, 8: the descriptor, 9: ToUnicode.
        b"<< /Type /Font /Subtype /Type0 /BaseFont /NotoSansSC /Encoding /Identity-H "
        b"/DescendantFonts [7 0 R] /ToUnicode 9 0 R >>",
        b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /NotoSansSC /CIDSystemInfo "
        b"<< /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor 8 0 R "
        b"/DW 1000 /CIDToGIDMap /Identity >>",
        b"<< /Type /FontDescriptor /FontName /NotoSansSC /Flags 4 /FontBBox [0 -200 1000 900] "
        b"/ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 700 /StemV 80 >>",
        pdf_stream(_to_unicode(cids)),
    ]
    return write_pdf(contents, extra_fonts=b"/F2 6 0 R ", objects=objects)


def paged_pdf(text: str, lines_per_page: int = LINES_PER_PAGE) -> bytes:
    """`text` as a PDF with a text layer, `lines_per_page` lines a page."""
    lines = text.splitlines()
    pages = ["\n".join(lines[i : i + lines_per_page]) for i in range(0, len(lines), lines_per_page)]
    return text_pdf(pages or [""])


def resume_pdf(lang: str) -> bytes:
    """The example résumé of `lang` as a PDF with selectable text."""
    return paged_pdf(example(f"resume.{lang}.txt"))


# --- Screenshots -----------------------------------------------------------------------


def cjk_font_path() -> Path:
    """The Noto CJK font file.

    Raises:
        MissingFont: none is installed.
    """
    for folder in FONT_DIRS:
        for name in CJK_FONTS:
            path = folder / name
            if path.exists():
                return path
    raise MissingFont("no Noto CJK font: install fonts-noto-cjk (`make fonts` does as root)")


def screenshot_png(text: str, size: int = 22) -> bytes:
    """`text` rendered black on white, one line per line, as PNG bytes.

    Raises:
        MissingFont: no CJK font is installed.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(cjk_font_path()), size)
    lines = text.splitlines()
    image = Image.new("RGB", (1400, (size + 12) * len(lines) + 40), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((20, 20 + index * (size + 12)), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    """A base64 data URL of `raw`."""
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def screenshot(text: str, size: int = 22) -> str:
    """`text` rendered as a PNG screenshot, as a data URL (what the JSON upload takes)."""
    return data_url(screenshot_png(text, size))


def job_screenshot_png(lang: str) -> bytes:
    """A screenshot of the example job description of `lang`."""
    return screenshot_png(example(f"job.{lang}.txt"))
