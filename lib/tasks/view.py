"""A task's live state as its owner reads it: the task hash's fields, one place for them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, cast

from lib.redis.port import RedisPort

Status = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})


class Field:
    """Names of the task hash's fields that Python reads (the Lua scripts write them)."""

    USER = "user"
    SERVICE = "service"
    STATUS = "status"
    QUEUE = "queue"
    TEMPLATE = "template"
    STEP = "step"
    IDEM = "idem"


@dataclass(frozen=True)
class StreamPlace:
    """Where a task's events are, for its owner: the stream, and its queue while it waits."""

    key: str
    finished: bool  # the task had reached a terminal status when the request came in
    task_id: str = ""
    waiting_key: str = ""  # its queue's waiting order, while it is queued ('' otherwise)

    async def position(self, redis: RedisPort) -> int | None:
        """Where the task stands in its queue now (None once it has left it)."""
        if not self.waiting_key:
            return None
        rank = await redis.execute("ZRANK", self.waiting_key, self.task_id)
        return int(rank) + 1 if rank is not None else None


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


def view_of(fields: dict[str, str], position: int | None) -> TaskView:
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
