"""The worker's side of a task's life: a delivery as a ticket (start), renew, finish, and a
lost ticket (the failure callback). One method per script, typed results."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from lib import keys
from lib.redis.port import RedisPort, load_script, run_script
from lib.routing import PROVIDERS, ModelId, slot_limit
from lib.settings import Settings
from lib.tasks.admission import lock_kind
from lib.tasks.message import TaskMessage
from lib.usage.record import UsageRecord, encode

# A start looks at one candidate task per call; a ticket redirected more often than this
# (other deliveries kept starting the head first) comes back a moment later.
MAX_HOPS = 8


@dataclass(frozen=True)
class Run:
    """The delivery runs `task` (its own, or the head of its queue) under a slot lease."""

    task: TaskMessage
    model: ModelId
    pool: str
    lease_id: str
    attempt: int
    restarted: bool  # a previous attempt had started (its lease ran out)


@dataclass(frozen=True)
class Skip:
    """Nothing to run: no task waits on the delivery's queue (the ticket is spent)."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """Not now: come back after `retry_after` seconds.

    `busy`: this message's earlier attempt still holds a live lease (`retry_after` is
    what the lease has left). `slots`: no free slot (`retry_after` is when the earliest
    lease can end). `contended`: other deliveries kept starting the head first.
    """

    reason: Literal["busy", "slots", "contended"]
    retry_after: int


Start = Run | Skip | Wait

# finish: this call ended the task; it had already ended; a newer attempt owns it; the
# attempt lost its lease and nobody took over yet; a call without a lease found a live one.
Finished = Literal["finished", "ended", "superseded", "lost", "alive"]
_FINISHED: dict[int, Finished] = {
    1: "finished",
    0: "ended",
    -1: "superseded",
    2: "lost",
    3: "alive",
}


@dataclass(frozen=True)
class TicketLoss:
    """What the failure callback does when a message was dead-lettered.

    `reissue`: work remains on the queue and the ticket may be replaced; `fail`: the
    reissue budget is spent, the tasks named may be failed (finish refuses live ones);
    `none`: nothing waits for this ticket.
    """

    action: Literal["reissue", "fail", "none"]
    tasks: tuple[TaskMessage, ...] = ()


@dataclass
class Outcome:
    """How an attempt ended, for the finish script."""

    status: Literal["done", "failed", "lost"]
    result: Any = None
    error_code: str = ""
    error_message: str = ""
    done: dict[str, Any] | None = None
    usage_rows: list[UsageRecord] = field(default_factory=list)
    degraded: bool = False  # a degraded result: done, flagged, and not charged


class Scheduling:
    """The worker's scripts (start, renew, finish) and the lost-ticket decision."""

    redis: RedisPort
    settings: Settings

    # -- worker ---------------------------------------------------------------------------

    def _pools(self, msg: TaskMessage) -> list[str]:
        return [keys.model_pool(m, msg.tier) for m in msg.models]

    async def start(self, ticket: TaskMessage, *, message_id: str, now_ms: int) -> Start:
        """Use a delivery as a ticket: start the head of its queue, or say why not.

        The head may be another task than the ticket's own (`Run.task` says which); a
        redelivery follows the task this message started before. Each candidate costs
        one script call; the first one is the ticket's own task, so deliveries that
        arrive in waiting order cost one call.

        Raises:
            RedisUnavailable: Redis could not be reached.
        """
        nonce = uuid.uuid4().hex
        pools = self._pools(ticket)
        limits: list[Any] = []
        for model in ticket.models:
            price = self.settings.prices.get(model, {}).get("output", 0)
            limits += [slot_limit(self.settings, model), model, PROVIDERS[model], price]
        candidate = ticket
        reserved = ""  # the lease member the previous call reserved `candidate` under
        for _ in range(MAX_HOPS):
            reply = await run_script(
                self.redis,
                load_script("lib.tasks", "start"),
                [
                    keys.task(ticket.task_id),
                    keys.task(candidate.task_id),
                    keys.queue_waiting(ticket.queue_id),
                    keys.queue_specs(ticket.queue_id),
                    keys.queue_waits(ticket.queue_id),
                    keys.events(candidate.user_id, candidate.service_id, candidate.task_id),
                    keys.usage_stream(),
                    *pools,
                ],
                [
                    now_ms,
                    self.settings.lease_ms,
                    nonce,
                    message_id,
                    candidate.task_id,
                    ticket.queue_id,
                    self.settings.events_ttl_s,
                    self.settings.start_retry_after_s,
                    reserved,
                    *limits,
                ],
            )
            kind = reply[0]
            if kind in ("head", "follow"):
                candidate = TaskMessage.from_spec(str(reply[2]), ticket.tier)
                reserved = str(reply[3]) if kind == "head" else ""
                continue
            if kind == "skip":
                return Skip(str(reply[1]))
            if kind == "wait":
                return Wait(cast(Any, str(reply[2])), retry_after=int(reply[1]))
            index = int(reply[1]) - 1
            return Run(
                task=candidate,
                model=ticket.models[index],
                pool=pools[index],
                lease_id=str(reply[4]),
                attempt=int(reply[2]),
                restarted=int(reply[3]) == 1,
            )
        return Wait("contended", retry_after=self.settings.start_retry_after_s)

    async def renew(self, run: Run, now_ms: int) -> bool:
        """Extend the lease; False means another attempt took over (stop working)."""
        reply = await run_script(
            self.redis,
            load_script("lib.tasks", "renew"),
            [keys.task(run.task.task_id), run.pool],
            [run.lease_id, now_ms, self.settings.lease_ms],
        )
        return int(reply) == 1

    async def finish(
        self,
        task: TaskMessage,
        lease: Run | None,
        outcome: Outcome,
        now_ms: int,
        *,
        ticket: TaskMessage | None = None,
        message_id: str = "",
    ) -> Finished:
        """Release everything and write the terminal state. Idempotent.

        Args:
            task: the task that ran (or is failed without a lease).
            lease: the attempt's lease; None from the failure callback.
            outcome: how it ended.
            now_ms: the clock.
            ticket: the delivered message, whose own task records what it started.
            message_id: the delivered message's id.

        Returns:
            "finished" when this call ended the task, "ended" when it had already ended,
            "superseded" when a newer attempt owns it (only this lease was released),
            "lost" for a "lost" outcome nobody has taken over yet (its usage rows are
            recorded and the task stays running for a redelivery), "alive" when a call
            without a lease found a live attempt (nothing changed).
        """
        pools = self._pools(task)
        result = "" if outcome.result is None else json.dumps(outcome.result, ensure_ascii=False)
        done = json.dumps(outcome.done, ensure_ascii=False) if outcome.done else ""
        rows = encode(outcome.usage_rows) if outcome.usage_rows else ""
        prices: list[Any] = []
        for model in task.models:
            prices += [PROVIDERS[model], self.settings.prices.get(model, {}).get("output", 0)]
        reply = await run_script(
            self.redis,
            load_script("lib.tasks", "finish"),
            [
                keys.task(task.task_id),
                lease.pool if lease else pools[0],
                keys.queue_pending(task.queue_id),
                keys.queue_waiting(task.queue_id),
                keys.user_lock(task.user_id, lock_kind(task.service_id, task.template, task.step)),
                keys.quota(task.user_id),
                keys.events(task.user_id, task.service_id, task.task_id),
                keys.usage_stream(),
                keys.queue_specs(task.queue_id),
                keys.task((ticket or task).task_id),
                keys.idem(task.idem),
                keys.queue_runs(task.queue_id),
                keys.service(task.service_id),
                keys.services_due(),
                *pools,
            ],
            [
                lease.lease_id if lease else "",
                outcome.status,
                now_ms,
                task.task_id,
                result,
                outcome.error_code,
                outcome.error_message,
                done,
                rows,
                self.settings.events_ttl_s,
                self.settings.task_ttl_s,
                message_id,
                "1" if outcome.degraded else "",
                task.step,
                task.service_id,
                *prices,
            ],
        )
        return _FINISHED[int(reply)]

    async def ticket_lost(self, ticket: TaskMessage, message_id: str) -> TicketLoss:
        """A message was dead-lettered: decide whether work still needs a ticket.

        One pipelined round trip of reads. Work remains when tasks wait on the queue,
        when the ticket's own task has not ended, or when the task this message started
        has not ended (its attempt may be dead).
        """
        own = keys.task(ticket.task_id)
        waiting, status, ran = await self.redis.pipeline(
            [
                ("ZCARD", keys.queue_waiting(ticket.queue_id)),
                ("HGET", own, "status"),
                ("HGET", own, f"ran:{message_id}"),
            ]
        )
        names = [ticket.task_id] if status in ("queued", "running") else []
        if ran and ran != ticket.task_id:
            names.append(str(ran))
        specs = (
            await self.redis.execute("HMGET", keys.queue_specs(ticket.queue_id), *names)
            if names
            else []
        )
        unfinished = [
            TaskMessage.from_spec(str(raw), ticket.tier) for raw in specs if raw is not None
        ]
        if not unfinished and int(waiting or 0) == 0:
            return TicketLoss("none")
        if ticket.generation < self.settings.ticket_reissues:
            return TicketLoss("reissue", tuple(unfinished))
        return TicketLoss("fail", tuple(unfinished))
