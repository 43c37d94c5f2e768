"""The push-queue message body: what the producer publishes and the worker receives."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lib.i18n import Lang
from lib.routing import Modality, Mode, ModelId, QueueId, Route, Template, Tier, route


class TaskSpec(BaseModel):
    """What a task is, whatever its route: kept in Redis while it is unfinished.

    A delivery may start another task of its queue than its own (the head of the
    waiting order, `lib/tasks/lua/start.lua`); the worker rebuilds that task's message from
    its spec and the queue's route.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    user_id: str
    service_id: str
    template: Template
    lang: Lang
    variables: dict[str, Any]
    modality: Modality
    # The request's idempotency digest: a failed task releases it, so the same request
    # may be sent again (`idem:{digest}` answers only while queued, running or done).
    idem: str = ""
    # The service step this task is ('' for a task of its own): its end moves the service on.
    step: str = ""


class TaskMessage(TaskSpec):
    """One task as delivered to `/api/worker/{tier}/{modality}/{mode}`: its spec and route."""

    tier: Tier
    mode: Mode
    queue_id: QueueId
    models: tuple[ModelId, ...] = Field(min_length=1)
    # 0 for the message the producer published; n for the n-th ticket reissued after its
    # predecessor was dead-lettered (worker/app.py, failure callback).
    generation: int = Field(0, ge=0)

    @classmethod
    def build(cls, spec: TaskSpec, r: Route, *, generation: int = 0) -> TaskMessage:
        """The message of `spec` on route `r`."""
        return cls(
            **spec.model_dump(exclude={"modality"}),
            tier=r.tier,
            modality=r.modality,
            mode=r.mode,
            queue_id=r.queue_id,
            models=r.models,
            generation=generation,
        )

    @classmethod
    def from_spec(cls, raw: str, tier: Tier) -> TaskMessage:
        """Rebuild a task's message from its stored spec (JSON) on its queue's tier.

        Raises:
            pydantic.ValidationError: the spec is not a task spec.
        """
        spec = TaskSpec.model_validate_json(raw)
        return cls.build(spec, route(spec.template, tier, spec.modality == "vision"))

    def spec(self) -> TaskSpec:
        """The route-free part of the message."""
        return TaskSpec(**self.model_dump(include=set(TaskSpec.model_fields)))
