"""Text from job-description screenshots for the offline model (RapidOCR, models in its wheel).

`rapidocr-onnxruntime` ships its PP-OCRv4 detection and recognition models (Chinese and
English) inside the wheel, so reading an image needs no download. It is part of the
`local` extra and is imported only here, on the first image the offline model server
receives: the producer, the worker and a text-only offline model never load it
(onnxruntime and OpenCV cost ~0.9 s to import, the engine ~1 s to build).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import re
import threading
from collections import OrderedDict
from typing import Any

logger = logging.getLogger(__name__)

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,(?P<data>.+)$", re.S)
# Recognition reads an em dash between CJK text as 一 ("one"): "（AI 平台）一智联" is a dash.
_CJK_DASH = re.compile(r"(?<=[)）])\s*一\s*(?=\S)")
CACHE_SIZE = 32


class OcrUnavailable(Exception):
    """The OCR library is not installed (no `local` extra)."""


class BadImage(Exception):
    """The image is not a base64 data URL of a picture the engine can decode."""


def image_bytes(url: str) -> bytes:
    """The bytes of a base64 image data URL.

    Raises:
        BadImage: not a data URL, or not base64.
    """
    match = _DATA_URL.match(url.strip())
    if match is None:
        raise BadImage("only base64 data URLs are read (data:image/...;base64,...)")
    try:
        return base64.b64decode("".join(match["data"].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage("the data URL is not valid base64") from exc


def lines_of(boxes: list[Any]) -> list[str]:
    """Detected text boxes as lines: top to bottom, boxes of one line left to right.

    A box belongs to the line above when its vertical centre lies within that line's
    height (screenshots are upright; columns are not told apart).
    """
    items = []
    for box, text, _score in boxes:
        ys = [float(point[1]) for point in box]
        x = min(float(point[0]) for point in box)
        items.append((min(ys), max(ys), x, str(text).strip()))
    items.sort(key=lambda item: (item[0], item[2]))
    rows: list[list[tuple[float, float, float, str]]] = []
    for item in items:
        centre = (item[0] + item[1]) / 2
        if rows and rows[-1][0][0] <= centre <= rows[-1][0][1]:
            rows[-1].append(item)
        else:
            rows.append([item])
    out = []
    for row in rows:
        text = " ".join(part[3] for part in sorted(row, key=lambda part: part[2]) if part[3])
        if text:
            out.append(_CJK_DASH.sub(" — ", text))
    return out


def _pixels(raw: bytes) -> Any:
    """The image as an OpenCV-style BGR array (Pillow decodes every type the route takes).

    Raises:
        BadImage: Pillow cannot decode it.
    """
    import numpy
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(f"the image could not be decoded: {type(exc).__name__}") from exc
    return numpy.asarray(rgb)[:, :, ::-1]


class OcrReader:
    """Reads images with one lazily built engine; results cached by image digest.

    One engine serves the process, one image at a time (a lock: onnxruntime already
    uses every core for one image). The cache answers a retry of the same image at once.
    """

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    def _get_engine(self) -> Any:
        if self._engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise OcrUnavailable(
                    "reading images needs the OCR engine: pip install 'slotline[local]'"
                ) from exc
            # One thread: measured faster on the loaded 2-core test host (5–11 s against
            # 10–17 s per screenshot with every core), and the rest of the local stack,
            # which shares the process and the machine, keeps a core.
            self._engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
            logger.info("offline model: OCR engine ready")
        return self._engine

    def read(self, url: str) -> str:
        """The text of one image data URL, line by line (blocking: call from a thread).

        Raises:
            BadImage: not a decodable image data URL.
            OcrUnavailable: the OCR library is not installed.
        """
        raw = image_bytes(url)
        digest = hashlib.sha256(raw).hexdigest()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None:
                self._cache.move_to_end(digest)
                return cached
            engine = self._get_engine()
            boxes, _elapsed = engine(_pixels(raw), use_cls=False)
            text = "\n".join(lines_of(boxes or []))
            self._cache[digest] = text
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        logger.info("offline model: OCR read %d characters from an image", len(text))
        return text
