"""Task lifecycle in Redis: one method per Lua script, typed results and domain errors.

`TaskStore` is the one way to a task's state: the producer's side here (admit, abort,
cancel, get, locate), the worker's in `lib.tasks.schedule`.
"""

from __future__ import annotations

from typing import cast

from lib import keys
from lib.errors import NotFound, QueueFull, RateLimited, TaskAlreadyRunning, TaskNotCancellable
from lib.redis.port import RedisPort, load_script, pairs_to_dict, run_script
from lib.routing import Tier, slot_limit
from lib.settings import Settings
from lib.tasks.admission import (
    RATE_ROUTE,
    Admission,
    Admitted,
    lock_kind,
    route_args,
    waiting_score,
)
from lib.tasks.schedule import Scheduling
from lib.tasks.view import TERMINAL, Field, StreamPlace, TaskView, view_of


def _lock_of(fields: dict[str, str]) -> str:
    return lock_kind(fields.get("service", ""), fields["template"], fields.get("step", ""))


class TaskStore(Scheduling):
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
                *route_args(a.paid),
                *route_args(a.free),
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
        return view_of(fields, None)

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
        return view_of(fields, position)

    async def locate(self, task_id: str, user_id: str) -> StreamPlace:
        """The task's event stream (and queue, while it waits), for its owner only.

        One HMGET.

        Raises:
            NotFound: no such task, or it belongs to someone else.
        """
        user, service, status, queue = await self.redis.execute(
            "HMGET", keys.task(task_id), Field.USER, Field.SERVICE, Field.STATUS, Field.QUEUE
        )
        if user is None or user != user_id:
            raise NotFound(task_id=task_id)
        waiting = keys.queue_waiting(queue) if status == "queued" and queue else ""
        stream = keys.events(user, service or "", task_id)
        return StreamPlace(stream, status in TERMINAL, task_id, waiting)

    async def _owned(self, task_id: str, user_id: str) -> dict[str, str]:
        """The task's fields; NotFound unless it exists and belongs to `user_id`."""
        fields = pairs_to_dict(await self.redis.execute("HGETALL", keys.task(task_id)))
        if not fields or fields.get("user") != user_id:
            raise NotFound(task_id=task_id)
        return fields
