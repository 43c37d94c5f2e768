"""The task lifecycle scripts on a real server, on every Redis adapter."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from lib import keys
from lib.errors import NotFound, QueueFull, RateLimited, TaskAlreadyRunning, TaskNotCancellable
from lib.redis.port import RedisPort, pairs_to_dict
from lib.routing import route
from lib.settings import Settings
from lib.tasks.admission import Admission, Admitted, waiting_score
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome, Run, Skip
from lib.tasks.store import TaskStore

NOW = 1_800_000_000_000


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"glm_flash_max_workers": 2, "deepseek_max_workers": 5}
    base.update(overrides)
    return Settings(**base)


def admission(
    user: str = "u1",
    template: str = "job_match",
    *,
    kind: str = "user",
    priority: int = 0,
    digest: str | None = None,
    now: int = NOW,
    image: bool = False,
) -> Admission:
    return Admission(
        task_id=uuid.uuid4().hex,
        user_id=user,
        user_kind=kind,  # type: ignore[arg-type]
        service_id="svc",
        template=template,
        lang="en",
        priority=priority,
        idem_digest=digest or uuid.uuid4().hex,
        paid=route(template, "paid", image),  # type: ignore[arg-type]
        free=route(template, "free", image),  # type: ignore[arg-type]
        now_ms=now,
    )


def message(a: Admission, admitted: Admitted) -> TaskMessage:
    """The message the producer publishes for an admitted task."""
    return TaskMessage.build(a.spec(), admitted.route)


async def run(store: TaskStore, a: Admission, g: Admitted, now: int = NOW) -> Run:
    """Deliver the task's own message and expect it to start that task."""
    started = await store.start(message(a, g), message_id=f"m-{a.task_id}", now_ms=now)
    assert isinstance(started, Run) and started.task.task_id == a.task_id, started
    return started


async def leftovers(redis: RedisPort) -> list[str]:
    """Counters, locks, waiting entries and leases still held (records and history excluded)."""
    found = await redis.execute("KEYS", "*")
    kept = ("task:", "cs:events:", "usage:", "rate:", "idem:", "quota:")
    held = [k for k in found if not k.startswith(kept) and not k.endswith((":waits", ":runs"))]
    return sorted(held)


async def test_admit_registers_task_position_and_queued_event(redis: RedisPort) -> None:
    """A free user's task lands on the free queue with position 1 and a `queued` event."""
    store = TaskStore(redis, settings())
    a = admission()
    got = await store.admit(a)
    assert (got.tier, got.route.queue_id, got.position, got.existing) == (
        "free",
        "q_glm_flash",
        1,
        False,
    )
    assert await redis.execute("GET", keys.queue_pending("q_glm_flash")) == "1"
    assert await redis.execute("GET", keys.user_lock("u1", "job_match")) == a.task_id
    events = await redis.execute("XRANGE", keys.events("u1", "svc", a.task_id), "-", "+")
    assert [pairs_to_dict(e[1])["type"] for e in events] == ["queued"]
    assert json.loads(pairs_to_dict(events[0][1])["data"]) == {"position": 1}


async def test_quota_makes_paid_and_debits_once(redis: RedisPort) -> None:
    """Enough balance → paid tier on DeepSeek, debited atomically by the task cost."""
    store = TaskStore(redis, settings(paid_task_cost=2))
    await redis.execute("SET", keys.quota("u1"), 3)
    got = await store.admit(admission())
    assert (got.tier, got.route.model_id) == ("paid", "deepseek-chat")
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    got2 = await store.admit(admission(template="interview_prep"))
    assert got2.tier == "free"  # 1 left < cost 2
    assert await redis.execute("GET", keys.quota("u1")) == "1"


