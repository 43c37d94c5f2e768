"""Deliveries as tickets (start.lua): slots, start order, redeliveries, takeovers, lost tickets."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from lib import keys
from lib.redis.port import Arg, KeyedEntry, RedisPort, StreamEntry, pairs_to_dict
from lib.settings import Settings
from lib.tasks.admission import Admission, Admitted
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome, Run, Skip, Start, TicketLoss, Wait
from lib.tasks.store import TaskStore
from tests.tasks.test_store import NOW, admission, leftovers, message, run, settings


@dataclass
class Queue:
    """Admitted tasks and their messages, delivered by hand (QStash's role)."""

    store: TaskStore
    tasks: list[tuple[Admission, Admitted]] = field(default_factory=list)

    async def admit(self, n: int, *, priorities: list[int] | None = None, at: int = NOW) -> None:
        for i in range(n):
            prio = (priorities or [0] * n)[i]
            a = admission(user=f"u{len(self.tasks)}", now=at + len(self.tasks), priority=prio)
            self.tasks.append((a, await self.store.admit(a)))

    def ticket(self, i: int) -> TaskMessage:
        return message(*self.tasks[i])

    def id(self, i: int) -> str:
        return self.tasks[i][0].task_id

    async def deliver(self, i: int, now: int = NOW, *, mid: str | None = None) -> Start:
        """Deliver task i's own message (id `m{i}` unless told otherwise)."""
        return await self.store.start(self.ticket(i), message_id=mid or f"m{i}", now_ms=now)

    async def finish(
        self, i: int, r: Run, now: int, status: Literal["done", "failed", "lost"] = "done"
    ) -> str:
        """End the run that task i's message started."""
        return await self.store.finish(
            r.task,
            r,
            Outcome(status),
            now,
            ticket=self.ticket(i),
            message_id=f"m{i}",
        )


def started(result: Start) -> str:
    assert isinstance(result, Run), result
    return result.task.task_id


async def types(redis: RedisPort, a: Admission) -> list[str]:
    entries = await redis.execute("XRANGE", keys.events(a.user_id, "svc", a.task_id), "-", "+")
    return [pairs_to_dict(e[1])["type"] for e in entries]


async def test_slots_bound_concurrency_and_a_full_pool_says_when_a_lease_ends(
    redis: RedisPort,
) -> None:
    """With 2 slots, 2 run; the 3rd waits until the earliest lease can end; finish frees one."""
    q = Queue(TaskStore(redis, settings(lease_ms=30_000)))
    await q.admit(3)
    r0 = await q.deliver(0)
    await q.deliver(1, NOW + 4000)
    assert await q.deliver(2, NOW + 5000) == Wait("slots", retry_after=25)  # r0 ends at +30 s
    assert await redis.execute("ZCARD", keys.model_pool("glm-4.5-flash", "free")) == 2
    assert isinstance(r0, Run)
    assert await q.finish(0, r0, NOW + 6000) == "finished"
    third = await q.deliver(2, NOW + 6001)
    assert started(third) == q.id(2) and isinstance(third, Run)
    assert third.model == "glm-4.5-flash"


async def test_a_delivery_starts_the_head_of_its_queue_whatever_the_order(
    redis: RedisPort,
) -> None:
    """Deliveries arriving in reverse order start tasks in waiting order (priority, then FIFO)."""
    q = Queue(TaskStore(redis, settings(glm_flash_max_workers=1)))
    await q.admit(3, priorities=[0, 0, 5])
    assert q.tasks[2][1].position == 1  # priority first
    first = await q.deliver(1)  # the second task's message arrives first...
    assert started(first) == q.id(2)  # ...and starts the head: the urgent task
    assert isinstance(first, Run) and first.task == q.ticket(2)  # rebuilt from its spec
    assert await q.deliver(0) == Wait("slots", retry_after=30)
    await q.finish(1, first, NOW + 1)
    second = await q.deliver(0, NOW + 2)
    assert started(second) == q.id(0) and isinstance(second, Run)
    await q.finish(0, second, NOW + 3)
    # The urgent task's own message is still a ticket: it serves the last waiting task.
    third = await q.deliver(2, NOW + 4)
    assert started(third) == q.id(1) and isinstance(third, Run)
    await q.finish(2, third, NOW + 5)
    # The first message's redelivery (a duplicate) finds nothing waiting: it is spent.
    assert await q.deliver(1, NOW + 6) == Skip("no_work")
    assert await leftovers(redis) == []


async def test_paid_falls_back_to_next_model_when_full(redis: RedisPort) -> None:
    """Paid text takes glm-4.5 when the DeepSeek pool is full."""
    store = TaskStore(redis, settings(deepseek_max_workers=1))
    runs = []
    for offset, user in enumerate(("a", "b")):
        await redis.execute("SET", keys.quota(user), 5)
        a = admission(user=user, now=NOW + offset)
        runs.append(await run(store, a, await store.admit(a)))
    assert [r.model for r in runs] == ["deepseek-chat", "glm-4.5"]
    assert runs[1].pool == keys.model_pool("glm-4.5", "paid")


async def test_redelivery_waits_exactly_the_remaining_lease_then_takes_over(
    redis: RedisPort,
) -> None:
    """A redelivery of a live attempt waits what the lease has left; after it, it restarts."""
    q = Queue(TaskStore(redis, settings(lease_ms=10_000)))
    await q.admit(1)
    first = await q.deliver(0)
    assert isinstance(first, Run)
    assert await q.deliver(0, NOW + 3_500) == Wait("busy", retry_after=7)
    assert await q.store.renew(first, NOW + 5_000) is True  # lease now ends at +15 s
    assert await q.deliver(0, NOW + 14_200) == Wait("busy", retry_after=1)
    second = await q.deliver(0, NOW + 15_001)
    assert isinstance(second, Run) and second.restarted and second.attempt == 2
    assert await q.store.renew(first, NOW + 15_100) is False  # the old attempt must stop
    assert await q.finish(0, first, NOW + 15_200, "failed") == "superseded"
    assert await q.finish(0, second, NOW + 16_000) == "finished"
    view = await q.store.get(q.id(0), "u0")
    assert (view.status, view.attempts, view.bounces) == ("done", 2, 2)
    assert await types(redis, q.tasks[0][0]) == [
        "queued",
        "started",
        "restart",
        "started",
        "done",
    ]
    assert await leftovers(redis) == []


async def test_a_dead_attempt_gets_its_usage_row_with_what_it_streamed(redis: RedisPort) -> None:
    """A takeover closes the dead attempt's row: model, tokens streamed, success false, lost."""
    q = Queue(TaskStore(redis, settings(lease_ms=1000)))
    await q.admit(1)
    first = await q.deliver(0)
    assert isinstance(first, Run)
    stream = keys.events("u0", "svc", q.id(0))
    await redis.execute("XADD", stream, "*", "type", "token", "data", '{"text":"ab"}', "n", 2)
    await redis.execute("XADD", stream, "*", "type", "token", "data", '{"text":"cd"}', "n", 7)
    assert isinstance(await q.deliver(0, NOW + 1500), Run)
    entries = await redis.execute("XRANGE", keys.usage_stream(), "-", "+")
    [row] = json.loads(pairs_to_dict(entries[0][1])["rows"])
    assert row["model_id"] == "glm-4.5-flash" and row["provider"] == "zhipu"
    assert (row["output_tokens"], row["is_success"], row["is_stream"]) == (7, False, True)
    assert row["error_message"].startswith("lost") and row["latency_ms"] == 1500
    assert (row["task_id"], row["attempt"], row["task_template_id"]) == (q.id(0), 1, "job_match")
    from lib.usage.store import UsageRecord

    record = UsageRecord.model_validate(row)  # the drain accepts it
    assert record.created_at.timestamp() == NOW / 1000


async def test_a_crashed_task_restarts_before_later_ones(redis: RedisPort) -> None:
    """An expired lease puts its task back at its old place: the next ticket restarts it first."""
    q = Queue(TaskStore(redis, settings(glm_flash_max_workers=1, lease_ms=1000)))
    await q.admit(3)
    crashed = await q.deliver(0)
    assert isinstance(crashed, Run)
    # Task 0's worker dies; task 2's message arrives after the lease ran out.
    again = await q.deliver(2, NOW + 1200)
    assert started(again) == q.id(0) and isinstance(again, Run) and again.restarted
    await q.finish(2, again, NOW + 1300)
    # Task 0's own message comes back: its task is done, so it serves the head (task 1).
    follow = await q.deliver(0, NOW + 1400)
    assert started(follow) == q.id(1)


async def test_a_superseded_attempt_keeps_its_ticket(redis: RedisPort) -> None:
    """The message of an attempt that was taken over is still a ticket for the queue."""
    q = Queue(TaskStore(redis, settings(glm_flash_max_workers=1, lease_ms=1000)))
    await q.admit(2)
    stalled = await q.deliver(0)
    assert isinstance(stalled, Run)
    taken = await q.deliver(1, NOW + 1500)  # task 1's ticket restarts task 0
    assert started(taken) == q.id(0)
    assert await q.finish(0, stalled, NOW + 1600) == "superseded"
    assert isinstance(taken, Run)
    await q.finish(1, taken, NOW + 1700)
    # Task 0's message (asked to come back) now starts task 1, whose own ticket was used.
    assert started(await q.deliver(0, NOW + 1800)) == q.id(1)


async def test_lost_outcome_releases_the_lease_for_an_immediate_takeover(
    redis: RedisPort,
) -> None:
    """An attempt that gives up (lost) frees its slot: its redelivery restarts the task at once."""
    q = Queue(TaskStore(redis, settings(glm_flash_max_workers=1)))
    await q.admit(1)
    first = await q.deliver(0)
    assert isinstance(first, Run)
    assert await q.finish(0, first, NOW + 10, "lost") == "lost"
    again = await q.deliver(0, NOW + 20)
    assert isinstance(again, Run) and again.restarted and again.attempt == 2


@pytest.mark.parametrize("seed", range(6))
async def test_any_delivery_order_runs_every_task_once_in_waiting_order(
    redis: RedisPort, seed: int
) -> None:
    """Random delivery orders, duplicates and bounces: every task runs exactly once, in order.

    QStash's role is played by a loop that picks a random pending message (bounced ones
    included, duplicates sometimes), and finishes a random running task now and then.
    """
    rng = random.Random(seed)
    n = 12
    q = Queue(TaskStore(redis, settings(glm_flash_max_workers=3)))
    await q.admit(n, priorities=[rng.choice([0, 0, 0, 3]) for _ in range(n)])
    waiting_order = [
        str(t) for t in await redis.execute("ZRANGE", keys.queue_waiting("q_glm_flash"), 0, -1)
    ]
    pending = list(range(n))  # messages QStash still has
    running: dict[str, tuple[int, Run]] = {}
    starts: list[str] = []
    now = NOW
    for _ in range(2000):
        if not pending and not running:
            break
        now += 1
        if running and (not pending or rng.random() < 0.4):
            task_id = rng.choice(sorted(running))
            owner, r = running.pop(task_id)
            assert await q.finish(owner, r, now) == "finished"
            continue
        i = rng.choice(pending)
        result = await q.deliver(i, now)
        if isinstance(result, Run):
            running[result.task.task_id] = (i, result)
            starts.append(result.task.task_id)
            pending.remove(i)
        elif isinstance(result, Skip):
            pending.remove(i)
        if rng.random() < 0.1:
            pending.append(i)  # at-least-once: QStash may deliver any message again
    assert starts == waiting_order
    assert await leftovers(redis) == []


async def test_ticket_loss_reissues_while_work_remains_then_fails_only_dead_tasks(
    redis: RedisPort,
) -> None:
    """A dead-lettered ticket is replaced while work remains; a spent budget fails queued ones."""
    s: Settings = settings(glm_flash_max_workers=1, ticket_reissues=1)
    q = Queue(TaskStore(redis, s))
    await q.admit(2)
    live = await q.deliver(0)
    assert isinstance(live, Run)
    loss = await q.store.ticket_lost(q.ticket(1), "m1")
    assert loss.action == "reissue"
    last = q.ticket(1).model_copy(update={"generation": 1})
    loss = await q.store.ticket_lost(last, "m1")
    assert loss == TicketLoss("fail", (q.ticket(1),))
    # The failure callback may fail the queued task, never the live one.
    assert await q.store.finish(q.ticket(0), None, Outcome("failed"), NOW + 1) == "alive"
    assert await q.store.finish(q.ticket(1), None, Outcome("failed"), NOW + 1) == "finished"
    await q.finish(0, live, NOW + 2)
    done_ticket = q.ticket(0).model_copy(update={"generation": 9})
    assert await q.store.ticket_lost(done_ticket, "m0") == TicketLoss("none")
    assert await leftovers(redis) == []


async def test_failing_a_dead_attempt_releases_its_lease_and_logs_it(redis: RedisPort) -> None:
    """Failing a task whose attempt died frees the dead lease and closes its usage row."""
    q = Queue(TaskStore(redis, settings(lease_ms=1000)))
    await q.admit(1)
    assert isinstance(await q.deliver(0), Run)
    ended = await q.store.finish(q.ticket(0), None, Outcome("failed"), NOW + 2000)
    assert ended == "finished"
    assert await leftovers(redis) == []
    entries = await redis.execute("XRANGE", keys.usage_stream(), "-", "+")
    [row] = json.loads(pairs_to_dict(entries[0][1])["rows"])
    assert row["is_success"] is False and row["error_message"].startswith("lost")


class CountingScripts:
    """The test's Redis, counting script calls and running a hook after each one."""

    def __init__(self, inner: RedisPort) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.scripts = 0
        self.after_script: Callable[[Any], Awaitable[None]] | None = None

    async def _script(self, reply: Any) -> Any:
        self.scripts += 1
        if self.after_script is not None:
            await self.after_script(reply)
        return reply

    async def execute(self, *args: Arg) -> Any:
        reply = await self.inner.execute(*args)
        # EVAL: the first run of a script (run_script's NOSCRIPT fallback).
        return await self._script(reply) if str(args[0]).upper() == "EVAL" else reply

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        return await self.inner.pipeline(commands)

    async def evalsha(self, sha: str, keys_: Sequence[str], args: Sequence[Arg]) -> Any:
        return await self._script(await self.inner.evalsha(sha, keys_, args))

    async def xread(
        self, key: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        return await self.inner.xread(key, after_id, count=count, block_ms=block_ms)

    async def xread_streams(
        self, streams: Sequence[tuple[str, str]], *, count: int, block_ms: int | None
    ) -> list[KeyedEntry]:
        return await self.inner.xread_streams(streams, count=count, block_ms=block_ms)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_deliveries_arriving_together_each_start_a_different_task(
    redis: RedisPort,
) -> None:
    """No herd: 12 deliveries at once, none its queue's head, start the 12 tasks.

    Each reserves the head it finds in the call that names it, so the next delivery finds
    the next head: at most two script calls each, and none is sent back as `contended`
    (with every delivery racing for one head, each round started one task).
    """
    counting = CountingScripts(redis)
    q = Queue(TaskStore(counting, settings(glm_flash_max_workers=12)))
    await q.admit(13)
    counting.scripts = 0
    results = await asyncio.gather(*(q.deliver(i) for i in range(12, 0, -1)))
    assert all(isinstance(r, Run) for r in results), results
    assert sorted(started(r) for r in results) == sorted(q.id(i) for i in range(12))
    assert 12 <= counting.scripts <= 2 * 12
    # The slot pool holds exactly one lease per started task (every reservation was used).
    pool = keys.model_pool("glm-4.5-flash", "free")
    assert await redis.execute("ZCARD", pool) == 12
    assert await redis.execute("ZRANGE", keys.queue_waiting("q_glm_flash"), 0, -1) == [q.id(12)]


async def test_a_reserved_head_cancelled_before_its_start_gives_its_slot_back(
    redis: RedisPort,
) -> None:
    """The head is cancelled between the call that reserved it and the one that starts it."""
    counting = CountingScripts(redis)
    store = TaskStore(counting, settings(glm_flash_max_workers=1))
    q = Queue(store)
    await q.admit(3)

    async def cancel_the_reserved_head(reply: Any) -> None:
        if isinstance(reply, list) and reply and reply[0] == "head" and reply[1] == q.id(0):
            counting.after_script = None
            await store.cancel(q.id(0), q.tasks[0][0].user_id, NOW + 1)

    counting.after_script = cancel_the_reserved_head
    result = await q.deliver(2)  # task 2's message: reserves task 0, which is cancelled
    # The only slot came back and went to the next head; the cancelled task never ran.
    assert started(result) == q.id(1)
    pool = keys.model_pool("glm-4.5-flash", "free")
    members = await redis.execute("ZRANGE", pool, 0, -1)
    assert len(members) == 1 and f"|{q.id(1)}|" in members[0]
    status = await redis.execute("HGET", keys.task(q.id(0)), "status")
    assert status == "cancelled"
