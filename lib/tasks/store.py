"""Task lifecycle in Redis: one method per Lua script, typed results and domain errors."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from lib import keys
from lib.errors import NotFound, QueueFull, RateLimited, TaskAlreadyRunning, TaskNotCancellable
from lib.redis.port import RedisPort, load_script, pairs_to_dict, run_script
from lib.routing import PROVIDERS, ModelId, Route, Tier, slot_limit
from lib.settings import Settings
from lib.tasks.message import TaskMessage, TaskSpec
from lib.usage.record import UsageRecord, encode

Status = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
PRIORITY_MAX = 9
RATE_ROUTE = "tasks"
# A start looks at one candidate task per call; a ticket redirected more often than this
# (other deliveries kept starting the head first) comes back a moment later.
MAX_HOPS = 8


def lock_kind(service_id: str, template: str, step: str) -> str:
    """The user lock's kind: one running task per kind, or per step of one service."""
    return f"{service_id}.{template}" if step else template


def _lock_of(fields: dict[str, str]) -> str:
    return lock_kind(fields.get("service", ""), fields["template"], fields.get("step", ""))


def waiting_score(priority: int, now_ms: int) -> int:
    """Waiting-order score: higher priority first, then first come first served."""
    band = PRIORITY_MAX - max(0, min(PRIORITY_MAX, priority))
    return band * 10**13 + now_ms


@dataclass(frozen=True)
class Admission:
    """Everything the admit script needs to register a task."""

    task_id: str
    user_id: str
    user_kind: Literal["trial", "user"]
    service_id: str
    template: str
    lang: str
    priority: int
    idem_digest: str
    paid: Route
    free: Route
    now_ms: int
    variables: dict[str, Any] = field(default_factory=dict)
    # The caller's address: trial callers are also limited per address, so dropping the
    # cookie does not reset their window ('' = no address limit).
    client_address: str = ""
    # A service's task: runs on the service's tier, uncharged and outside the rate window
    # (the service was charged and counted once), locked per service rather than per user.
    forced_tier: Tier | None = None
    step: str = ""

    def address_limited(self) -> bool:
        return self.user_kind == "trial" and bool(self.client_address)

    def lock_kind(self) -> str:
        return lock_kind(self.service_id, self.template, self.step)

    def spec(self) -> TaskSpec:
        """The task's route-free spec (any delivery of its queue may start it)."""
        return TaskSpec(
            task_id=self.task_id,
            user_id=self.user_id,
            service_id=self.service_id,
            template=self.template,  # type: ignore[arg-type]  # validated by the producer
            lang=self.lang,  # type: ignore[arg-type]
            variables=self.variables,
            modality=self.paid.modality,
            idem=self.idem_digest,
            step=self.step,
        )


@dataclass(frozen=True)
class Admitted:
    """The admitted (or idempotently found) task."""

    task_id: str
    tier: Tier
    route: Route
    position: int | None  # None: no longer waiting (an existing task that has started)
    existing: bool
    expected_wait_s: int | None = None  # set when it must wait for a slot (backpressure)


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


@dataclass(frozen=True)
class TaskView:
    """A task's state as the owner sees it."""

    task_id: str
    user_id: str
    status: Status
    template: str
    service_id: str
    tier: str
    queue_id: str
    model_id: str
    mode: str
    position: int | None
    attempts: int
    priority: int
    bounces: int
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    wait_ms: int | None
    result: Any
    error: dict[str, str] | None
    usage: dict[str, Any] | None
    fields: dict[str, str]
    degraded: bool = False

    def public(self) -> dict[str, Any]:
        """The JSON the producer returns for `GET /api/tasks/{id}`."""
        return {
            "task_id": self.task_id,
            "status": self.status,
            "template": self.template,
            "service_id": self.service_id,
            "tier": self.tier,
            "queue_id": self.queue_id,
            "model_id": self.model_id,
            "mode": self.mode,
            "position": self.position,
            "attempts": self.attempts,
            "priority": self.priority,
            "bounces": self.bounces,
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "wait_ms": self.wait_ms,
            "result": self.result,
            "degraded": self.degraded,
            "error": self.error,
            "usage": self.usage,
        }


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


