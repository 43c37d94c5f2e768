"""Shared pieces of the producer tests: settings, a recording publisher, app clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lib.auth import issue_token
from lib.errors import PublishFailed
from lib.redis.port import Arg, KeyedEntry, RedisPort, StreamEntry
from lib.routing import Route
from lib.settings import Settings
from producer.app import create_app

SECRET = "test-secret-0123456789abcdef0123456789"

JOB_MATCH: dict[str, Any] = {
    "template": "job_match",
    "variables": {"resume_text": "Python developer, 5 years.", "job_text": "Senior Python role."},
}


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test: a known secret, its own state folder, short time limits."""
    values: dict[str, Any] = {
        "app_secret": SECRET,
        "state_dir": tmp_path / "state",
        "sse_max_seconds": 2.0,
        "sse_heartbeat_s": 10.0,
        "sse_retry_ms": 1500,
        "longpoll_max_wait_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Published:
    route: Route
    body: dict[str, Any]
    task_id: str
    slot_limit: int


@dataclass
class RecordingPublisher:
    """In-process stand-in for QStash: records what would be published (or fails on demand)."""

    fail: bool = False
    # Runs just before a failing publish raises (e.g. a worker starts the task meanwhile).
    before_fail: Callable[[str], Awaitable[None]] | None = None
    published: list[Published] = field(default_factory=list)

    async def publish_task(
        self, route: Route, body: dict[str, Any], *, task_id: str, slot_limit: int
    ) -> str:
        if self.fail:
            if self.before_fail is not None:
                await self.before_fail(task_id)
            raise PublishFailed("push queue unreachable")
        self.published.append(Published(route, body, task_id, slot_limit))
        return f"msg_{task_id}"


class CountingRedis:
    """A real Redis port that counts round trips (each call is one)."""

    def __init__(self, inner: RedisPort) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.calls: list[str] = []

    async def execute(self, *args: Arg) -> Any:
        self.calls.append(str(args[0]).upper())
        return await self.inner.execute(*args)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        self.calls.append("PIPELINE")
        return await self.inner.pipeline(commands)

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        self.calls.append("EVALSHA")
        return await self.inner.evalsha(sha, keys, args)

    async def xread(
        self, key: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        self.calls.append("XREAD")
        return await self.inner.xread(key, after_id, count=count, block_ms=block_ms)

    async def xread_streams(
        self, streams: Sequence[tuple[str, str]], *, count: int, block_ms: int | None
    ) -> list[KeyedEntry]:
        self.calls.append("XREAD")
        return await self.inner.xread_streams(streams, count=count, block_ms=block_ms)

    async def aclose(self) -> None:
        await self.inner.aclose()


def client_for(app: Any, *, user: str | None = None, **headers: str) -> httpx.AsyncClient:
    """An HTTP client on the app in process; `user` signs in with a bearer token."""
    if user is not None:
        headers["authorization"] = f"Bearer {issue_token(SECRET, user, 3600)}"
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers
    )


def build_app(settings: Settings, redis: RedisPort, publisher: RecordingPublisher) -> Any:
    """The producer app with injected clients."""
    return create_app(settings, redis=redis, publisher=publisher)


def parse_sse(text: str) -> list[dict[str, str]]:
    """SSE text → messages (`id`, `event`, `data`, `retry`, or `comment`)."""
    messages: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        msg: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                msg["comment"] = line[1:].strip()
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            msg[name] = msg[name] + "\n" + value if name in msg else value
        messages.append(msg)
    return messages