@pytest.mark.parametrize(("kind", "limit"), [("trial", 3), ("user", 15)])
async def test_rate_limit_exact_numbers(redis: RedisPort, kind: str, limit: int) -> None:
    """Trial users get 3 tasks per 5 min, signed-in users 15; the next one is 429 with a wait."""
    store = TaskStore(redis, settings(queue_max_pending=100))
    templates = ["resume_summary", "job_summary", "job_match", "resume_customize"]
    for i in range(limit):
        user_tpl = templates[i % len(templates)]
        a = admission(kind=kind, template=user_tpl, now=NOW + i)
        got = await store.admit(a)
        await store.finish(message(a, got), None, Outcome("done"), NOW + i)
    with pytest.raises(RateLimited) as err:
        await store.admit(admission(kind=kind, template="interview_prep", now=NOW + 1000))
    assert err.value.retry_after == 300 - 1  # oldest entry expires 299 s after this attempt
    # once the window has passed, the user may submit again
    later = await store.admit(admission(kind=kind, template="interview_prep", now=NOW + 300_001))
    assert later.position == 1


async def test_idempotent_resubmit_returns_existing_task(redis: RedisPort) -> None:
    """The same request digest returns the first task; nothing is counted twice."""
    store = TaskStore(redis, settings())
    first = await store.admit(admission(digest="same"))
    again = await store.admit(admission(digest="same"))
    assert again.existing and again.task_id == first.task_id and again.position == 1
    assert await redis.execute("GET", keys.queue_pending("q_glm_flash")) == "1"
    assert await redis.execute("ZCARD", keys.rate("u1", "tasks")) == 1


async def test_user_lock_409_until_finished(redis: RedisPort) -> None:
    """A second task of the same kind is refused while the first runs; allowed after finish."""
    store = TaskStore(redis, settings())
    a = admission()
    got = await store.admit(a)
    with pytest.raises(TaskAlreadyRunning):
        await store.admit(admission())
    other_kind = await store.admit(admission(template="interview_prep", now=NOW + 1))
    assert other_kind.position == 2
    await store.finish(message(a, got), None, Outcome("done"), NOW)
    assert (await store.admit(admission(now=NOW + 2))).position == 2


async def test_queue_full_writes_nothing(redis: RedisPort) -> None:
    """Over the backpressure limit: 429 queue_full, no debit, no lock, no count, no event."""
    store = TaskStore(redis, settings(queue_max_pending=1, paid_task_cost=1))
    await store.admit(admission(user="a"))
    await redis.execute("SET", keys.quota("b"), 0)
    before = await redis.execute("DBSIZE")
    b = admission(user="b")
    with pytest.raises(QueueFull) as err:
        await store.admit(b)
    assert err.value.retry_after == 5
    assert await redis.execute("DBSIZE") == before
    assert await redis.execute("GET", keys.queue_pending("q_glm_flash")) == "1"
    assert await redis.execute("EXISTS", keys.user_lock("b", "job_match")) == 0


async def test_abort_undoes_everything(redis: RedisPort) -> None:
    """A failed publish refunds, unlocks, unqueues and forgets the task and its rate slot."""
    store = TaskStore(redis, settings())
    await redis.execute("SET", keys.quota("u1"), 1)
    a = admission()
    got = await store.admit(a)
    assert got.tier == "paid"
    assert await store.abort(a, got) is True
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    assert await leftovers(redis) == []
    assert await redis.execute("EXISTS", keys.task(a.task_id)) == 0
    assert await redis.execute("EXISTS", keys.idem(a.idem_digest)) == 0
    assert await redis.execute("ZCARD", keys.rate("u1", "tasks")) == 0


async def test_finish_is_idempotent_and_refunds_on_failure(redis: RedisPort) -> None:
    """Failure refunds the debit; a second finish changes nothing; counters return to zero."""
    store = TaskStore(redis, settings())
    await redis.execute("SET", keys.quota("u1"), 1)
    a = admission()
    g = await store.admit(a)
    msg = message(a, g)
    d = await run(store, a, g)
    failed = Outcome("failed", error_code="llm_error", error_message="boom")
    assert await store.finish(msg, d, failed, NOW + 1) == "finished"
    assert await store.finish(msg, d, failed, NOW + 2) == "ended"
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    assert await leftovers(redis) == []
    view = await store.get(a.task_id, "u1")
    assert view.status == "failed" and view.error == {"code": "llm_error", "message": "boom"}
    again = await store.start(msg, message_id=f"m-{a.task_id}", now_ms=NOW + 3)
    assert again == Skip("no_work")  # a redelivery finds nothing waiting: the ticket is spent


