"""The routing table: template × tier (× has image) → model, queue, worker mode, fallbacks.

Producer and worker both read this module; it imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from lib.settings import Settings

Tier = Literal["paid", "free"]
Modality = Literal["text", "vision"]
Mode = Literal["stream", "batch"]
Provider = Literal["deepseek", "zhipu"]
QueueId = Literal[
    "q_deepseek_chat",
    "q_deepseek_reasoner",
    "q_glm_flash",
    "q_glm_vision_paid",
    "q_glm_vision_free",
]
ModelId = Literal[
    "deepseek-chat", "deepseek-reasoner", "glm-4.5", "glm-4.5-flash", "glm-4.1v-thinking-flash"
]
Template = Literal[
    "resume_summary",
    "detailed_resume_summary",
    "job_summary",
    "job_match",
    "resume_customize",
    "interview_prep",
]

TEMPLATES: tuple[Template, ...] = get_args(Template)
QUEUES: tuple[QueueId, ...] = get_args(QueueId)
MODELS: tuple[ModelId, ...] = get_args(ModelId)
TIERS: tuple[Tier, ...] = ("paid", "free")

MODES: dict[Template, Mode] = {
    "resume_summary": "batch",
    "detailed_resume_summary": "batch",
    "job_summary": "batch",
    "job_match": "stream",
    "resume_customize": "batch",
    "interview_prep": "stream",
}

PROVIDERS: dict[ModelId, Provider] = {
    "deepseek-chat": "deepseek",
    "deepseek-reasoner": "deepseek",
    "glm-4.5": "zhipu",
    "glm-4.5-flash": "zhipu",
    "glm-4.1v-thinking-flash": "zhipu",
}

# Paid text: DeepSeek first, then Zhipu's glm-4.5.
_PAID_TEXT: dict[Template, tuple[ModelId, QueueId]] = {
    "resume_summary": ("deepseek-chat", "q_deepseek_chat"),
    "detailed_resume_summary": ("deepseek-reasoner", "q_deepseek_reasoner"),
    "job_summary": ("deepseek-chat", "q_deepseek_chat"),
    "job_match": ("deepseek-chat", "q_deepseek_chat"),
    "resume_customize": ("deepseek-chat", "q_deepseek_chat"),
    "interview_prep": ("deepseek-chat", "q_deepseek_chat"),
}
_FALLBACKS: dict[tuple[ModelId, Tier], tuple[ModelId, ...]] = {
    ("deepseek-chat", "paid"): ("glm-4.5",),
    ("deepseek-reasoner", "paid"): ("glm-4.5",),
}
_VISION_QUEUES: dict[Tier, QueueId] = {"paid": "q_glm_vision_paid", "free": "q_glm_vision_free"}
VISION_MODEL: ModelId = "glm-4.1v-thinking-flash"
# Templates that accept a job description as an image.
VISION_TEMPLATES: frozenset[Template] = frozenset({"job_summary"})


@dataclass(frozen=True)
class Route:
    """Where one task runs: fixed at admission, never changed afterwards."""

    template: Template
    tier: Tier
    modality: Modality
    mode: Mode
    queue_id: QueueId
    model_id: ModelId
    fallbacks: tuple[ModelId, ...]

    @property
    def models(self) -> tuple[ModelId, ...]:
        """The primary model, then its fallbacks in order."""
        return (self.model_id, *self.fallbacks)

    @property
    def path(self) -> str:
        """The worker endpoint QStash delivers this task to."""
        return f"/api/worker/{self.tier}/{self.modality}/{self.mode}"


def route(template: Template, tier: Tier, has_image: bool = False) -> Route:
    """The route of a template for a tier.

    Raises:
        KeyError: the template is unknown.
    """
    mode = MODES[template]
    if has_image:
        return Route(template, tier, "vision", mode, _VISION_QUEUES[tier], VISION_MODEL, ())
    if tier == "paid":
        model, queue = _PAID_TEXT[template]
    else:
        model, queue = "glm-4.5-flash", "q_glm_flash"
    return Route(template, tier, "text", mode, queue, model, _FALLBACKS.get((model, tier), ()))


def slot_limit(settings: Settings, model: ModelId) -> int:
    """How many calls to `model` may run at once (per tier pool)."""
    if PROVIDERS[model] == "deepseek":
        return settings.deepseek_max_workers
    if model == "glm-4.5":
        return settings.glm_max_workers
    if model == "glm-4.5-flash":
        return settings.glm_flash_max_workers
    return settings.glm_vision_max_workers


def flow_control_key(model: ModelId, tier: Tier) -> str:
    """QStash flow-control key: one per model slot pool."""
    return f"{model}.{tier}"


def all_pools() -> list[tuple[ModelId, Tier]]:
    """Every (model, tier) slot pool the table can use."""
    pools: set[tuple[ModelId, Tier]] = set()
    for template in TEMPLATES:
        for tier in TIERS:
            for has_image in (False, True):
                if has_image and template not in VISION_TEMPLATES:
                    continue
                r = route(template, tier, has_image)
                pools.update((m, tier) for m in r.models)
    return sorted(pools)
