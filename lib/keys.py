"""Every Redis key name slotline uses, built in one place.

Scripts never build key names: callers pass each key through KEYS.
"""

from __future__ import annotations


def model_pool(model: str, tier: str) -> str:
    """ZSET of slot leases (member = lease id, score = expiry ms) for one model and tier."""
    return f"lock:model:{model}:{tier}"


def user_lock(user: str, task_kind: str) -> str:
    """Per-user, per-task-kind lock (value = task id)."""
    return f"lock:user:{user}:{task_kind}"


def queue_pending(queue_id: str) -> str:
    """Backpressure counter: tasks admitted to the queue and not yet finished."""
    return f"queue:{queue_id}:pending"


def queue_waiting(queue_id: str) -> str:
    """ZSET of admitted, not yet started tasks (score = priority band + enqueue time)."""
    return f"queue:{queue_id}:waiting"


def queue_specs(queue_id: str) -> str:
    """Hash of the queue's unfinished tasks: task id → the task's spec (JSON).

    A delivery is a ticket for its queue and may start another task than its own: the
    head of the waiting order. This hash gives the worker that task's body.
    """
    return f"queue:{queue_id}:specs"


def queue_waits(queue_id: str) -> str:
    """Capped list of recent queue wait times in ms (for monitoring)."""
    return f"queue:{queue_id}:waits"


def rate(user: str, route: str) -> str:
    """Sliding-window rate limit ZSET for one user and route."""
    return f"rate:{user}:{route}"


def rate_address(address: str, route: str) -> str:
    """Sliding-window rate limit ZSET for one client address and route (trial callers)."""
    return f"rate:ip:{address}:{route}"


def queue_runs(queue_id: str) -> str:
    """Capped list of recent run times in ms (admission's expected wait)."""
    return f"queue:{queue_id}:runs"


def task(task_id: str) -> str:
    """Hash of a task's live state."""
    return f"task:{task_id}"


def events(user: str, service: str, task_id: str) -> str:
    """The task's event stream."""
    return f"cs:events:{user}:{service}:{task_id}"


def events_match(user: str) -> str:
    """SCAN MATCH pattern for every event stream of a user (`cs:events:{user}:*`)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in user)
    return f"cs:events:{escaped}:*"


def events_task_id(key: str) -> str:
    """The task id of an event stream key (its last part: ids and services have no `:`)."""
    return key.rsplit(":", 1)[-1]


def is_service_events(key: str) -> bool:
    """Whether an event stream key is a service's own stream (`…:{service}:service`)."""
    return key.endswith(":service")


def events_service_id(key: str) -> str:
    """The service id of a stream key (`cs:events:{user}:{service}:{task or "service"}`)."""
    return key.rsplit(":", 2)[-2]


def idem(digest: str) -> str:
    """Idempotency key (value = task id)."""
    return f"idem:{digest}"


def quota(user: str) -> str:
    """The user's balance (integer cost units)."""
    return f"quota:{user}"


def usage_stream() -> str:
    """Stream of LLM usage rows waiting to be flushed to Postgres."""
    return "usage:pending"


def usage_drain_lock() -> str:
    """Lock so only one drain flushes the usage stream at a time."""
    return "usage:drain:lock"


def usage_drain_again() -> str:
    """Flag: a drain found the lock held and asks the running one for another pass."""
    return "usage:drain:again"


def qstash_namespace() -> str:
    """Prefix for every key of the local QStash-compatible server."""
    return "lqs:"


def service(service_id: str) -> str:
    """Hash of a service's live state: status, stage, steps and their tasks, tier, cost."""
    return f"svc:{service_id}"


def services_pending(user: str) -> str:
    """ZSET of the user's services that are created or running (the pending limit).

    Score: when each was created; one older than a service's lifetime no longer counts.
    """
    return f"svc:pending:{user}"


def services_due() -> str:
    """ZSET of services whose next transition is recorded but not yet carried out.

    Score: when it was recorded. Whoever finds an old entry (a redelivery, the service's
    owner reading it) carries it out again: every transition is idempotent.
    """
    return "svc:due"


def service_events(user: str, service_id: str) -> str:
    """The service's own event stream (status changes, steps admitted, cached results)."""
    return f"cs:events:{user}:{service_id}:service"
