"""Process-level faults (issue #8): a task that got 202 ends `done` whatever happens around it.

Every test runs the whole local stack as separate processes (`tests/faults/harness.py`):
the app's Valkey, the local QStash server and its Valkey, Postgres, the offline model (paced
like a provider) and the app, and observes only public surfaces: the HTTP API, the QStash
DLQ API, the Redis keys the design names and `llm_usage_logs`. Select them with `-m faults`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.client import (
    Api,
    Task,
    drain_usage,
    final_text,
    is_clean,
    leftovers,
    outcome,
    types,
    usage_pending,
    usage_rows,
)
from tests.faults.harness import ProcessPart, ProcessStack, StackConfig, paused

# The stack takes ~5 s to start; each scenario is budgeted to end (pass or fail) within
# BUDGET_S of its start, so a failure is an assertion with counts, not a timeout. The
# timeout mark is only the hang guard.
pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]
BUDGET_S = 52.0

# The provider's profile: 200 ms to the first token. The offline job_match answer to
# JOB_MATCH is ~260 tokens; `STREAM_S` says how long it streams.
TTFT_MS = 200.0
ANSWER_TOKENS = 260
LEASE_MS = 3000


def tokens_per_s(stream_s: float) -> float:
    """The offline model's pace for an answer that streams for `stream_s` seconds."""
    return ANSWER_TOKENS / stream_s


@pytest.fixture(scope="module")
def make_stack(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[StackConfig], ProcessStack]]:
    """Start process stacks (a fresh database each, in the session Postgres); stop them all."""
    stacks: list[ProcessStack] = []

    def make(config: StackConfig) -> ProcessStack:
        config.database_url = postgres_url
        stack = ProcessStack(tmp_path_factory.mktemp("faults"), config)
        stacks.append(stack)
        return stack.start()

    try:
        yield make
    finally:
        for stack in stacks:
            stack.stop()


def run(coro: Any) -> Any:
    """Run a scenario on a loop of its own (module fixtures are synchronous)."""
    return asyncio.run(coro)


@dataclass
class Finished:
    """What a scenario leaves for the assertions."""

    stack: ProcessStack
    tasks: list[Task]
    all_terminal: bool
    events: dict[str, list[dict[str, Any]]]
    reference: str = ""  # the text of an undisturbed run of the same task
    faulted: frozenset[str] = frozenset()  # tasks streaming when the fault hit
    dlq: int = 0
    leftovers: dict[str, Any] | None = None
    usage: list[dict[str, Any]] | None = None

    def summary(self) -> str:
        return f"{dict(outcome(self.tasks))} (all terminal: {self.all_terminal})"

    def __repr__(self) -> str:
        return f"Finished({self.summary()}, dlq={self.dlq}, leftovers={self.leftovers})"


class Budget:
    """The time a scenario has left (it started when this was made)."""

    def __init__(self, total_s: float = BUDGET_S) -> None:
        self.end = time.monotonic() + total_s

    def left(self, reserve_s: float = 4.0) -> float:
        """Seconds left, keeping `reserve_s` for the reads after the wait."""
        return max(1.0, self.end - time.monotonic() - reserve_s)


async def _finish(
    api: Api,
    stack: ProcessStack,
    tasks: list[Task],
    *,
    budget: Budget,
    reserve_s: float = 4.0,
    **extra: Any,
) -> Finished:
    terminal = await api.wait_terminal(tasks, timeout_s=budget.left(reserve_s))
    events = {t.task_id: await api.events(t) for t in tasks}
    return Finished(
        stack,
        tasks,
        terminal,
        events,
        dlq=len(await api.dlq()),
        leftovers=await leftovers(stack.redis_url),
        **extra,
    )


async def _reference(api: Api) -> str:
    """Run one task undisturbed (also warms the app up); its final text."""
    warm = await api.submit("reference")
    assert await api.wait_terminal([warm], timeout_s=20), outcome([warm])
    assert warm.state == "done", warm.status
    return final_text(await api.events(warm))


def _assert_all_done(run: Finished) -> None:
    assert run.all_terminal and all(t.state == "done" for t in run.tasks), run.summary()


def _assert_each_ran_once(run: Finished) -> None:
    for task in run.tasks:
        seen = types(run.events[task.task_id])
        assert seen["done"] == 1 and seen["result"] == 1, (task.task_id, dict(seen))
        assert seen["error"] == 0, (task.task_id, run.events[task.task_id][-1])
        assert final_text(run.events[task.task_id]) == run.reference, task.task_id


def _assert_released(run: Finished) -> None:
    assert run.leftovers is not None and is_clean(run.leftovers), run.leftovers
    assert run.dlq == 0, f"{run.dlq} dead-lettered; {run.summary()}"


# --------------------------------------------------------------------------- (a) contention


