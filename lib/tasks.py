"""Task lifecycle in Redis: one method per Lua script, typed results and domain errors."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from lib import keys
from lib.errors import NotFound, QueueFull, RateLimited, TaskAlreadyRunning, TaskNotCancellable
from lib.messages import TaskMessage
from lib.redisport import RedisPort, load_script, pairs_to_dict, run_script
from lib.routing import ModelId, Route, Tier, slot_limit
from lib.settings import Settings

Status = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
PRIORITY_MAX = 9
RATE_ROUTE = "tasks"


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


@dataclass(frozen=True)
class Admitted:
    """The admitted (or idempotently found) task."""

    task_id: str
    tier: Tier
    route: Route
    position: int
    existing: bool


@dataclass(frozen=True)
class StartDecision:
    """What the worker does with a delivery."""

    action: Literal["run", "skip", "wait"]
    reason: str = ""
    model: ModelId | None = None
    pool: str = ""
    lease_id: str = ""
    attempt: int = 0
    restarted: bool = False
    retry_after: int = 0


@dataclass
class Outcome:
    """How an attempt ended, for the finish script."""

    status: Literal["done", "failed", "lost"]
    result: Any = None
    error_code: str = ""
    error_message: str = ""
    done: dict[str, Any] | None = None
    usage_rows: list[dict[str, Any]] = field(default_factory=list)


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
    created_ms: int
    started_ms: int | None
    finished_ms: int | None
    wait_ms: int | None
    result: Any
    error: dict[str, str] | None
    usage: dict[str, Any] | None
    message_id: str | None
    fields: dict[str, str]

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
            "created_ms": self.created_ms,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms,
            "wait_ms": self.wait_ms,
            "result": self.result,
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
        created_ms=int(fields.get("created_ms", "0")),
        started_ms=_int(fields.get("started_ms")),
        finished_ms=_int(fields.get("finished_ms")),
        wait_ms=_int(fields.get("wait_ms")),
        result=_json(fields.get("result")),
        error=error,
        usage=_json(fields.get("usage")),
        message_id=fields.get("message_id") or None,
        fields=fields,
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
        reply = await run_script(
            self.redis,
            load_script("admit"),
            [
                keys.rate(a.user_id, RATE_ROUTE),
                keys.idem(a.idem_digest),
                keys.user_lock(a.user_id, a.template),
                keys.quota(a.user_id),
                keys.queue_pending(a.paid.queue_id),
                keys.queue_waiting(a.paid.queue_id),
                keys.queue_pending(a.free.queue_id),
                keys.queue_waiting(a.free.queue_id),
                keys.task(a.task_id),
                keys.events(a.user_id, a.service_id, a.task_id),
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
            ],
        )
        kind = reply[0]
        if kind == "rate_limited":
            raise RateLimited(retry_after=int(reply[1]), limit=limit, window=s.rate_window_s)
        if kind == "locked":
            raise TaskAlreadyRunning(task_id=str(reply[1]))
        if kind == "queue_full":
            raise QueueFull(retry_after=int(reply[1]), tier=str(reply[2]))
        tier = cast(Tier, reply[2])
        return Admitted(
            task_id=str(reply[1]),
            tier=tier,
            route=a.paid if tier == "paid" else a.free,
            position=int(reply[6]),
            existing=kind == "existing",
        )

    async def abort(self, a: Admission, admitted: Admitted) -> bool:
        """Undo an admission whose publish failed: refund, unlock, unqueue, forget.

        Returns:
            True when the task was undone (it was still queued).
        """
        reply = await run_script(
            self.redis,
            load_script("abort"),
            [
                keys.task(a.task_id),
                keys.idem(a.idem_digest),
                keys.user_lock(a.user_id, a.template),
                keys.quota(a.user_id),
                keys.queue_pending(admitted.route.queue_id),
                keys.queue_waiting(admitted.route.queue_id),
                keys.rate(a.user_id, RATE_ROUTE),
                keys.events(a.user_id, a.service_id, a.task_id),
            ],
            [a.task_id],
        )
        return int(reply) == 1

    async def set_message_id(self, task_id: str, message_id: str) -> None:
        """Remember the push message, so a cancel can delete it at the queue too."""
        await self.redis.execute("HSET", keys.task(task_id), "message_id", message_id)

    async def cancel(self, task_id: str, user_id: str, now_ms: int) -> TaskView:
        """Cancel a queued task: refund, unlock, unqueue (the late delivery is skipped).

        Raises:
            NotFound: no such task for this user.
            TaskNotCancellable: it has started or finished.
        """
        fields = await self._owned(task_id, user_id)
        reply = await run_script(
            self.redis,
            load_script("cancel"),
            [
                keys.task(task_id),
                keys.queue_pending(fields["queue"]),
                keys.queue_waiting(fields["queue"]),
                keys.user_lock(user_id, fields["template"]),
                keys.quota(user_id),
                keys.events(user_id, fields["service"], task_id),
                keys.idem(fields.get("idem", "")),
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

    async def start(self, msg: TaskMessage, *, message_id: str, now_ms: int) -> StartDecision:
        """Decide whether this delivery runs now, and take a slot lease if so."""
        lease_id = uuid.uuid4().hex
        pools = self._pools(msg)
        reply = await run_script(
            self.redis,
            load_script("start"),
            [
                keys.task(msg.task_id),
                keys.queue_waiting(msg.queue_id),
                keys.queue_waits(msg.queue_id),
                keys.events(msg.user_id, msg.service_id, msg.task_id),
                *pools,
            ],
            [
                now_ms,
                self.settings.lease_ms,
                lease_id,
                message_id,
                self.settings.start_retry_after_s,
                self.settings.events_ttl_s,
                msg.task_id,
                *(slot_limit(self.settings, m) for m in msg.models),
                *msg.models,
            ],
        )
        action = reply[0]
        if action == "skip":
            return StartDecision("skip", reason=str(reply[1]))
        if action == "wait":
            return StartDecision("wait", reason=str(reply[2]), retry_after=int(reply[1]))
        index = int(reply[1]) - 1
        return StartDecision(
            "run",
            model=msg.models[index],
            pool=pools[index],
            lease_id=lease_id,
            attempt=int(reply[2]),
            restarted=int(reply[3]) == 1,
        )

    async def renew(self, msg: TaskMessage, decision: StartDecision, now_ms: int) -> bool:
        """Extend the lease; False means another attempt took over (stop working)."""
        reply = await run_script(
            self.redis,
            load_script("renew"),
            [keys.task(msg.task_id), decision.pool],
            [decision.lease_id, now_ms, self.settings.lease_ms],
        )
        return int(reply) == 1

    async def finish(
        self, msg: TaskMessage, lease: StartDecision | None, outcome: Outcome, now_ms: int
    ) -> int:
        """Release everything and write the terminal state. Idempotent.

        Returns:
            1 when this call finished the task, 0 when it was already terminal or gone,
            -1 when a newer attempt owns it (only this attempt's lease was released),
            2 for a "lost" outcome no other attempt has taken over yet: the usage rows
            are recorded and the task stays running, for a redelivery to restart it.
        """
        pool = lease.pool if lease else self._pools(msg)[0]
        result = "" if outcome.result is None else json.dumps(outcome.result, ensure_ascii=False)
        done = json.dumps(outcome.done, ensure_ascii=False) if outcome.done else ""
        rows = json.dumps(outcome.usage_rows, ensure_ascii=False) if outcome.usage_rows else ""
        reply = await run_script(
            self.redis,
            load_script("finish"),
            [
                keys.task(msg.task_id),
                pool,
                keys.queue_pending(msg.queue_id),
                keys.queue_waiting(msg.queue_id),
                keys.user_lock(msg.user_id, msg.template),
                keys.quota(msg.user_id),
                keys.events(msg.user_id, msg.service_id, msg.task_id),
                keys.usage_stream(),
            ],
            [
                lease.lease_id if lease else "",
                outcome.status,
                now_ms,
                msg.task_id,
                result,
                outcome.error_code,
                outcome.error_message,
                done,
                rows,
                self.settings.events_ttl_s,
                self.settings.task_ttl_s,
            ],
        )
        return int(reply)


def _route_args(r: Route) -> list[str]:
    return [r.queue_id, ",".join(r.models), r.mode, r.modality]
