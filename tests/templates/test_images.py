"""The job image's size is checked on the string's length, before anything strips or decodes it."""

from __future__ import annotations

import base64
import logging
import tracemalloc
from pathlib import Path

import pytest
from pydantic_core import PydanticCustomError

from lib.errors import ImageTooLarge
from lib.redis.port import RedisPort
from lib.templates.variables import (
    MAX_IMAGE_BYTES,
    check_image,
    max_data_url_chars,
    validate_variables,
)
from tests.support.producer import RecordingPublisher, build_app, client_for, make_settings
from tests.support.redis_snapshot import snapshot

PNG = b"\x89PNG\r\n\x1a\n"


def png(size: int) -> bytes:
    return PNG + b"\x00" * (size - len(PNG))


def wrapped_data_url(raw: bytes, mime: str = "image/jpeg") -> str:
    """MIME-style base64 (CRLF every 76 characters), with whitespace around the value."""
    text = base64.encodebytes(raw).decode().replace("\n", "\r\n")
    return f"  data:{mime};base64,{text}  \n"


def test_a_huge_value_is_refused_without_a_copy() -> None:
    """A 50 MB data URL is refused as too large having allocated next to nothing."""
    huge = "data:image/png;base64," + "A" * 50_000_000
    tracemalloc.start()
    try:
        with pytest.raises(PydanticCustomError) as caught:
            check_image(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.type == "image_too_large"
    assert peak < 64 * 1024, peak


def test_whitespace_counts_toward_the_length() -> None:
    """A tiny image padded with megabytes of whitespace is refused before it is stripped."""
    padded = "data:image/png;base64," + base64.b64encode(png(64)).decode() + " " * 10_000_000
    with pytest.raises(ImageTooLarge) as caught:
        validate_variables("job_summary", {"job_image": padded})
    assert caught.value.params["max_bytes"] == MAX_IMAGE_BYTES


def test_wrapped_base64_at_the_limit_is_accepted() -> None:
    """An image of exactly the limit, line-wrapped and padded with whitespace, still passes."""
    raw = b"\xff\xd8\xff" + b"\x00" * (MAX_IMAGE_BYTES - 3)
    url = wrapped_data_url(raw)
    assert len(url) <= max_data_url_chars(MAX_IMAGE_BYTES)
    assert check_image(url) == raw


def test_one_byte_over_the_limit_is_refused() -> None:
    """One byte more than the limit is refused once decoded, even when the length allowed it."""
    url = wrapped_data_url(png(MAX_IMAGE_BYTES + 1), "image/png")
    assert len(url) <= max_data_url_chars(MAX_IMAGE_BYTES)
    with pytest.raises(PydanticCustomError) as caught:
        check_image(url)
    assert caught.value.type == "image_too_large"


@pytest.mark.parametrize("max_bytes", [1, 2, 3, 1000, MAX_IMAGE_BYTES])
def test_length_bound_fits_the_largest_wrapped_image(max_bytes: int) -> None:
    """The length bound never refuses an image that fits: base64, CRLF every 76, header."""
    longest = wrapped_data_url(b"\x00" * max_bytes, "image/webp")
    assert len(longest) <= max_data_url_chars(max_bytes)


async def test_submit_with_an_oversized_image_is_413_and_keeps_nothing(
    tmp_path: Path, redis: RedisPort, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5 MiB image (6.7 MB of base64, under the body limit): 413 image_too_large, nothing kept."""
    caplog.set_level(logging.INFO)
    publisher = RecordingPublisher()
    app = build_app(make_settings(tmp_path), redis, publisher)
    image = "data:image/png;base64," + base64.b64encode(png(5 * 1024 * 1024)).decode()
    body = {"template": "job_summary", "variables": {"job_image": image}}
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", json=body)
    assert resp.status_code == 413
    assert resp.json()["error"] == "image_too_large"
    assert resp.json()["max_bytes"] == MAX_IMAGE_BYTES
    assert publisher.published == []
    assert await snapshot(redis) == {}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
