"""The event stream on a real Valkey (every adapter): append, read, TTL, SSE framing."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from lib import events
from lib.redis.port import RedisPort
from tests.support.events import append_event

KEY = "cs:events:alice:default:t1"


async def test_append_then_read_in_order(redis: RedisPort) -> None:
    """Events come back in append order with their type and decoded data."""
    first = await append_event(redis, KEY, "queued", {"position": 1}, ttl_s=60)
    await append_event(redis, KEY, "token", {"text": "héllo\nworld"}, ttl_s=60)
    got = await events.read(redis, KEY, events.START)
    assert [e.type for e in got] == ["queued", "token"]
    assert got[0].id == first
    assert got[1].data == {"text": "héllo\nworld"}


async def test_append_sets_ttl(redis: RedisPort) -> None:
    """Appending refreshes the stream's expiry."""
    await append_event(redis, KEY, "queued", {"position": 1}, ttl_s=120)
    ttl = int(await redis.execute("TTL", KEY))
    assert 110 <= ttl <= 120


async def test_read_after_id_is_exclusive(redis: RedisPort) -> None:
    """Reading after an id returns only later events, none twice."""
    ids = [await append_event(redis, KEY, "token", {"text": str(i)}, ttl_s=60) for i in range(5)]
    got = await events.read(redis, KEY, ids[1])
    assert [e.id for e in got] == ids[2:]


async def test_read_count_limits(redis: RedisPort) -> None:
    """`count` caps one read; the rest follows after the last id."""
    for i in range(5):
        await append_event(redis, KEY, "token", {"text": str(i)}, ttl_s=60)
    first = await events.read(redis, KEY, events.START, count=3)
    rest = await events.read(redis, KEY, first[-1].id, count=3)
    assert [e.data["text"] for e in first + rest] == ["0", "1", "2", "3", "4"]


async def test_read_missing_stream_is_empty(redis: RedisPort) -> None:
    """A stream that does not exist (or expired) reads as no events."""
    assert await events.read(redis, "cs:events:nobody:x:y", events.START) == []


async def test_blocking_read_wakes_on_append(tcp_redis: RedisPort, valkey_url: str) -> None:
    """On TCP a blocking read returns as soon as an event is appended."""
    from lib.redis.tcp import TcpRedis

    writer = TcpRedis.from_url(valkey_url)
    try:

        async def later() -> None:
            await asyncio.sleep(0.2)
            await append_event(writer, KEY, "started", {"model": "m", "attempt": 1}, ttl_s=60)

        task = asyncio.create_task(later())
        t0 = time.monotonic()
        got = await events.read(tcp_redis, KEY, events.START, block_ms=5000)
        await task
    finally:
        await writer.aclose()
    assert [e.type for e in got] == ["started"]
    assert 0.1 < time.monotonic() - t0 < 3  # the append at 0.2 s, not the 5 s block


def test_sse_event_framing() -> None:
    """An SSE message carries the stream id, the type and the data JSON on one line."""
    event = events.Event("17-0", "token", events.encode_data({"text": "a\nb"}))
    assert events.sse_event(event) == b'id: 17-0\nevent: token\ndata: {"text":"a\\nb"}\n\n'


def test_sse_event_never_breaks_framing() -> None:
    """A raw newline in stored data becomes several `data:` lines, not a message break."""
    framed = events.sse_event(events.Event("1-1", "result", "{\n}")).decode()
    assert framed == "id: 1-1\nevent: result\ndata: {\ndata: }\n\n"
    assert framed.count("\n\n") == 1


def test_sse_heartbeat_and_retry() -> None:
    """Heartbeats are comments; the retry hint is a bare `retry:` field."""
    assert events.sse_heartbeat().startswith(b":")
    assert events.sse_retry(2500) == b"retry: 2500\n\n"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("0", True),
        ("0-0", True),
        ("1700000000000-3", True),
        ("$", False),
        ("1-", False),
        ("abc", False),
        ("", False),
        ("1-2-3", False),
    ],
)
def test_valid_stream_id(value: str, ok: bool) -> None:
    """Only `ms` or `ms-seq` ids are accepted as resume points."""
    assert events.valid_stream_id(value) is ok


@pytest.mark.parametrize(
    ("kind", "terminal"),
    [
        ("done", True),
        ("error", True),
        ("cancelled", True),
        ("result", False),
        ("token", False),
        ("queued", False),
    ],
)
def test_terminal_types(kind: str, terminal: bool) -> None:
    """`done`, `error` and `cancelled` end a stream; nothing else does."""
    assert events.Event("1-0", kind, "{}").terminal is terminal


def test_non_json_data_is_kept_raw() -> None:
    """Data that is not JSON is returned as the stored string."""
    assert events.Event("1-0", "token", "plain").data == "plain"
    assert json.loads(events.encode_data({"k": "中文"})) == {"k": "中文"}
