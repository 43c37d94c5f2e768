"""The events reader over HTTP: SSE with resume, heartbeats, time limit; JSON long-poll."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lib import events, keys
from lib.clock import now_ms
from lib.redis.port import RedisPort
from lib.settings import Settings
from tests.support.events import append_event
from tests.support.producer import (
    JOB_MATCH,
    RecordingPublisher,
    build_app,
    client_for,
    make_settings,
    parse_sse,
)

TOKENS = [f"tok{i} " for i in range(12)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings, redis: RedisPort) -> Any:
    return build_app(settings, redis, RecordingPublisher())


async def _submit(client: httpx.AsyncClient) -> str:
    """Submit job_match; return the task id."""
    resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


async def _stream_key(redis: RedisPort, task_id: str) -> str:
    user, service = await redis.execute("HMGET", keys.task(task_id), "user", "service")
    return keys.events(user, service, task_id)


async def _run_worker(
    redis: RedisPort, key: str, *, delay: float = 0.0, status: bool = True, task_id: str = ""
) -> None:
    """Write what a worker would: started, token batches, result, done (then the status)."""
    await append_event(redis, key, "started", {"model": "glm-4.5-flash", "attempt": 1}, ttl_s=60)
    for text in TOKENS:
        if delay:
            await asyncio.sleep(delay)
        await append_event(redis, key, "token", {"text": text}, ttl_s=60)
    await append_event(redis, key, "result", {"match_score": 80}, ttl_s=60)
    await append_event(redis, key, "done", {"usage": {"total_tokens": 12}}, ttl_s=60)
    if status and task_id:
        await redis.execute("HSET", keys.task(task_id), "status", "done")


def _data_events(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [m for m in messages if "event" in m]


async def test_sse_streams_until_done(app: Any, redis: RedisPort) -> None:
    """SSE sends every event (ids = stream ids) while the worker writes, and ends at `done`."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        key = await _stream_key(redis, task_id)
        worker = asyncio.create_task(_run_worker(redis, key, delay=0.01, task_id=task_id))
        t0 = time.monotonic()
        resp = await client.get(f"/api/tasks/{task_id}/events")
        await worker
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["cache-control"] == "no-cache"
    got = _data_events(parse_sse(resp.text))
    assert [m["event"] for m in got] == ["queued", "started", *["token"] * 12, "result", "done"]
    assert "".join(json.loads(m["data"])["text"] for m in got if m["event"] == "token") == "".join(
        TOKENS
    )
    stored = [e.id for e in await events.read(redis, key, events.START)]
    assert [m["id"] for m in got] == stored
    # Ended at `done`, not at the time limit (1.8 s): the writer takes ~0.15 s, the rest
    # of the 1.5 s is for the machine's load.
    assert time.monotonic() - t0 < 1.5
    assert parse_sse(resp.text)[0] == {"retry": "1500"}


@pytest.mark.parametrize("cut", [0, 1, 5, 14, 15])
@pytest.mark.parametrize("via", ["header", "query"])
async def test_sse_resume_exactly_once(app: Any, redis: RedisPort, cut: int, via: str) -> None:
    """Resuming after any event id (header or query) yields the rest: no gap, no duplicate."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        key = await _stream_key(redis, task_id)
        await _run_worker(redis, key, task_id=task_id)
        full = _data_events(parse_sse((await client.get(f"/api/tasks/{task_id}/events")).text))
        last = full[cut]["id"]
        if via == "header":
            resp = await client.get(f"/api/tasks/{task_id}/events", headers={"last-event-id": last})
        else:
            resp = await client.get(f"/api/tasks/{task_id}/events?last_event_id={last}")
    rest = _data_events(parse_sse(resp.text))
    assert full[: cut + 1] + rest == full
    assert len({m["id"] for m in full}) == len(full) == 16


async def test_sse_resume_live_cut_mid_stream(app: Any, redis: RedisPort) -> None:
    """A reader cut mid-stream (time limit) and resumed with Last-Event-ID sees each token once."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        key = await _stream_key(redis, task_id)
        worker = asyncio.create_task(_run_worker(redis, key, delay=0.1, task_id=task_id))
        seen: list[dict[str, str]] = []
        last = None
        for _ in range(20):
            headers: dict[str, str] = {"last-event-id": last} if last else {}
            resp = await client.get(f"/api/tasks/{task_id}/events", headers=headers)
            batch = _data_events(parse_sse(resp.text))
            seen += batch
            if batch:
                last = batch[-1]["id"]
            if batch and batch[-1]["event"] == "done":
                break
        await worker
    tokens = [m for m in seen if m["event"] == "token"]
    assert [json.loads(m["data"])["text"] for m in tokens] == TOKENS
    assert len({m["id"] for m in seen}) == len(seen)