@pytest.fixture(scope="module")
def contention(make_stack: Callable[[StackConfig], ProcessStack]) -> Finished:
    """24 signed-in users at once on 3 free slots, a paced streaming provider."""
    budget = Budget()
    stack = make_stack(
        StackConfig(
            app_env={"GLM_FLASH_MAX_WORKERS": "3", "LEASE_MS": str(LEASE_MS)},
            time_scale=0.05,
            model_ttft_ms=TTFT_MS,
            model_tokens_per_s=tokens_per_s(0.8),
        )
    )

    async def scenario() -> Finished:
        async with Api(stack) as api:
            reference = await _reference(api)
            tasks = await api.submit_many([f"user-{i}" for i in range(24)])
            return await _finish(api, stack, tasks, budget=budget, reference=reference)

    return run(scenario())  # type: ignore[no-any-return]


def test_contention_every_task_ends_done(contention: Finished) -> None:
    """Pins #8 (1): 24 users on 3 slots, deliveries in any order: all done, none failed."""
    _assert_all_done(contention)
    _assert_each_ran_once(contention)


def test_contention_leaves_nothing_behind(contention: Finished) -> None:
    """Pins #8 (1): after a contended run the DLQ is empty, no lease, pending count or lock."""
    _assert_released(contention)


# --------------------------------------------------------------------------- (b, d) app crash


@pytest.fixture(scope="module")
def app_crash(make_stack: Callable[[StackConfig], ProcessStack]) -> Finished:
    """12 streaming tasks on 4 slots; kill -9 of the app mid-stream, restarted 3 s later.

    The messages' retry delay is shortened (2, 4, 8 s… instead of 10, 20, 40 s): a loaded
    machine restarts the app in several seconds, and the test pins what happens to the
    tasks, not the production schedule (bench/faults.py measures that one).
    """
    budget = Budget(75.0)
    stack = make_stack(
        StackConfig(
            app_env={
                "GLM_FLASH_MAX_WORKERS": "4",
                "LEASE_MS": str(LEASE_MS),
                "QSTASH_RETRY_DELAY": "min(20000, 2000 * pow(2, retried))",
            },
            time_scale=1.0,
            model_ttft_ms=TTFT_MS,
            model_tokens_per_s=tokens_per_s(4.0),
        )
    )

    async def scenario() -> Finished:
        async with Api(stack) as api:
            reference = await _reference(api)
            tasks = await api.submit_many([f"crash-{i}" for i in range(12)])
            streaming = await api.wait_running(tasks, 4, timeout_s=15)
            stack.kill("app", signal.SIGKILL)
            await asyncio.sleep(3.0)  # the outage itself
            stack.restart("app")
            done = await _finish(
                api,
                stack,
                tasks,
                budget=budget,
                reserve_s=10.0,
                reference=reference,
                faulted=frozenset(t.task_id for t in streaming),
            )
            done.usage = await _drained_usage(stack, len(tasks) + 1)
            return done

    return run(scenario())  # type: ignore[no-any-return]


async def _drained_usage(stack: ProcessStack, at_least: int) -> list[dict[str, Any]]:
    """`llm_usage_logs` once the worker drained every row it queued (or 5 s passed)."""
    deadline = time.monotonic() + 5
    while True:
        if await usage_pending(stack.redis_url) == 0:
            rows = await usage_rows(stack.database_url)
            if len(rows) >= at_least or time.monotonic() > deadline:
                return rows
        elif time.monotonic() > deadline:
            await drain_usage(stack)
            return await usage_rows(stack.database_url)
        await asyncio.sleep(0.2)


def test_app_crash_every_task_ends_done(app_crash: Finished) -> None:
    """Pins #8 (2): kill -9 of the app 4 slots into streaming, back 3 s later: all done."""
    _assert_all_done(app_crash)
    _assert_released(app_crash)


def test_app_crash_streams_restart_and_complete_once(app_crash: Finished) -> None:
    """Pins #8 (2): a killed task's stream says `restart`, ends with the full text, one done."""
    assert len(app_crash.faulted) == 4
    for task_id in app_crash.faulted:
        assert types(app_crash.events[task_id])["restart"] >= 1, task_id
    _assert_each_ran_once(app_crash)


def test_app_crash_logs_every_attempt(app_crash: Finished) -> None:
    """Pins #8 (6): every attempt has a usage row, a killed one too (failed, 'lost')."""
    assert app_crash.usage is not None
    by_user: dict[str, list[dict[str, Any]]] = {}
    for row in app_crash.usage:
        by_user.setdefault(row["user_id"], []).append(row)
    for task in app_crash.tasks:
        rows = by_user.get(task.user, [])
        attempts = int(task.status.get("attempts") or 0)
        lost = [r for r in rows if not r["success"] and "lost" in str(r["error_message"]).lower()]
        ok = [r for r in rows if r["success"]]
        detail = (task.task_id, attempts, json.dumps(rows, default=str))
        assert len(rows) == attempts, detail
        assert len(ok) == (1 if task.state == "done" else 0), detail
        assert len(lost) == attempts - len(ok), detail
    killed = [t for t in app_crash.tasks if t.task_id in app_crash.faulted]
    assert all(int(t.status.get("attempts") or 0) >= 2 for t in killed), [
        t.status.get("attempts") for t in killed
    ]


