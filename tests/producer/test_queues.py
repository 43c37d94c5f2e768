"""Monitoring and read-only endpoints: queues, templates, usage, health."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from lib import keys
from lib.clock import now_ms
from lib.redis.port import RedisPort
from lib.routing import QUEUES, all_pools
from lib.tasks.monitor import wait_stats
from tests.support.producer import (
    JOB_MATCH,
    CountingRedis,
    RecordingPublisher,
    build_app,
    client_for,
    make_settings,
)


@pytest.fixture
def app(tmp_path: Path, redis: RedisPort) -> Any:
    return build_app(
        make_settings(tmp_path, queue_max_pending=40, glm_flash_max_workers=4),
        redis,
        RecordingPublisher(),
    )


async def test_queues_snapshot(app: Any, redis: RedisPort) -> None:
    """Waiting, in flight and limit per queue; live leases per pool; recent wait p50/max."""
    now = now_ms()
    async with client_for(app) as client:
        assert (await client.post("/api/tasks", json=JOB_MATCH)).status_code == 202
        # One more task already started on the same queue: counted, no longer waiting.
        await redis.execute("INCR", keys.queue_pending("q_glm_flash"))
        pool = keys.model_pool("glm-4.5-flash", "free")
        await redis.execute("ZADD", pool, now + 30_000, "live", now - 1, "expired")
        await redis.execute("LPUSH", keys.queue_waits("q_glm_flash"), 30, 10, 20, 400)
        resp = await client.get("/api/queues")
    assert resp.status_code == 200
    body = resp.json()
    queues = {q["queue_id"]: q for q in body["queues"]}
    assert set(queues) == set(QUEUES)
    assert queues["q_glm_flash"] == {
        "queue_id": "q_glm_flash",
        "waiting": 1,
        "in_flight": 1,
        "pending": 2,
        "limit": 40,
        "wait": {"p50_ms": 20, "max_ms": 400, "count": 4},
    }
    assert queues["q_deepseek_chat"]["waiting"] == 0
    assert queues["q_deepseek_chat"]["wait"] == {"p50_ms": None, "max_ms": None, "count": 0}
    pools = {(p["model_id"], p["tier"]): p for p in body["pools"]}
    assert set(pools) == set(all_pools())
    assert (
        pools[("glm-4.5-flash", "free")]["active"],
        pools[("glm-4.5-flash", "free")]["limit"],
    ) == (1, 4)
    assert pools[("deepseek-chat", "paid")] == {
        "model_id": "deepseek-chat",
        "tier": "paid",
        "active": 0,
        "limit": 5,
    }


async def test_queues_is_one_round_trip(tmp_path: Path, redis: RedisPort) -> None:
    """The queue snapshot is one pipeline."""
    counting = CountingRedis(redis)
    app = build_app(make_settings(tmp_path), counting, RecordingPublisher())
    async with client_for(app) as client:
        assert (await client.get("/api/queues")).status_code == 200
    assert counting.calls == ["PIPELINE"]


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], {"p50_ms": None, "max_ms": None, "count": 0}),
        ([5], {"p50_ms": 5, "max_ms": 5, "count": 1}),
        ([9, 1, 5, 3], {"p50_ms": 3, "max_ms": 9, "count": 4}),
        ([4, 2, 8], {"p50_ms": 4, "max_ms": 8, "count": 3}),
    ],
)
def test_wait_stats(samples: list[int], expected: dict[str, int | None]) -> None:
    """p50 is the lower median; max and count as given."""
    assert wait_stats(samples) == expected


async def test_templates_catalog(app: Any) -> None:
    """`/api/templates` lists the six templates with their schemas."""
    async with client_for(app) as client:
        resp = await client.get("/api/templates")
    names = [t["name"] for t in resp.json()["templates"]]
    assert resp.status_code == 200 and len(names) == 6 and "job_match" in names


async def test_usage_without_database_503(app: Any) -> None:
    """Without a database, usage is 503 service_unavailable (localized)."""
    async with client_for(app, **{"accept-language": "zh"}) as client:
        resp = await client.get("/api/usage")
    assert resp.status_code == 503
    assert resp.json() == {"error": "service_unavailable", "message": "服务暂时不可用。"}


@pytest.mark.parametrize("days", ["0", "x", "9999"])
async def test_usage_bad_days_422(app: Any, days: str) -> None:
    """`days` must be an integer in range."""
    async with client_for(app) as client:
        resp = await client.get(f"/api/usage?days={days}")
    assert (resp.status_code, resp.json()["error"]) == (422, "invalid_request")


async def test_usage_with_database(tmp_path: Path, redis: RedisPort, postgres_url: str) -> None:
    """With a database the caller gets their own usage rows, never another user's."""
    from lib.db.migrate import migrate
    from lib.usage.store import UsageRecord, append, drain

    await migrate(postgres_url)
    me, other = f"u{uuid.uuid4().hex[:12]}", f"u{uuid.uuid4().hex[:12]}"
    rows = [
        UsageRecord(
            user_id=user,
            service_id="default",
            task_template_id="job_match",
            provider="zhipu",
            model_id="glm-4.5-flash",
            input_tokens=10,
            output_tokens=n,
            total_tokens=10 + n,
            is_success=True,
        )
        for user, n in ((me, 5), (me, 7), (other, 100))
    ]
    await append(redis, rows)
    await drain(redis, postgres_url)
    app = build_app(make_settings(tmp_path, database_url=postgres_url), redis, RecordingPublisher())
    async with client_for(app, user=me) as client:
        resp = await client.get("/api/usage?days=7")
    assert resp.status_code == 200
    body = resp.json()
    assert (body["user_id"], body["days"]) == (me, 7)
    [bucket] = body["usage"]
    assert (bucket["calls"], bucket["output_tokens"]) == (2, 12)
    assert (bucket["model_id"], bucket["task_template_id"]) == ("glm-4.5-flash", "job_match")


async def test_healthz(app: Any) -> None:
    """`/healthz` answers without touching Redis and sets no cookie."""
    async with client_for(app) as client:
        resp = await client.get("/healthz")
    assert resp.json() == {"ok": True} and "set-cookie" not in resp.headers
