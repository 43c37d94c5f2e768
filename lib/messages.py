"""The push-queue message body: what the producer publishes and the worker receives."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from lib.i18n import Lang
from lib.routing import Modality, Mode, ModelId, QueueId, Template, Tier


class TaskMessage(BaseModel):
    """One task as delivered to `/api/worker/{tier}/{modality}/{mode}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    user_id: str
    service_id: str
    template: Template
    lang: Lang
    variables: dict[str, Any]
    tier: Tier
    modality: Modality
    mode: Mode
    queue_id: QueueId
    models: tuple[ModelId, ...]