# --------------------------------------------------------------------------- (c) Redis outage


@pytest.fixture(scope="module", params=["kill", "hang"])
def redis_outage(
    request: pytest.FixtureRequest, make_stack: Callable[[StackConfig], ProcessStack]
) -> Finished:
    """10 tasks streaming on 10 slots when the app's Valkey goes away for 3 s.

    With the default lease (30 s): a delivery that does not ride the outage out in process
    is redelivered (12 s later) while its lease still runs, as in production; a core that
    then waits for the lease to end finishes ~35 s after the outage, hence the budget.
    """
    budget = Budget(75.0)
    stack = make_stack(
        StackConfig(
            app_env={"GLM_FLASH_MAX_WORKERS": "10"},
            time_scale=1.0,
            model_ttft_ms=TTFT_MS,
            # Long enough that all 10 stream at once even when a loaded machine starts
            # them seconds apart.
            model_tokens_per_s=tokens_per_s(6.0),
        )
    )

    async def scenario() -> Finished:
        async with Api(stack) as api:
            reference = await _reference(api)
            tasks = await api.submit_many([f"outage-{i}" for i in range(10)])
            streaming = await api.wait_running(tasks, 10, timeout_s=30)
            if request.param == "kill":
                # The AOF (fsync always) keeps every acknowledged write across the kill.
                stack.kill("valkey", signal.SIGKILL)
                await asyncio.sleep(3.0)
                stack.restart("valkey")
            else:
                with paused(stack, "valkey"):
                    await asyncio.sleep(3.0)
            return await _finish(
                api,
                stack,
                tasks,
                budget=budget,
                reference=reference,
                faulted=frozenset(t.task_id for t in streaming),
            )

    return run(scenario())  # type: ignore[no-any-return]


def test_redis_outage_every_task_ends_done(redis_outage: Finished) -> None:
    """Pins #8 (2): the app's Redis killed (or hung) 3 s under 10 streaming tasks: all done."""
    _assert_all_done(redis_outage)
    _assert_each_ran_once(redis_outage)
    _assert_released(redis_outage)


# --------------------------------------------------------------------------- (e) QStash crash


@pytest.fixture(scope="module")
def qstash_crash(make_stack: Callable[[StackConfig], ProcessStack]) -> Finished:
    """12 tasks on 3 slots; kill -9 of the local QStash server mid-run, restarted 2 s later."""
    budget = Budget()
    stack = make_stack(
        StackConfig(
            app_env={"GLM_FLASH_MAX_WORKERS": "3", "LEASE_MS": str(LEASE_MS)},
            time_scale=1.0,
            model_ttft_ms=TTFT_MS,
            model_tokens_per_s=tokens_per_s(1.5),
        )
    )

    async def scenario() -> Finished:
        async with Api(stack) as api:
            reference = await _reference(api)
            tasks = await api.submit_many([f"qstash-{i}" for i in range(12)])
            streaming = await api.wait_running(tasks, 3, timeout_s=15)
            stack.kill("qstash", signal.SIGKILL)
            await asyncio.sleep(2.0)
            stack.restart("qstash")
            return await _finish(
                api,
                stack,
                tasks,
                budget=budget,
                reference=reference,
                faulted=frozenset(t.task_id for t in streaming),
            )

    return run(scenario())  # type: ignore[no-any-return]


def test_qstash_crash_every_task_ends_done(qstash_crash: Finished) -> None:
    """Pins #8: the push queue's own crash (state in its Redis) loses and doubles no task."""
    _assert_all_done(qstash_crash)
    _assert_each_ran_once(qstash_crash)
    _assert_released(qstash_crash)


def test_harness_restarts_on_the_same_port(tmp_path: Path, postgres_url: str) -> None:
    """The harness: a killed Valkey comes back on its port with its data (AOF), no orphans."""
    import redis

    stack = ProcessStack(tmp_path, StackConfig(database_url=postgres_url)).start()
    try:
        url = stack.redis_url
        redis.Redis.from_url(url).set("survives", "1")
        stack.kill("valkey", signal.SIGKILL)
        stack.restart("valkey")
        assert stack.redis_url == url
        assert redis.Redis.from_url(url).get("survives") == b"1"
        app = stack.parts["app"]
        stack.kill("app", signal.SIGKILL)
        assert not app.alive()
        stack.restart("app")
        assert app.healthy()
        procs = [p.proc for p in stack.parts.values() if isinstance(p, ProcessPart) and p.proc]
    finally:
        stack.stop()
    assert len(procs) == 3 and all(p.poll() is not None for p in procs)
