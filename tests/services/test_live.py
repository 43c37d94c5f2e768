"""A service's live state in Redis: admission, transitions recorded by finish, close."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from lib import keys
from lib.errors import RateLimited, TooManyPendingServices
from lib.redis.port import RedisPort, pairs_to_dict
from lib.routing import route
from lib.services.live import ServiceAdmission, ServiceLive
from lib.settings import Settings
from lib.tasks.admission import Admission
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome, Run
from lib.tasks.store import TaskStore

NOW = 1_800_000_000_000


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"service_costs": {"a": 1, "b": 2, "c": 3}, "glm_flash_max_workers": 5}
    values.update(overrides)
    return Settings(**values)


def service(
    user: str = "u1", *, depth: str = "a", digest: str = "", run: int = 2
) -> ServiceAdmission:
    return ServiceAdmission(
        service_id=uuid.uuid4().hex,
        user_id=user,
        user_kind="user",
        depth=depth,
        lang="en",
        idem_digest=digest or uuid.uuid4().hex,
        summaries_to_run=run,
        now_ms=NOW,
    )


_clock = [NOW]


async def step_task(
    store: TaskStore, live_id: str, user: str, step: str, tier: str = "free"
) -> TaskMessage:
    """Admit a service step's task on the service's tier, as the orchestrator does."""
    template = step
    _clock[0] += 1  # admitted one after the other: the waiting order is theirs
    a = Admission(
        task_id=uuid.uuid4().hex,
        user_id=user,
        user_kind="user",
        service_id=live_id,
        template=template,
        lang="en",
        priority=0,
        idem_digest=uuid.uuid4().hex,
        paid=route(template, "paid"),  # type: ignore[arg-type]
        free=route(template, "free"),  # type: ignore[arg-type]
        now_ms=_clock[0],
        forced_tier=tier,  # type: ignore[arg-type]
        step=step,
    )
    got = await store.admit(a)
    return TaskMessage.build(a.spec(), got.route)


async def run_to_end(store: TaskStore, msg: TaskMessage, status: str = "done") -> None:
    started = await store.start(msg, message_id=f"m-{msg.task_id}", now_ms=NOW)
    assert isinstance(started, Run) and started.task.task_id == msg.task_id
    outcome = Outcome(status, result={"ok": 1}) if status == "done" else Outcome(status)  # type: ignore[arg-type]
    assert await store.finish(msg, started, outcome, NOW + 1) == "finished"


async def test_a_paid_service_is_debited_once_and_its_tasks_are_not(redis: RedisPort) -> None:
    """The depth's cost is debited at admission; the service's tasks run paid, uncharged."""
    s = settings()
    live, store = ServiceLive(redis, s), TaskStore(redis, s)
    await redis.execute("SET", keys.quota("u1"), 5)
    got = await live.admit(service(depth="c"))
    assert (got.tier, got.cost, got.existing) == ("paid", 3, False)
    assert await redis.execute("GET", keys.quota("u1")) == "2"
    msg = await step_task(store, got.service_id, "u1", "resume_summary", "paid")
    assert msg.tier == "paid" and msg.models[0] == "deepseek-chat"
    assert await redis.execute("GET", keys.quota("u1")) == "2"
    assert await redis.execute("ZCARD", keys.rate("u1", "tasks")) == 0  # the create counted
    assert await redis.execute("ZCARD", keys.rate("u1", "services")) == 1


async def test_idempotent_then_pending_limit_then_rate_limit(redis: RedisPort) -> None:
    """The same request returns the same service; a 4th pending one is refused (429)."""
    live = ServiceLive(redis, settings(rate_user_limit=4))
    first = await live.admit(service(digest="same"))
    again = await live.admit(service(digest="same"))
    assert again.existing and again.service_id == first.service_id
    await live.admit(service())
    await live.admit(service())
    with pytest.raises(TooManyPendingServices) as err:
        await live.admit(service())
    assert err.value.params["max_pending"] == 3
    # Closing one frees a place; the rate window (4 creates) is what refuses the next.
    state = await live.get(first.service_id)
    assert state is not None
    assert (await live.close(state, "done", NOW + 5))[0] is True
    await live.admit(service())
    with pytest.raises(RateLimited):
        await live.admit(service())


async def test_summaries_done_advance_exactly_once(redis: RedisPort) -> None:
    """The last summary's finish records the advance once, in the due set until confirmed."""
    s = settings()
    live, store = ServiceLive(redis, s), TaskStore(redis, s)
    got = await live.admit(service(run=2))
    first = await step_task(store, got.service_id, "u1", "resume_summary")
    second = await step_task(store, got.service_id, "u1", "job_summary")
    await run_to_end(store, first)
    assert (await live.get(got.service_id)).stage == "summaries"  # type: ignore[union-attr]
    await run_to_end(store, second)
    state = await live.get(got.service_id)
    assert state is not None and (state.stage, state.left) == ("advancing", 0)
    assert await live.due(older_than_ms=NOW + 10) == [got.service_id]
    # A repeated finish (a redelivery) records nothing more.
    assert await store.finish(second, None, Outcome("done"), NOW + 2) == "ended"
    assert await live.advance(got.service_id, 3) == 1
    assert await live.advance(got.service_id, 3) == 0  # a repeat keeps the count
    await live.confirm(got.service_id)
    assert await live.due(older_than_ms=NOW + 10) == []
    state = await live.get(got.service_id)
    assert state is not None and (state.stage, state.left) == ("steps", 3)