def _view(fields: dict[str, str], position: int | None) -> TaskView:
    error = None
    if fields.get("error"):
        error = {"code": fields["error"], "message": fields.get("error_message", "")}
    return TaskView(
        task_id=fields["id"],
        user_id=fields["user"],
        status=cast(Status, fields["status"]),
        template=fields.get("template", ""),
        service_id=fields.get("service", ""),
        tier=fields.get("tier", ""),
        queue_id=fields.get("queue", ""),
        model_id=fields.get("model", ""),
        mode=fields.get("mode", ""),
        position=position,
        attempts=int(fields.get("attempts", "0")),
        priority=int(fields.get("priority", "0")),
        bounces=int(fields.get("bounces", "0")),
        created_ms=int(fields.get("created_ms", "0")),
        started_ms=_int(fields.get("started_ms")),
        finished_ms=_int(fields.get("finished_ms")),
        wait_ms=_int(fields.get("wait_ms")),
        result=_json(fields.get("result")),
        error=error,
        usage=_json(fields.get("usage")),
        fields=fields,
        degraded=fields.get("degraded") == "1",
    )


class TaskStore:
    """The task lifecycle scripts (admit, abort, start, renew, finish, cancel) over a RedisPort."""

    def __init__(self, redis: RedisPort, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    # -- producer -------------------------------------------------------------------------

    async def admit(self, a: Admission) -> Admitted:
        """Rate limit, idempotency, user lock, quota/tier and backpressure in one round trip.

        Raises:
            RateLimited: too many tasks in the window (`retry_after` set).
            TaskAlreadyRunning: a task of this kind is running for the user.
            QueueFull: the chosen queue is at its backpressure limit.
        """
        s = self.settings
        limit = s.rate_trial_limit if a.user_kind == "trial" else s.rate_user_limit
        score = waiting_score(a.priority, a.now_ms)
        paid_pools = [keys.model_pool(m, "paid") for m in a.paid.models]
        free_pools = [keys.model_pool(m, "free") for m in a.free.models]
        limits = [slot_limit(s, m) for m in (*a.paid.models, *a.free.models)]
        reply = await run_script(
            self.redis,
            load_script("lib.tasks", "admit"),
            [
                keys.rate(a.user_id, RATE_ROUTE),
                keys.idem(a.idem_digest),
                keys.user_lock(a.user_id, a.lock_kind()),
                keys.quota(a.user_id),
                keys.queue_pending(a.paid.queue_id),
                keys.queue_waiting(a.paid.queue_id),
                keys.queue_pending(a.free.queue_id),
                keys.queue_waiting(a.free.queue_id),
                keys.task(a.task_id),
                keys.events(a.user_id, a.service_id, a.task_id),
                keys.queue_specs(a.paid.queue_id),
                keys.queue_specs(a.free.queue_id),
                keys.rate_address(a.client_address, RATE_ROUTE),
                keys.queue_runs(a.paid.queue_id),
                keys.queue_runs(a.free.queue_id),
                *paid_pools,
                *free_pools,
            ],
            [
                a.now_ms,
                limit,
                s.rate_window_s * 1000,
                a.task_id,
                s.idem_ttl_s * 1000,
                s.paid_task_cost,
                s.queue_max_pending,
                s.queue_retry_after_s,
                score,
                s.task_ttl_s,
                s.events_ttl_s,
                s.user_lock_ttl_s * 1000,
                a.user_id,
                a.template,
                a.service_id,
                a.lang,
                a.priority,
                *_route_args(a.paid),
                *_route_args(a.free),
                a.idem_digest,
                a.spec().model_dump_json(),
                len(paid_pools),
                s.rate_trial_address_limit if a.address_limited() else 0,
                a.forced_tier or "",
                a.step,
                *limits,
            ],
        )
        kind = reply[0]
        if kind == "rate_limited":
            raise RateLimited(retry_after=int(reply[1]), limit=limit, window=s.rate_window_s)
        if kind == "locked":
            running = str(reply[1])
            raise TaskAlreadyRunning(task_id=running, events_url=f"/api/tasks/{running}/events")
        if kind == "queue_full":
            raise QueueFull(retry_after=int(reply[1]), tier=str(reply[2]))
        tier = cast(Tier, reply[2])
        expected = int(reply[7]) if kind == "admitted" else -1
        return Admitted(
            task_id=str(reply[1]),
            tier=tier,
            route=a.paid if tier == "paid" else a.free,
            position=int(reply[6]) or None,
            existing=kind == "existing",
            expected_wait_s=expected if expected >= 0 else None,
        )

    async def abort(self, a: Admission, admitted: Admitted) -> bool:
        """Undo an admission whose publish failed: refund, unlock, unqueue, forget.

        Returns:
            True when the task was undone (it was still queued).
        """
        reply = await run_script(
            self.redis,
            load_script("lib.tasks", "abort"),
            [
                keys.task(a.task_id),
                keys.idem(a.idem_digest),
                keys.user_lock(a.user_id, a.lock_kind()),
                keys.quota(a.user_id),
                keys.queue_pending(admitted.route.queue_id),
                keys.queue_waiting(admitted.route.queue_id),
                keys.rate(a.user_id, RATE_ROUTE),
                keys.events(a.user_id, a.service_id, a.task_id),
                keys.queue_specs(admitted.route.queue_id),
                keys.rate_address(a.client_address, RATE_ROUTE),
            ],
            [a.task_id],
        )
        return int(reply) == 1

    async def cancel(self, task_id: str, user_id: str, now_ms: int) -> TaskView:
        """Cancel a queued task: refund, unlock, unqueue (the late delivery is skipped).

        Raises:
            NotFound: no such task for this user.
            TaskNotCancellable: it has started or finished.
        """
        fields = await self._owned(task_id, user_id)
        reply = await run_script(
            self.redis,
            load_script("lib.tasks", "cancel"),
            [
                keys.task(task_id),
                keys.queue_pending(fields["queue"]),
                keys.queue_waiting(fields["queue"]),
                keys.user_lock(
                    user_id,
                    lock_kind(fields["service"], fields["template"], fields.get("step", "")),
                ),
                keys.quota(user_id),
                keys.events(user_id, fields["service"], task_id),
                keys.idem(fields.get("idem", "")),
                keys.queue_specs(fields["queue"]),
                keys.service(fields.get("service", "")),
                keys.services_due(),
            ],
            [task_id, user_id, now_ms, self.settings.events_ttl_s],
        )
        if reply[0] == "not_found":
            raise NotFound(task_id=task_id)
        if reply[0] == "not_cancellable":
            raise TaskNotCancellable(status=str(reply[1]))
        fields.update(status="cancelled", finished_ms=str(now_ms))
        return _view(fields, None)

    async def get(self, task_id: str, user_id: str) -> TaskView:
        """The task's state, for its owner only.

        Raises:
            NotFound: no such task, or it belongs to someone else.
        """
        fields = await self._owned(task_id, user_id)
        position = None
        if fields["status"] == "queued":
            rank = await self.redis.execute("ZRANK", keys.queue_waiting(fields["queue"]), task_id)
            position = int(rank) + 1 if rank is not None else None
        return _view(fields, position)

    async def _owned(self, task_id: str, user_id: str) -> dict[str, str]:
        """The task's fields; NotFound unless it exists and belongs to `user_id`."""
        fields = pairs_to_dict(await self.redis.execute("HGETALL", keys.task(task_id)))
        if not fields or fields.get("user") != user_id:
            raise NotFound(task_id=task_id)
        return fields

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
                    *limits,
                ],
            )
            kind = reply[0]
            if kind in ("head", "follow"):
                candidate = TaskMessage.from_spec(str(reply[2]), ticket.tier)
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


def _route_args(r: Route) -> list[str]:
    return [r.queue_id, ",".join(r.models), r.mode, r.modality]
