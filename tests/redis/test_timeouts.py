"""Redis timeouts that fit the blocking reads: long quiet gaps keep their stream, a Redis
that is gone or hung answers 503 within seconds (real servers, real sockets, both adapters)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lib import keys
from lib.auth import issue_token
from lib.errors import RedisUnavailable
from lib.local.embedded import EmbeddedValkey, free_port
from lib.local.serve import ServerThread
from lib.local.upstash_rest import LocalRest
from lib.redis.factory import create_redis
from lib.redis.port import RedisPort
from lib.redis.tcp import TcpRedis
from lib.settings import Settings
from producer.app import create_app
from tests.support.events import append_event
from tests.support.producer import JOB_MATCH, SECRET, RecordingPublisher, make_settings

FAR_AHEAD = "9999999999999-0"  # a cursor after every event: a long-poll that must wait


def _settings(
    tmp_path: Path, redis: RedisPort, request: pytest.FixtureRequest, **kw: Any
) -> Settings:
    """Settings whose Redis is the one `redis` talks to, for the app's own factory-made adapter."""
    if redis.kind == "rest":
        rest: LocalRest = request.getfixturevalue("local_rest")
        where: dict[str, Any] = {
            "upstash_redis_rest_url": rest.url,
            "upstash_redis_rest_token": SecretStr(rest.token),
        }
    else:
        where = {"redis_url": request.getfixturevalue("valkey_url")}
    return make_settings(tmp_path, **where, **kw)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Serve producer apps on real loopback ports (uvicorn threads); stopped after the test."""
    threads: list[ServerThread] = []

    def start(settings: Settings) -> str:
        thread = ServerThread(create_app(settings, publisher=RecordingPublisher()))
        threads.append(thread)
        return thread.start()

    yield start
    for thread in threads:
        thread.stop()


def _client(base_url: str, timeout: float = 30.0) -> httpx.AsyncClient:
    token = issue_token(SECRET, "alice", 3600)
    return httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {token}"}, timeout=timeout
    )


async def _submit(client: httpx.AsyncClient) -> str:
    resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


async def _timed_sse(client: httpx.AsyncClient, url: str) -> AsyncIterator[tuple[float, str]]:
    """Each SSE message of one response with the moment it arrived (monotonic s)."""
    async with client.stream("GET", url) as resp:
        assert resp.status_code == 200
        buffer = ""
        async for chunk in resp.aiter_text():
            buffer += chunk
            while "\n\n" in buffer:
                message, buffer = buffer.split("\n\n", 1)
                yield time.monotonic(), message


async def _stream_key(redis: RedisPort, task_id: str) -> str:
    user, service = await redis.execute("HMGET", keys.task(task_id), "user", "service")
    return keys.events(user, service, task_id)


async def test_sse_heartbeats_flow_through_a_long_quiet_gap(
    tmp_path: Path, redis: RedisPort, request: pytest.FixtureRequest, serve: Any
) -> None:
    """A task queued for 4 heartbeats: a ping arrives about every second, then the events."""
    settings = _settings(
        tmp_path, redis, request, sse_heartbeat_s=1.0, sse_max_seconds=20.0, sse_retry_ms=500
    )
    base = serve(settings)
    async with _client(base) as client:
        task_id = await _submit(client)
        key = await _stream_key(redis, task_id)

        async def worker_later() -> None:
            await asyncio.sleep(4.5)
            await append_event(redis, key, "started", {"model": "m", "attempt": 1}, ttl_s=60)
            await append_event(redis, key, "done", {"usage": {}}, ttl_s=60)

        writer = asyncio.create_task(worker_later())
        opened = time.monotonic()
        seen = [
            (at, message)
            async for at, message in _timed_sse(client, f"/api/tasks/{task_id}/events")
        ]
        await writer
    kinds = [m.split("\n")[-1] if m.startswith("id:") else m for _, m in seen]
    assert kinds[0] == "retry: 500"
    started = next(i for i, (_, m) in enumerate(seen) if "event: started" in m)
    pings = [at for at, m in seen[:started] if m == ": ping"]
    assert len(pings) >= 3, kinds
    assert "event: done" in seen[-1][1]
    # No silence much longer than one heartbeat, from the open to the first event.
    moments = [opened, *(at for at, _ in seen[: started + 1])]
    assert max(b - a for a, b in itertools.pairwise(moments)) < 2.5


async def test_blocking_reads_longer_than_five_seconds(
    tmp_path: Path, valkey_url: str, tcp_redis: RedisPort, serve: Any
) -> None:
    """Over TCP a 7 s long-poll answers 200 empty, and SSE sends its 6 s heartbeat, unbroken."""
    settings = make_settings(
        tmp_path,
        redis_url=valkey_url,
        longpoll_max_wait_s=20.0,
        sse_heartbeat_s=6.0,
        sse_max_seconds=8.0,
        sse_retry_ms=900,
    )
    base = serve(settings)
    async with _client(base) as client:
        task_id = await _submit(client)

        async def long_poll() -> tuple[float, httpx.Response]:
            started = time.monotonic()
            resp = await client.get(
                f"/api/tasks/{task_id}/events", params={"after": FAR_AHEAD, "wait": 7}
            )
            return time.monotonic() - started, resp

        async def sse() -> list[str]:
            return [m async for _, m in _timed_sse(client, f"/api/tasks/{task_id}/events")]

        (waited, polled), messages = await asyncio.gather(long_poll(), sse())
    assert polled.status_code == 200, polled.text
    assert polled.json() == {"events": [], "last_id": FAR_AHEAD, "done": False, "position": 1}
    assert waited >= 6.9
    assert messages[0] == "retry: 900" and "event: queued" in messages[1]
    assert messages[2:] == [": ping", "retry: 900"]


async def _server_pid(url: str) -> int:
    redis = TcpRedis.from_url(url)
    try:
        info = str(await redis.execute("INFO", "server"))
    finally:
        await redis.aclose()
    return int(info.split("process_id:", 1)[1].split()[0])


@pytest.fixture
async def own_valkey() -> AsyncIterator[tuple[str, int]]:
    """A Valkey of this test alone (it gets stopped or killed); its URL and pid."""
    server = EmbeddedValkey()
    url = server.start()
    pid = await _server_pid(url)
    try:
        yield url, pid
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        server.stop()


async def test_a_hung_redis_answers_503_within_seconds(
    tmp_path: Path, own_valkey: tuple[str, int], serve: Any
) -> None:
    """A SIGSTOPped Valkey (accepts, never answers): status, long-poll and submit answer 503
    service_unavailable in a few seconds, and 200 again once it resumes."""
    url, pid = own_valkey
    base = serve(make_settings(tmp_path, redis_url=url, longpoll_max_wait_s=20.0))
    async with _client(base) as client:
        task_id = await _submit(client)
        assert (await client.get(f"/api/tasks/{task_id}")).status_code == 200
        os.kill(pid, signal.SIGSTOP)
        try:
            calls: list[tuple[str, str, dict[str, Any]]] = [
                ("GET", f"/api/tasks/{task_id}", {}),
                ("GET", f"/api/tasks/{task_id}/events", {"after": FAR_AHEAD, "wait": 15}),
                ("POST", "/api/tasks", {}),
            ]
            for method, path, params in calls:
                started = time.monotonic()
                body = {**JOB_MATCH, "service_id": "other"} if method == "POST" else None
                resp = await client.request(method, path, params=params, json=body)
                elapsed = time.monotonic() - started
                assert resp.status_code == 503, (path, resp.text)
                assert resp.json()["error"] == "service_unavailable"
                assert elapsed < 7.0, (path, elapsed)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (await client.get(f"/api/tasks/{task_id}")).status_code == 200


async def test_sse_ends_with_a_retry_hint_when_redis_hangs_mid_stream(
    tmp_path: Path, own_valkey: tuple[str, int], serve: Any
) -> None:
    """Redis hangs while a live SSE reader blocks: the stream ends with `retry:`, not a cut."""
    url, pid = own_valkey
    settings = make_settings(
        tmp_path, redis_url=url, sse_heartbeat_s=1.0, sse_max_seconds=60.0, sse_retry_ms=800
    )
    base = serve(settings)
    async with _client(base) as client:
        task_id = await _submit(client)
        seen: list[str] = []
        stopped_at = 0.0
        try:
            async for _, message in _timed_sse(client, f"/api/tasks/{task_id}/events"):
                seen.append(message)
                if "event: queued" in message:
                    os.kill(pid, signal.SIGSTOP)
                    stopped_at = time.monotonic()
        finally:
            os.kill(pid, signal.SIGCONT)
        ended = time.monotonic() - stopped_at
    assert seen[0] == "retry: 800" and "event: queued" in seen[1]
    assert seen[-1] == "retry: 800"
    # One heartbeat's block plus the 3 s reply allowance, with room for a loaded machine.
    assert ended < 9.0


@pytest.mark.parametrize("how", ["killed", "nothing listens"])
async def test_a_gone_redis_answers_503_at_once(
    tmp_path: Path, own_valkey: tuple[str, int], serve: Any, how: str
) -> None:
    """Valkey killed, or a port where nothing listens: 503 service_unavailable in about a second."""
    url, pid = own_valkey
    if how == "nothing listens":
        url = f"redis://127.0.0.1:{free_port()}/0"
    base = serve(make_settings(tmp_path, redis_url=url))
    async with _client(base) as client:
        if how == "killed":
            task_id = await _submit(client)
            os.kill(pid, signal.SIGKILL)
        else:
            task_id = "0" * 32
        reads: list[tuple[str, dict[str, Any]]] = [
            (f"/api/tasks/{task_id}", {}),
            (f"/api/tasks/{task_id}/events", {"after": FAR_AHEAD, "wait": 10}),
        ]
        for path, params in reads:
            started = time.monotonic()
            resp = await client.get(path, params=params)
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"] == "service_unavailable"
            assert time.monotonic() - started < 3.0


async def test_factory_passes_the_timeouts_to_both_adapters(tmp_path: Path) -> None:
    """A silent endpoint: the factory-made adapters give up after REDIS_SOCKET_TIMEOUT_S."""
    release = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.create_task(silent(reader, writer)))

    server = await asyncio.start_server(track, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    common: dict[str, Any] = {"redis_socket_timeout_s": 0.5, "redis_rest_retries": 0}
    tcp = create_redis(make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{port}/0", **common))
    rest = create_redis(
        make_settings(
            tmp_path,
            upstash_redis_rest_url=f"http://127.0.0.1:{port}",
            upstash_redis_rest_token=SecretStr("t"),
            **common,
        )
    )
    try:
        for adapter in (tcp, rest):
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await adapter.execute("PING")
            assert time.monotonic() - started < 2.0, adapter.kind
    finally:
        await tcp.aclose()
        await rest.aclose()
        release.set()
        await asyncio.gather(*handlers)
        server.close()
        await server.wait_closed()


async def test_tcp_blocking_read_has_a_deadline_of_block_plus_timeout(
    own_valkey: tuple[str, int],
) -> None:
    """A blocking XREAD on a hung Valkey fails after its block time plus the socket timeout,
    and the adapter works again once Valkey resumes (the cut connection was dropped)."""
    url, pid = own_valkey
    redis = TcpRedis.from_url(url, socket_timeout_s=0.5)
    try:
        await redis.execute("XADD", "s", "1-0", "f", "v")
        assert await redis.xread("s", "0-0", count=1, block_ms=100) == [("1-0", {"f": "v"})]
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            with pytest.raises(RedisUnavailable, match="blocking XREAD"):
                await redis.xread("s", "1-0", count=1, block_ms=700)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert 1.1 <= elapsed < 3.0
        assert await redis.xread("s", "1-0", count=1, block_ms=200) == []
        await redis.execute("XADD", "s", "2-0", "f", "w")
        assert await redis.xread("s", "1-0", count=1, block_ms=200) == [("2-0", {"f": "w"})]
    finally:
        await redis.aclose()
