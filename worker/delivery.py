"""One delivery of a task: start guard, the LLM run under a renewed lease, finish in `finally`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from lib import events, keys
from lib.errors import SlotlineError
from lib.i18n import message
from lib.messages import TaskMessage
from lib.redisport import RedisPort
from lib.routing import ModelId
from lib.settings import Settings
from lib.tasks import Outcome, StartDecision, TaskStore
from worker.tokens import TokenBatcher

logger = logging.getLogger(__name__)

Delta = Callable[[str], Awaitable[None]]
Restart = Callable[[], Awaitable[None]]
Record = Callable[[dict[str, Any]], None]


class Runner(Protocol):
    """Runs one task on one model (the LLM layer behind it)."""

    async def run(
        self,
        msg: TaskMessage,
        model: ModelId,
        *,
        on_delta: Delta,
        on_restart: Restart,
        record: Record,
    ) -> RunOutput:
        """Return the validated result; call `record` once per provider attempt.

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


def now_ms() -> int:
    return int(time.time() * 1000)


@contextlib.asynccontextmanager
async def renewed(
    store: TaskStore, msg: TaskMessage, lease: StartDecision, work: asyncio.Task[Any]
) -> AsyncIterator[None]:
    """Renew the lease every third of its length; cancel `work` if the lease is lost."""
    interval = store.settings.lease_ms / 3000
    stopped = asyncio.Event()

    async def loop() -> None:
        # Ends on the flag too: a cancel racing a Redis reply can be swallowed on 3.11.
        while not stopped.is_set():
            await asyncio.sleep(interval)
            if stopped.is_set():
                return
            if not await store.renew(msg, lease, now_ms()):
                logger.warning("task %s lost its lease; stopping this attempt", msg.task_id)
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


def _done_data(rows: list[dict[str, Any]], output: RunOutput, started: float) -> dict[str, Any]:
    ok = [r for r in rows if r.get("success")]
    usage = {
        "input_tokens": sum(int(r.get("input_tokens", 0)) for r in ok),
        "output_tokens": sum(int(r.get("output_tokens", 0)) for r in ok),
        "total_tokens": sum(int(r.get("total_tokens", 0)) for r in ok),
    }
    return {
        "model": output.model,
        "usage": usage,
        "cost": round(sum(float(r.get("cost", 0)) for r in rows), 6),
        "currency": rows[-1].get("currency", "CNY") if rows else "CNY",
        "attempts": len(rows),
        "latency_ms": int((time.monotonic() - started) * 1000),
        "degraded": output.degraded,
    }


async def deliver(
    msg: TaskMessage,
    *,
    message_id: str,
    redis: RedisPort,
    settings: Settings,
    runner: Runner,
) -> Reply:
    """Handle one delivery end to end.

    Returns:
        200 when the task finished or there was nothing to do (redelivery), 429 with a
        short `Retry-After` when it may not start yet (QStash retries then).
    """
    store = TaskStore(redis, settings)
    lease = await store.start(msg, message_id=message_id, now_ms=now_ms())
    if lease.action == "skip":
        logger.info("task %s skipped: %s", msg.task_id, lease.reason)
        return Reply(200, {"task_id": msg.task_id, "status": "skipped", "reason": lease.reason})
    if lease.action == "wait":
        return Reply(
            429,
            {"task_id": msg.task_id, "status": "waiting", "reason": lease.reason},
            {"Retry-After": str(lease.retry_after)},
        )
    assert lease.model is not None
    logger.info("task %s attempt %s on %s", msg.task_id, lease.attempt, lease.model)
    rows: list[dict[str, Any]] = []
    outcome = Outcome("failed", error_code="internal_error")
    started = time.monotonic()
    work: asyncio.Task[RunOutput] | None = None
    events_key = keys.events(msg.user_id, msg.service_id, msg.task_id)
    try:
        async with TokenBatcher(
            redis, events_key, flush_ms=settings.token_flush_ms, max_chars=settings.token_flush_max
        ) as batcher:

            async def restart() -> None:
                batcher.discard()
                await batcher.flush()
                await events.append(redis, events_key, "restart", {}, ttl_s=None)

            work = asyncio.create_task(
                runner.run(
                    msg, lease.model, on_delta=batcher.add, on_restart=restart, record=rows.append
                )
            )
            async with renewed(store, msg, lease, work):
                output = await asyncio.wait_for(work, settings.worker_time_limit_s)
        outcome = Outcome("done", result=output.result, done=_done_data(rows, output, started))
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
        finished = await store.finish(msg, lease, outcome, now_ms())
    if finished == 2:
        # Nobody took over: have QStash deliver again, and that delivery restarts the task.
        logger.warning(
            "task %s: attempt %s lost its lease; asking for a redelivery",
            msg.task_id,
            lease.attempt,
        )
        return Reply(
            503,
            {"task_id": msg.task_id, "status": "retry", "reason": "lease_lost"},
            {"Retry-After": str(settings.start_retry_after_s)},
        )
    if finished == -1:
        logger.info("task %s: attempt %s superseded", msg.task_id, lease.attempt)
    status = outcome.status if finished == 1 else "superseded" if finished == -1 else "finished"
    return Reply(200, {"task_id": msg.task_id, "status": status})


def _current_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
