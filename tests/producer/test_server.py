"""The producer on a real uvicorn server (loopback): cold import, live SSE, cut and resume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from lib import keys
from lib.auth import issue_token
from lib.local.serve import ServerThread
from lib.redis.tcp import TcpRedis
from producer.app import create_app
from tests.support.events import append_event
from tests.support.producer import JOB_MATCH, SECRET, RecordingPublisher, make_settings, parse_sse


@pytest.fixture
def server(tmp_path: Path, valkey_url: str) -> Iterator[str]:
    """The producer with its own lifespan-made Redis client, on a loopback port."""
    settings = make_settings(
        tmp_path, redis_url=valkey_url, sse_max_seconds=10.0, sse_heartbeat_s=0.3
    )
    with ServerThread(create_app(settings, publisher=RecordingPublisher())) as thread:
        yield thread.url


@pytest.fixture
async def writer(valkey_url: str) -> AsyncIterator[TcpRedis]:
    redis = TcpRedis.from_url(valkey_url)
    await redis.execute("FLUSHALL")
    yield redis
    await redis.aclose()


class SSEReader:
    """Reads SSE messages off one live response, across several calls."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_text()
        self._buffer = ""

    async def take(self, n: int) -> list[dict[str, str]]:
        """The next `n` messages with data (fewer if the stream ends)."""
        got: list[dict[str, str]] = []
        while len(got) < n:
            if "\n\n" not in self._buffer:
                try:
                    self._buffer += await anext(self._chunks)
                except StopAsyncIteration:
                    break
                continue
            block, self._buffer = self._buffer.split("\n\n", 1)
            got += [m for m in parse_sse(block + "\n\n") if "event" in m]
        return got


async def test_live_sse_cut_and_resume(server: str, writer: TcpRedis) -> None:
    """A live SSE reader cut mid-stream and resumed with Last-Event-ID sees every token once."""
    headers = {"authorization": f"Bearer {issue_token(SECRET, 'alice', 600)}"}
    async with httpx.AsyncClient(base_url=server, headers=headers, timeout=10) as client:
        task_id = (await client.post("/api/tasks", json=JOB_MATCH)).json()["task_id"]
        user, service = await writer.execute("HMGET", keys.task(task_id), "user", "service")
        key = keys.events(user, service, task_id)
        url = f"/api/tasks/{task_id}/events"
        async with client.stream("GET", url) as resp:
            # Streaming, not buffered: `queued` arrives while the task is still queued.
            reader = SSEReader(resp)
            first = await reader.take(1)
            assert [m["event"] for m in first] == ["queued"]
            for i in range(5):
                await append_event(writer, key, "token", {"text": f"t{i}"}, ttl_s=60)
            seen = first + await reader.take(3)
        # Cut after 3 tokens; the rest (and more) is written while nobody listens.
        for i in range(5, 8):
            await append_event(writer, key, "token", {"text": f"t{i}"}, ttl_s=60)
        await append_event(writer, key, "done", {"usage": {}}, ttl_s=60)
        resume = {"last-event-id": seen[-1]["id"]}
        async with client.stream("GET", url, headers=resume) as resp:
            seen += await SSEReader(resp).take(100)
    texts = [json.loads(m["data"])["text"] for m in seen if m["event"] == "token"]
    assert texts == [f"t{i}" for i in range(8)]
    assert seen[-1]["event"] == "done"
    assert len({m["id"] for m in seen}) == len(seen)


async def test_live_sse_heartbeats(server: str) -> None:
    """An idle live stream sends heartbeat comments."""
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        task_id = (await client.post("/api/tasks", json=JOB_MATCH)).json()["task_id"]
        async with client.stream("GET", f"/api/tasks/{task_id}/events") as resp:
            text = ""
            async for chunk in resp.aiter_text():
                text += chunk
                if text.count(": ping") >= 2:
                    break
    assert text.startswith("retry: 1500\n\n")
    assert "event: queued" in text
