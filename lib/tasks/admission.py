"""A task's admission: what the admit script is given, and what it answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lib.routing import Route, Tier
from lib.tasks.message import TaskSpec

PRIORITY_MAX = 9
RATE_ROUTE = "tasks"


def lock_kind(service_id: str, template: str, step: str) -> str:
    """The user lock's kind: one running task per kind, or per step of one service."""
    return f"{service_id}.{template}" if step else template


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


def route_args(r: Route) -> list[str]:
    return [r.queue_id, ",".join(r.models), r.mode, r.modality]