async def test_sse_ends_with_retry_before_time_limit(tmp_path: Path, redis: RedisPort) -> None:
    """An unfinished task's SSE ends before sse_max_seconds with a retry hint, with heartbeats."""
    settings = make_settings(tmp_path, sse_max_seconds=2.0, sse_heartbeat_s=0.2, sse_retry_ms=700)
    app = build_app(settings, redis, RecordingPublisher())
    async with client_for(app) as client:
        task_id = await _submit(client)
        t0 = time.monotonic()
        resp = await client.get(f"/api/tasks/{task_id}/events")
        elapsed = time.monotonic() - t0
    messages = parse_sse(resp.text)
    # The reader stops 10% (0.2 s) before the limit, so the answer is back by 1.8 s plus the
    # last read and the response: the 0.2 s left before 2 s are for the machine's load.
    assert 1.75 < elapsed < 2.0
    assert [m["event"] for m in _data_events(messages)] == ["queued"]
    assert messages[-1] == {"retry": "700"}
    assert sum(1 for m in messages if m.get("comment") == "ping") >= 2


async def test_sse_after_the_end_closes_at_once(app: Any, redis: RedisPort) -> None:
    """Resuming after the terminal event of a finished task returns nothing and ends at once."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        key = await _stream_key(redis, task_id)
        await _run_worker(redis, key, task_id=task_id)
        last = (await events.read(redis, key, events.START))[-1].id
        t0 = time.monotonic()
        resp = await client.get(f"/api/tasks/{task_id}/events", headers={"last-event-id": last})
    assert _data_events(parse_sse(resp.text)) == []
    assert time.monotonic() - t0 < 1.0  # at once: waiting would take the 1.8 s time limit


async def test_sse_bad_last_event_id_422(app: Any) -> None:
    """A Last-Event-ID that is not a stream id is 422 invalid_request."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        resp = await client.get(f"/api/tasks/{task_id}/events", headers={"last-event-id": "$"})
    assert (resp.status_code, resp.json()["error"]) == (422, "invalid_request")


@pytest.mark.parametrize("mode", ["sse", "json"])
async def test_events_non_owner_404(app: Any, mode: str) -> None:
    """Only the owner may read a task's events."""
    async with client_for(app, user="alice") as alice:
        task_id = await _submit(alice)
    suffix = "?after=0" if mode == "json" else ""
    async with client_for(app, user="mallory") as other:
        resp = await other.get(f"/api/tasks/{task_id}/events{suffix}")
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")


async def test_long_poll_returns_existing_events(app: Any, redis: RedisPort) -> None:
    """`?after=0` returns the events so far as JSON with the last id."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        resp = await client.get(f"/api/tasks/{task_id}/events?after=0&wait=0")
    body = resp.json()
    assert resp.status_code == 200 and body["done"] is False
    assert [(e["type"], e["data"]) for e in body["events"]] == [("queued", {"position": 1})]
    assert body["last_id"] == body["events"][0]["id"]


async def test_long_poll_waits_for_new_events(app: Any, redis: RedisPort) -> None:
    """With nothing new, the long-poll waits and returns as soon as an event arrives."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        key = await _stream_key(redis, task_id)
        first = (await client.get(f"/api/tasks/{task_id}/events?after=0")).json()

        async def later() -> None:
            await asyncio.sleep(0.3)
            await append_event(redis, key, "started", {"model": "m", "attempt": 1}, ttl_s=60)

        writer = asyncio.create_task(later())
        t0 = time.monotonic()
        resp = await client.get(f"/api/tasks/{task_id}/events?after={first['last_id']}&wait=5")
        elapsed = time.monotonic() - t0
        await writer
    body = resp.json()
    assert [e["type"] for e in body["events"]] == ["started"]
    # The event comes at 0.3 s (REST's backed-off polls find it by ~0.35 s); not returning
    # would take the 2 s cap: the rest is room for load.
    assert 0.2 < elapsed < 1.5


async def test_long_poll_wait_is_capped(tmp_path: Path, redis: RedisPort) -> None:
    """`wait` is capped by longpoll_max_wait_s; an empty answer keeps the cursor."""
    app = build_app(make_settings(tmp_path, longpoll_max_wait_s=0.3), redis, RecordingPublisher())
    async with client_for(app) as client:
        task_id = await _submit(client)
        first = (await client.get(f"/api/tasks/{task_id}/events?after=0")).json()
        t0 = time.monotonic()
        resp = await client.get(f"/api/tasks/{task_id}/events?after={first['last_id']}&wait=30")
        elapsed = time.monotonic() - t0
    assert resp.json() == {"events": [], "last_id": first["last_id"], "done": False, "position": 1}
    assert 0.25 < elapsed < 1.5  # the 0.3 s cap, not the 30 s asked for


async def test_long_poll_done_flag(app: Any, redis: RedisPort) -> None:
    """`done` is true once the terminal event is returned, and after it."""
    async with client_for(app, accept="application/json") as client:
        task_id = await _submit(client)
        key = await _stream_key(redis, task_id)
        await _run_worker(redis, key, task_id=task_id)
        body = (await client.get(f"/api/tasks/{task_id}/events")).json()
        after = (
            await client.get(f"/api/tasks/{task_id}/events?after={body['last_id']}&wait=5")
        ).json()
    assert body["done"] is True and body["events"][-1]["type"] == "done"
    assert after == {"events": [], "last_id": body["last_id"], "done": True, "position": None}