async def test_cancel_before_start_leaves_nothing(redis: RedisPort) -> None:
    """Cancel refunds, unlocks and unqueues; the late delivery finds nothing to run."""
    store = TaskStore(redis, settings())
    await redis.execute("SET", keys.quota("u1"), 1)
    a = admission()
    g = await store.admit(a)
    view = await store.cancel(a.task_id, "u1", NOW + 1)
    assert view.status == "cancelled"
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    assert await leftovers(redis) == []
    assert await redis.execute("EXISTS", keys.idem(a.idem_digest)) == 0
    late = await store.start(message(a, g), message_id="m", now_ms=NOW + 2)
    assert late == Skip("no_work")
    with pytest.raises(TaskNotCancellable):
        await store.cancel(a.task_id, "u1", NOW + 3)


async def test_cancel_after_start_and_by_others_refused(redis: RedisPort) -> None:
    """A started task cannot be cancelled (409); another user gets 404 and changes nothing."""
    store = TaskStore(redis, settings())
    a = admission()
    g = await store.admit(a)
    with pytest.raises(NotFound):
        await store.cancel(a.task_id, "intruder", NOW)
    with pytest.raises(NotFound):
        await store.get(a.task_id, "intruder")
    await run(store, a, g)
    with pytest.raises(TaskNotCancellable):
        await store.cancel(a.task_id, "u1", NOW)
    assert (await store.get(a.task_id, "u1")).status == "running"


async def test_queue_wait_times_recorded(redis: RedisPort) -> None:
    """Starting records the wait time on the task and in the queue's recent waits."""
    store = TaskStore(redis, settings())
    a = admission()
    g = await store.admit(a)
    await run(store, a, g, NOW + 250)
    assert await redis.execute("LRANGE", keys.queue_waits("q_glm_flash"), 0, -1) == ["250"]
    assert (await store.get(a.task_id, "u1")).wait_ms == 250


def test_waiting_score_orders_priority_then_fifo() -> None:
    """Higher priority sorts first; equal priority keeps arrival order."""
    assert waiting_score(5, NOW + 10) < waiting_score(0, NOW)
    assert waiting_score(0, NOW) < waiting_score(0, NOW + 1)
    assert waiting_score(99, NOW) == waiting_score(9, NOW)


async def test_a_task_that_must_wait_gets_one_backpressure_event(redis: RedisPort) -> None:
    """Admission tells a task it will wait (position, slots, expected wait) once, up front."""
    store = TaskStore(redis, settings(glm_flash_max_workers=1))
    first = admission(user="a")
    g1 = await store.admit(first)
    assert g1.expected_wait_s is None  # a free slot: it starts at once, no event
    r1 = await run(store, first, g1)
    await store.finish(message(first, g1), r1, Outcome("done"), NOW + 4_000)  # ran 4 s
    second, third = admission(user="b", now=NOW + 5_000), admission(user="c", now=NOW + 5_001)
    g2 = await store.admit(second)
    await run(store, second, g2, NOW + 5_002)  # holds the only slot
    g3 = await store.admit(third)
    assert (g3.position, g3.expected_wait_s) == (1, 4)
    entries = await redis.execute("XRANGE", keys.events("c", "svc", third.task_id), "-", "+")
    assert [pairs_to_dict(e[1])["type"] for e in entries] == ["queued", "backpressure"]
    data = json.loads(pairs_to_dict(entries[1][1])["data"])
    assert data == {"position": 1, "slots": 1, "expected_wait_s": 4}