async def test_a_failed_or_cancelled_step_fails_the_service_and_close_refunds(
    redis: RedisPort,
) -> None:
    """The first step that does not end done records the fail; close refunds once."""
    s = settings()
    live, store = ServiceLive(redis, s), TaskStore(redis, s)
    await redis.execute("SET", keys.quota("u1"), 1)
    got = await live.admit(service(run=2))
    assert got.tier == "paid"
    first = await step_task(store, got.service_id, "u1", "resume_summary", "paid")
    second = await step_task(store, got.service_id, "u1", "job_summary", "paid")
    await store.cancel(second.task_id, "u1", NOW + 1)
    await run_to_end(store, first, "failed")
    state = await live.get(got.service_id)
    assert state is not None
    assert (state.stage, state.error_step, state.error_code) == (
        "failing",
        "job_summary",
        "cancelled",
    )
    assert await live.close(state, "error", NOW + 3, "cancelled") == (True, 1)
    assert await live.close(state, "error", NOW + 4, "cancelled") == (False, 0)
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    assert await redis.execute("ZCARD", keys.services_pending("u1")) == 0
    events = await redis.execute("XRANGE", keys.service_events("u1", got.service_id), "-", "+")
    last = pairs_to_dict(events[-1][1])
    assert last["type"] == "service" and json.loads(last["data"])["status"] == "error"


async def test_a_cached_step_is_announced_with_its_result_once(redis: RedisPort) -> None:
    """A step answered from the cache is recorded done and its result reaches the readers."""
    live = ServiceLive(redis, settings())
    got = await live.admit(service(run=1))
    state = await live.get(got.service_id)
    assert state is not None
    cached = '{"summary":"x"}'
    assert await live.announce(state, "resume_summary", "", cached_result=cached, now_ms=NOW)
    assert not await live.announce(state, "resume_summary", "", cached_result=cached, now_ms=NOW)
    after = await live.get(got.service_id)
    assert after is not None and (after.stage, after.left) == ("advancing", 0)  # the only one
    entries = await redis.execute("XRANGE", keys.service_events("u1", got.service_id), "-", "+")
    types = [pairs_to_dict(e[1])["type"] for e in entries]
    assert types == ["service", "step", "result"]
    result = json.loads(pairs_to_dict(entries[-1][1])["data"])
    assert result == {"step": "resume_summary", "task_id": None, "data": {"summary": "x"}}