async def test_cancelled_task_stream_ends(app: Any) -> None:
    """After a cancel the stream ends with the `cancelled` event."""
    async with client_for(app) as client:
        task_id = await _submit(client)
        await client.delete(f"/api/tasks/{task_id}")
        resp = await client.get(f"/api/tasks/{task_id}/events")
    assert [m["event"] for m in _data_events(parse_sse(resp.text))] == ["queued", "cancelled"]


async def test_live_reader_coalesces_reads(redis: RedisPort) -> None:
    """A live reader reads at most once per interval: token reads are ≥ 50 ms apart, so 30
    writes 10 ms apart come in batches."""
    import asyncio as _asyncio
    import itertools as _itertools
    import time as _time

    from producer.events import _Reader
    from tests.support.events import append_event as append

    interval = 0.05
    key = "cs:events:u:s:coalesce"
    reader = _Reader(redis, key, "0-0", min_interval_s=interval)

    async def writer() -> None:
        for i in range(30):
            await append(redis, key, "token", {"text": str(i)}, ttl_s=60)
            await _asyncio.sleep(0.01)

    task = _asyncio.create_task(writer())
    seen: list[str] = []
    returned: list[float] = []
    while len(seen) < 30:
        batch = await reader.next(1.0)
        returned.append(_time.monotonic())
        seen.extend(e.data["text"] for e in batch)
    await task
    assert seen == [str(i) for i in range(30)]
    # The rule itself, not a count that depends on how fast the writer ran: the reader
    # starts its interval just before it returns a token batch (no await in between) and
    # sleeps it out before the next read, so load can only widen the gaps. 5 ms covers the
    # two clock reads and a GC pause between them; a reader that did not wait would show
    # the writer's 10 ms.
    gaps = [b - a for a, b in _itertools.pairwise(returned)]
    assert min(gaps) >= interval - 0.005, gaps
    # Coalesced: a read took several tokens (the writer would have to stall 40 ms after
    # every write for each read to find one).
    assert len(returned) < len(seen), len(returned)


async def test_live_reader_never_holds_back_the_first_token(redis: RedisPort) -> None:
    """Coalescing starts with the tokens: a token written right after `started` is read at once."""
    import asyncio as _asyncio
    import time as _time

    from producer.events import _Reader
    from tests.support.events import append_event as append

    key = "cs:events:u:s:first-token"
    reader = _Reader(redis, key, "0-0", min_interval_s=1.0)
    await append(redis, key, "started", {}, ttl_s=60)
    assert [e.type for e in await reader.next(2.0)] == ["started"]

    async def first_token() -> None:
        await _asyncio.sleep(0.02)
        await append(redis, key, "token", {"text": "a"}, ttl_s=60)

    task = _asyncio.create_task(first_token())
    began = _time.monotonic()
    assert [e.type for e in await reader.next(2.0)] == ["token"]
    # Not held for the 1 s interval: the token comes 20 ms after (REST: the first 50 ms
    # poll); the 0.55 s beyond that are for the machine's load.
    assert _time.monotonic() - began < 0.6
    await task
    await append(redis, key, "token", {"text": "b"}, ttl_s=60)
    began = _time.monotonic()
    assert [e.type for e in await reader.next(2.0)] == ["token"]
    # The next token read does wait: the interval began when `a` was returned, one append
    # (a round trip) before this clock read; 0.2 s is left for that round trip.
    assert _time.monotonic() - began >= 0.8


async def test_a_queued_reader_sees_its_position_move_up(tmp_path: Path, redis: RedisPort) -> None:
    """While a task waits, SSE sends its new position (no id) as the tasks ahead start."""
    from lib.tasks.message import TaskMessage
    from lib.tasks.schedule import Run
    from lib.tasks.store import TaskStore

    settings = make_settings(
        tmp_path, sse_max_seconds=3.0, sse_position_refresh_s=0.1, glm_flash_max_workers=1
    )
    publisher = RecordingPublisher()
    app = build_app(settings, redis, publisher)
    async with client_for(app, user="ann") as first, client_for(app, user="ben") as second:
        ahead = await _submit(first)
        task_id = await _submit(second)
        msg = TaskMessage.model_validate(publisher.published[0].body)

        async def start_ahead() -> None:
            await asyncio.sleep(0.5)
            run = await TaskStore(redis, settings).start(msg, message_id="m", now_ms=now_ms())
            assert isinstance(run, Run) and run.task.task_id == ahead

        starter = asyncio.create_task(start_ahead())
        resp = await second.get(f"/api/tasks/{task_id}/events")
        await starter
        polled = (await second.get(f"/api/tasks/{task_id}/events?after=0-0")).json()
    messages = parse_sse(resp.text)
    queued = [m for m in messages if m.get("event") == "queued"]
    assert [json.loads(m["data"])["position"] for m in queued] == [2, 1]
    assert "id" in queued[0] and "id" not in queued[1]  # the update is not in the stream
    assert polled["position"] == 1
