"""One delivery: use it as a ticket, run the task it starts under a renewed lease, finish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lib import keys
from lib.clock import now_ms
from lib.errors import RedisUnavailable, SlotlineError
from lib.i18n import message
from lib.redis.port import RedisPort
from lib.routing import PROVIDERS, ModelId
from lib.settings import Settings
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Finished, Outcome, Run, Skip, Wait
from lib.tasks.store import TaskStore
from lib.usage.record import UsageRecord
from worker.blips import through_blips
from worker.tokens import Attempt, Fenced, TokenBatcher

logger = logging.getLogger(__name__)

Delta = Callable[[str], Awaitable[None]]
Restart = Callable[[], Awaitable[None]]
Record = Callable[[UsageRecord], None]
# Awaited with the model a task moves to when the LLM layer falls back to it.
Fallback = Callable[[ModelId], Awaitable[None]]
# Called with a service id when one of its steps' tasks has ended (lib/services/).
OnStep = Callable[[str], Awaitable[None]]


class Runner(Protocol):
    """Runs one task on one model (the LLM layer behind it)."""

    async def run(
        self,
        msg: TaskMessage,
        model: ModelId,
        *,
        on_delta: Delta,
        on_restart: Restart,
        on_fallback: Fallback,
        record: Record,
    ) -> RunOutput:
        """Return the validated result; call `record` once per provider attempt.

        `on_fallback` is awaited before the first call on each later model of the route
        when the layer falls back to it (`RunOutput.model` is then that model's).

        Raises:
            SlotlineError: the task failed (after the layer's retries and fallbacks).
        """
        ...


@dataclass
class RunOutput:
    """A finished run: the validated JSON result and how it was produced."""

    result: Any
    model: str
    degraded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """What the worker answers QStash: status, JSON body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def retry_reply(task_id: str, reason: str, retry_after: int) -> Reply:
    """Ask QStash to deliver the message again later: the ticket is still needed."""
    return Reply(
        503,
        {"task_id": task_id, "status": "retry", "reason": reason},
        {"Retry-After": str(max(1, retry_after))},
    )


@contextlib.asynccontextmanager
async def renewed(store: TaskStore, run: Run, work: asyncio.Task[Any]) -> AsyncIterator[None]:
    """Renew the lease every third of its length; cancel `work` if the lease is lost.

    A renewal that cannot reach Redis is tried again at the next tick: the lease has
    two more ticks before it runs out, so a blip shorter than that costs nothing.
    """
    interval = store.settings.lease_ms / 3000
    stopped = asyncio.Event()

    async def loop() -> None:
        # Ends on the flag too: a cancel racing a Redis reply can be swallowed on 3.11.
        while not stopped.is_set():
            await asyncio.sleep(interval)
            if stopped.is_set():
                return
            try:
                kept = await store.renew(run, now_ms())
            except RedisUnavailable as exc:
                logger.warning("task %s: lease renewal failed (%s)", run.task.task_id, exc.detail)
                continue
            if not kept:
                logger.warning("task %s lost its lease; stopping this attempt", run.task.task_id)
                work.cancel("lease lost")
                return

    renewer = asyncio.create_task(loop())
    try:
        yield
    finally:
        stopped.set()
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer


def _done_data(rows: list[UsageRecord], output: RunOutput, started: float) -> dict[str, Any]:
    ok = [r for r in rows if r.is_success]
    usage = {
        "input_tokens": sum(r.input_tokens for r in ok),
        "output_tokens": sum(r.output_tokens for r in ok),
        "total_tokens": sum(r.total_tokens for r in ok),
    }
    return {
        "model": output.model,
        "usage": usage,
        "cost": round(float(sum(r.cost for r in rows)), 6),
        "currency": rows[-1].currency if rows else "CNY",
        "attempts": len(rows),
        "latency_ms": int((time.monotonic() - started) * 1000),
        "degraded": output.degraded,
    }


async def deliver(
    ticket: TaskMessage,
    *,
    message_id: str,
    redis: RedisPort,
    settings: Settings,
    runner: Runner,
    on_step: OnStep | None = None,
) -> Reply:
    """Handle one delivery end to end.

    Args:
        ticket: the delivered message.
        message_id: its QStash id.
        redis: the Redis port.
        settings: the settings.
        runner: runs a task on a model.
        on_step: carries out a service's transition after one of its steps ended; the
            delivery answers only after it did (a failure asks for a redelivery, and the
            transition stays in the due set).

    Returns:
        200 when a task finished or nothing waits on the queue; 429 with `Retry-After`
        when no task may start yet (a live attempt of this message: the time its lease
        has left; no free slot: when the earliest lease can end); 503 with `Retry-After`
        when the ticket is still needed (Redis unreachable, the attempt lost its lease,
        a service's next step could not be started yet).
    """
    store = TaskStore(redis, settings)
    try:
        start = await store.start(ticket, message_id=message_id, now_ms=now_ms())
    except RedisUnavailable as exc:
        logger.warning("task %s: start failed (%s)", ticket.task_id, exc.detail)
        return retry_reply(ticket.task_id, "redis_unavailable", settings.redis_blip_retry_s)
    if isinstance(start, Skip):
        logger.info("delivery of %s: %s", ticket.task_id, start.reason)
        return Reply(200, {"task_id": ticket.task_id, "status": "skipped", "reason": start.reason})
    if isinstance(start, Wait):
        return Reply(
            429,
            {"task_id": ticket.task_id, "status": "waiting", "reason": start.reason},
            {"Retry-After": str(start.retry_after)},
        )
    reply = await _run(store, ticket, start, message_id=message_id, runner=runner)
    if on_step is not None and start.task.step and reply.status == 200:
        try:
            await on_step(start.task.service_id)
        except SlotlineError as exc:
            logger.warning(
                "service %s: next step not started (%s); redelivery", start.task.service_id, exc
            )
            return retry_reply(start.task.task_id, "service_step", settings.redis_blip_retry_s)
    return reply


async def _run(
    store: TaskStore, ticket: TaskMessage, run: Run, *, message_id: str, runner: Runner
) -> Reply:
    """Run the started task and finish it in `finally`."""
    settings = store.settings
    msg = run.task
    logger.info(
        "task %s attempt %s on %s (ticket %s)", msg.task_id, run.attempt, run.model, ticket.task_id
    )
    rows: list[UsageRecord] = []
    outcome = Outcome("failed", error_code="internal_error")
    started = time.monotonic()
    work: asyncio.Task[RunOutput] | None = None
    events_key = keys.events(msg.user_id, msg.service_id, msg.task_id)
    try:
        async with TokenBatcher(
            store.redis,
            Attempt(keys.task(msg.task_id), events_key, run.lease_id),
            flush_ms=settings.token_flush_ms,
            max_chars=settings.token_flush_max,
            blip_budget_s=settings.lease_ms / 1000,
        ) as batcher:

            async def restart() -> None:
                # The LLM layer starts over on another model: clients reset their text.
                await batcher.restart({"attempt": run.attempt})

            async def fallback(model: ModelId) -> None:
                # The task's model, its `started` event and `done.model` agree (#10).
                await batcher.switch(
                    model,
                    attempt=run.attempt,
                    provider=PROVIDERS[model],
                    out_price=settings.prices.get(model, {}).get("output", 0),
                )

            def record(row: UsageRecord) -> None:
                rows.append(row.model_copy(update={"task_id": msg.task_id, "attempt": run.attempt}))

            work = asyncio.create_task(
                runner.run(
                    msg,
                    run.model,
                    on_delta=batcher.add,
                    on_restart=restart,
                    on_fallback=fallback,
                    record=record,
                )
            )
            async with renewed(store, run, work):
                output = await asyncio.wait_for(work, settings.worker_time_limit_s)
        if output.degraded:
            # Every model failed: the rows say so, and the user is not charged.
            rows[:] = [row.model_copy(update={"is_degraded": True}) for row in rows]
        outcome = Outcome(
            "done",
            result=output.result,
            done=_done_data(rows, output, started),
            degraded=output.degraded,
        )
    except Fenced:
        # Another delivery took the task over (or it ended): finish says which.
        outcome = Outcome("lost")
        logger.warning("task %s: attempt %s was fenced off", msg.task_id, run.attempt)
    except RedisUnavailable as exc:
        # Not the task's fault: the redelivery restarts it once Redis is back.
        outcome = Outcome("lost")
        logger.warning("task %s: redis unreachable during the run (%s)", msg.task_id, exc.detail)
    except SlotlineError as exc:
        outcome = Outcome(
            "failed",
            error_code=exc.code,
            error_message=message(exc.code, msg.lang, exc.params),
        )
        logger.warning("task %s failed: %s (%s)", msg.task_id, exc.code, exc.detail)
    except TimeoutError:
        outcome = Outcome(
            "failed", error_code="timeout", error_message=message("timeout", msg.lang)
        )
        logger.warning("task %s hit the worker time limit", msg.task_id)
    except asyncio.CancelledError:
        if work is not None and work.cancelled() and not _current_cancelled():
            # Only the renewer cancels `work`: the lease is gone (taken over, or expired
            # during a stall). finish tells which.
            outcome = Outcome("lost")
        else:
            raise
    except Exception:
        logger.exception("task %s crashed in the worker", msg.task_id)
        outcome = Outcome(
            "failed",
            error_code="internal_error",
            error_message=message("internal_error", msg.lang),
        )
    finally:
        outcome.usage_rows = rows
        finished = await _finish(store, run, outcome, ticket=ticket, message_id=message_id)
    return _finish_reply(ticket, run, outcome, finished, settings)


async def _finish(
    store: TaskStore, run: Run, outcome: Outcome, *, ticket: TaskMessage, message_id: str
) -> Finished | None:
    """finish, through Redis blips of up to the lease length; None if Redis stayed away."""
    try:
        return await through_blips(
            lambda: store.finish(
                run.task, run, outcome, now_ms(), ticket=ticket, message_id=message_id
            ),
            budget_s=store.settings.lease_ms / 1000,
        )
    except RedisUnavailable as exc:
        logger.warning("task %s: finish failed (%s)", run.task.task_id, exc.detail)
        return None


def _finish_reply(
    ticket: TaskMessage, run: Run, outcome: Outcome, finished: Finished | None, settings: Settings
) -> Reply:
    task_id = run.task.task_id
    if finished is None:
        # The redelivery follows this message to the task, and takes it over once the
        # lease has run out.
        return retry_reply(task_id, "redis_unavailable", settings.redis_blip_retry_s)
    if finished == "lost":
        logger.warning("task %s: attempt %s lost its lease; redelivery", task_id, run.attempt)
        return retry_reply(task_id, "lease_lost", settings.start_retry_after_s)
    if finished == "superseded":
        # Another delivery took the task over; this message is still a ticket its queue
        # may need (it may have been some other task's), so it comes back.
        logger.info("task %s: attempt %s superseded", task_id, run.attempt)
        return retry_reply(task_id, "superseded", settings.start_retry_after_s)
    status = outcome.status if finished == "finished" else "finished"
    return Reply(200, {"task_id": task_id, "ticket": ticket.task_id, "status": status})


def _current_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
