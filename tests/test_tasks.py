"""The task lifecycle scripts on a real server, on every Redis adapter."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from lib import keys
from lib.errors import NotFound, QueueFull, RateLimited, TaskAlreadyRunning, TaskNotCancellable
from lib.messages import TaskMessage
from lib.redisport import RedisPort, pairs_to_dict
from lib.routing import route
from lib.settings import Settings
from lib.tasks import Admission, Admitted, Outcome, TaskStore, waiting_score

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
    r = admitted.route
    return TaskMessage(
        task_id=a.task_id,
        user_id=a.user_id,
        service_id=a.service_id,
        template=r.template,
        lang="en",
        variables={},
        tier=r.tier,
        modality=r.modality,
        mode=r.mode,
        queue_id=r.queue_id,
        models=r.models,
    )


async def leftovers(redis: RedisPort) -> list[str]:
    """Counters, locks, waiting entries and leases still held (records and history excluded)."""
    found = await redis.execute("KEYS", "*")
    kept = ("task:", "cs:events:", "usage:", "rate:", "idem:", "quota:")
    held = [k for k in found if not k.startswith(kept) and not k.endswith(":waits")]
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


async def test_slot_pool_limit_and_release(redis: RedisPort) -> None:
    """With 2 slots, 2 tasks run, the 3rd waits with Retry-After; a finish lets it start."""
    store = TaskStore(redis, settings())
    runs = []
    for offset, user in enumerate(("a", "b", "c")):
        a = admission(user=user, now=NOW + offset)
        runs.append((a, await store.admit(a)))
    decisions = [
        await store.start(message(a, g), message_id=f"m{i}", now_ms=NOW)
        for i, (a, g) in enumerate(runs)
    ]
    assert [d.action for d in decisions] == ["run", "run", "wait"]
    assert decisions[2].retry_after == 2 and decisions[2].reason == "slots"
    assert await redis.execute("ZCARD", keys.model_pool("glm-4.5-flash", "free")) == 2
    a0, g0 = runs[0]
    assert await store.finish(message(a0, g0), decisions[0], Outcome("done"), NOW + 5) == 1
    third = await store.start(message(*runs[2]), message_id="m2", now_ms=NOW + 6)
    assert third.action == "run" and third.model == "glm-4.5-flash"


async def test_only_head_of_waiting_order_starts(redis: RedisPort) -> None:
    """A later task cannot take the last slot ahead of an earlier one; priority jumps FIFO."""
    store = TaskStore(redis, settings(glm_flash_max_workers=1))
    first, second = admission(user="a"), admission(user="b", now=NOW + 1)
    g1 = await store.admit(first)
    g2 = await store.admit(second)
    urgent = admission(user="c", priority=5, now=NOW + 10)
    g3 = await store.admit(urgent)
    assert g3.position == 1  # priority first
    assert (await store.start(message(second, g2), message_id="x", now_ms=NOW)).action == "wait"
    assert (await store.start(message(first, g1), message_id="x", now_ms=NOW)).action == "wait"
    assert (await store.start(message(urgent, g3), message_id="x", now_ms=NOW)).action == "run"


async def test_paid_falls_back_to_next_model_when_full(redis: RedisPort) -> None:
    """Paid text takes glm-4.5 when the DeepSeek pool is full."""
    store = TaskStore(redis, settings(deepseek_max_workers=1))
    started = []
    for offset, user in enumerate(("a", "b")):
        await redis.execute("SET", keys.quota(user), 5)
        a = admission(user=user, now=NOW + offset)
        g = await store.admit(a)
        started.append(await store.start(message(a, g), message_id="m", now_ms=NOW))
    assert [d.model for d in started] == ["deepseek-chat", "glm-4.5"]
    assert started[1].pool == keys.model_pool("glm-4.5", "paid")


async def test_finish_is_idempotent_and_refunds_on_failure(redis: RedisPort) -> None:
    """Failure refunds the debit; a second finish changes nothing; counters return to zero."""
    store = TaskStore(redis, settings())
    await redis.execute("SET", keys.quota("u1"), 1)
    a = admission()
    g = await store.admit(a)
    msg = message(a, g)
    d = await store.start(msg, message_id="m", now_ms=NOW)
    failed = Outcome("failed", error_code="llm_error", error_message="boom")
    assert await store.finish(msg, d, failed, NOW + 1) == 1
    assert await store.finish(msg, d, failed, NOW + 2) == 0
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    assert await leftovers(redis) == []
    view = await store.get(a.task_id, "u1")
    assert view.status == "failed" and view.error == {"code": "llm_error", "message": "boom"}
    again = await store.start(msg, message_id="m", now_ms=NOW + 3)
    assert (again.action, again.reason) == ("skip", "failed")


async def test_crashed_attempt_lease_expires_and_redelivery_restarts(redis: RedisPort) -> None:
    """A live lease makes a duplicate wait; once expired, the redelivery restarts the task."""
    s = settings(lease_ms=1000)
    store = TaskStore(redis, s)
    a = admission()
    g = await store.admit(a)
    msg = message(a, g)
    first = await store.start(msg, message_id="m", now_ms=NOW)
    dup = await store.start(msg, message_id="m", now_ms=NOW + 500)
    assert (dup.action, dup.reason) == ("wait", "busy")
    assert await store.renew(msg, first, NOW + 900) is True
    second = await store.start(msg, message_id="m", now_ms=NOW + 2000)  # lease expired at 1900
    assert second.action == "run" and second.restarted and second.attempt == 2
    assert await store.renew(msg, first, NOW + 2100) is False  # the old attempt must stop
    assert await store.finish(msg, first, Outcome("failed"), NOW + 2200) == -1
    assert await store.finish(msg, second, Outcome("done", result={"ok": 1}), NOW + 3000) == 1
    view = await store.get(a.task_id, "u1")
    assert (view.status, view.attempts, view.result) == ("done", 2, {"ok": 1})
    events = await redis.execute("XRANGE", keys.events("u1", "svc", a.task_id), "-", "+")
    types = [pairs_to_dict(e[1])["type"] for e in events]
    assert types == ["queued", "started", "restart", "started", "result", "done"]
    assert await leftovers(redis) == []


async def test_cancel_before_start_leaves_nothing(redis: RedisPort) -> None:
    """Cancel refunds, unlocks and unqueues; the late delivery is skipped without running."""
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
    assert (late.action, late.reason) == ("skip", "cancelled")
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
    await store.start(message(a, g), message_id="m", now_ms=NOW)
    with pytest.raises(TaskNotCancellable):
        await store.cancel(a.task_id, "u1", NOW)
    assert (await store.get(a.task_id, "u1")).status == "running"


async def test_queue_wait_times_recorded(redis: RedisPort) -> None:
    """Starting records the wait time on the task and in the queue's recent waits."""
    store = TaskStore(redis, settings())
    a = admission()
    g = await store.admit(a)
    await store.start(message(a, g), message_id="m", now_ms=NOW + 250)
    assert await redis.execute("LRANGE", keys.queue_waits("q_glm_flash"), 0, -1) == ["250"]
    assert (await store.get(a.task_id, "u1")).wait_ms == 250


def test_waiting_score_orders_priority_then_fifo() -> None:
    """Higher priority sorts first; equal priority keeps arrival order."""
    assert waiting_score(5, NOW + 10) < waiting_score(0, NOW)
    assert waiting_score(0, NOW) < waiting_score(0, NOW + 1)
    assert waiting_score(99, NOW) == waiting_score(9, NOW)
