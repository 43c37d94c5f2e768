"""The service event stream: one read over the service's streams, resumable from any event."""

from __future__ import annotations

import json

import pytest

from lib import keys
from lib.errors import InvalidRequest
from lib.redis.port import RedisPort
from lib.services.events import ServiceReader, parse_cursor

USER, SERVICE = "u1", "s1"


async def add(redis: RedisPort, key: str, kind: str, data: object) -> None:
    await redis.execute("XADD", key, "*", "type", kind, "data", json.dumps(data))


async def story(redis: RedisPort) -> None:
    """A small service: status, two summaries announced and streaming, then done."""
    svc = keys.service_events(USER, SERVICE)
    t1, t2 = (keys.events(USER, SERVICE, t) for t in ("t1", "t2"))
    await add(redis, svc, "service", {"status": "running"})
    await add(redis, t1, "queued", {"position": 1})
    await add(redis, svc, "step", {"step": "resume_summary", "task_id": "t1"})
    await add(redis, t2, "queued", {"position": 2})
    await add(redis, svc, "step", {"step": "job_summary", "task_id": "t2"})
    await add(redis, t1, "started", {"model": "m"})
    await add(redis, t2, "started", {"model": "m"})
    await add(redis, t1, "result", {"summary": "one"})
    await add(redis, t2, "result", {"jobTitle": "two"})
    await add(redis, svc, "service", {"status": "done"})


async def read_all(redis: RedisPort, cursor: str | None) -> list[tuple[str, str, object]]:
    reader = ServiceReader(redis, USER, SERVICE)
    await reader.open(cursor)
    out: list[tuple[str, str, object]] = []
    while True:
        batch = await reader.read(block_ms=None)
        if not batch:
            return out
        out += [(e.id, e.type, e.data) for e in batch]


async def test_the_stream_follows_announced_tasks_and_ends_once(redis: RedisPort) -> None:
    """Every event of the service and its tasks arrives once; task data names its step."""
    await story(redis)
    events = await read_all(redis, None)
    kinds = [k for _, k, _ in events]
    assert kinds.count("result") == 2 and kinds.count("started") == 2 and kinds.count("queued") == 2
    assert kinds[-1] == "service" and events[-1][2] == {"status": "done"}
    results = [d for _, k, d in events if k == "result"]
    assert {"step": "resume_summary", "task_id": "t1", "data": {"summary": "one"}} in results


async def test_resuming_from_any_event_loses_and_repeats_nothing(redis: RedisPort) -> None:
    """From each event's id, the rest of the stream is exactly what followed it."""
    await story(redis)
    events = await read_all(redis, None)
    assert len(events) == 10
    for i, (cursor, _, _) in enumerate(events):
        rest = await read_all(redis, cursor)
        assert [(k, d) for _, k, d in rest] == [(k, d) for _, k, d in events[i + 1 :]], i


async def test_a_long_task_stream_is_read_before_the_service_ends(redis: RedisPort) -> None:
    """More tokens than one read takes: the final service event still comes last."""
    svc, t1 = keys.service_events(USER, SERVICE), keys.events(USER, SERVICE, "t1")
    await add(redis, svc, "step", {"step": "job_match", "task_id": "t1"})
    for i in range(450):
        await add(redis, t1, "token", {"text": f"{i},"})
    await add(redis, svc, "service", {"status": "done"})
    events = await read_all(redis, None)
    assert [k for _, k, _ in events].count("token") == 450
    assert events[-1][1] == "service"


@pytest.mark.parametrize("bad", ["x", "1-0.", "1-0.99999999999999999999-0", "1-0.2-0.3-0"])
async def test_a_bad_cursor_is_422(redis: RedisPort, bad: str) -> None:
    """Not a cursor of this service's stream: invalid_request (event_id)."""
    await story(redis)
    with pytest.raises(InvalidRequest):
        parse_cursor(bad)
        reader = ServiceReader(redis, USER, SERVICE)
        await reader.open(bad)


async def test_a_waiting_step_hears_its_position_move_up(redis: RedisPort) -> None:
    """While a step's task waits, `moved()` tells its new place (no id: not in a stream)."""
    svc, t1 = keys.service_events(USER, SERVICE), keys.events(USER, SERVICE, "t1")
    waiting = keys.queue_waiting("q_glm_flash")
    await redis.execute("ZADD", waiting, 1, "ahead", 2, "t1")
    await redis.execute("HSET", keys.task("t1"), "queue", "q_glm_flash")
    await add(redis, svc, "step", {"step": "job_match", "task_id": "t1"})
    await add(redis, t1, "queued", {"position": 2})
    reader = ServiceReader(redis, USER, SERVICE)
    await reader.open(None)
    await reader.read(block_ms=None)
    assert reader.waiting and await reader.moved() == []  # still 2nd
    await redis.execute("ZREM", waiting, "ahead")  # the task ahead started
    [update] = await reader.moved()
    assert (update.id, update.type, update.data) == (
        "",
        "queued",
        {"step": "job_match", "task_id": "t1", "data": {"position": 1}},
    )
    await add(redis, t1, "started", {"model": "m"})
    await reader.read(block_ms=None)
    assert not reader.waiting
