"""A service's live state in Redis: admission, its steps' tasks, its transitions, its close.

Postgres keeps what lasts (lib/services/store.py); this keeps what moves: the stage a
service is in, how many steps are left, which task runs each step, and the due set of
transitions recorded but not yet carried out (see `keys.services_due`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from lib import keys
from lib.errors import RateLimited, TooManyPendingServices
from lib.redis.port import RedisPort, load_script, pairs_to_dict, run_script
from lib.routing import Tier
from lib.settings import Settings

RATE_ROUTE = "services"
Stage = Literal["summaries", "advancing", "steps", "finishing", "failing", "closed"]


@dataclass(frozen=True)
class ServiceAdmission:
    """Everything the admission of one service needs."""

    service_id: str
    user_id: str
    user_kind: Literal["trial", "user"]
    depth: str
    lang: str
    idem_digest: str
    summaries_to_run: int  # summaries not answered from the cache
    now_ms: int
    client_address: str = ""


@dataclass(frozen=True)
class Admitted:
    """A new service (`existing` False) or the one the same request made before."""

    service_id: str
    existing: bool
    tier: Tier = "free"
    cost: int = 0


@dataclass(frozen=True)
class LiveService:
    """A service's live state as the hash holds it."""

    service_id: str
    user_id: str
    status: str
    stage: Stage
    depth: str
    lang: str
    tier: Tier
    cost: int
    left: int
    tasks: dict[str, str]  # step -> task id ('' for a cached step)
    ended: dict[str, str]  # step -> how it ended (done, failed, cancelled)
    error_step: str
    error_code: str
    refunded: int
    idem: str


def _live(fields: dict[str, str]) -> LiveService:
    return LiveService(
        service_id=fields["id"],
        user_id=fields.get("user", ""),
        status=fields.get("status", ""),
        stage=cast(Stage, fields.get("stage", "closed")),
        depth=fields.get("depth", "a"),
        lang=fields.get("lang", "en"),
        tier=cast(Tier, fields.get("tier", "free")),
        cost=int(fields.get("cost", "0")),
        left=int(fields.get("left", "0")),
        tasks={k[5:]: v for k, v in fields.items() if k.startswith("task:")},
        ended={k[5:]: v for k, v in fields.items() if k.startswith("step:")},
        error_step=fields.get("error_step", ""),
        error_code=fields.get("error_code", ""),
        refunded=int(fields.get("refunded", "0")),
        idem=fields.get("idem", ""),
    )


class ServiceLive:
    """The service scripts over a RedisPort."""

    def __init__(self, redis: RedisPort, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    def _windows(self, a: ServiceAdmission) -> list[str]:
        return [keys.rate(a.user_id, RATE_ROUTE), keys.rate_address(a.client_address, RATE_ROUTE)]

    async def admit(self, a: ServiceAdmission) -> Admitted:
        """Rate limit, idempotency, pending limit and the tier (debited once) in one trip.

        Raises:
            RateLimited: too many services created in the window.
            TooManyPendingServices: the caller has the most services in progress.
        """
        s = self.settings
        trial = a.user_kind == "trial"
        limit = s.rate_trial_limit if trial else s.rate_user_limit
        reply = await run_script(
            self.redis,
            load_script("lib.services", "service_admit"),
            [
                *self._windows(a),
                keys.idem(a.idem_digest),
                keys.services_pending(a.user_id),
                keys.quota(a.user_id),
                keys.service(a.service_id),
                keys.service_events(a.user_id, a.service_id),
            ],
            [
                a.now_ms,
                limit,
                s.rate_window_s * 1000,
                s.rate_trial_address_limit if trial and a.client_address else 0,
                s.idem_ttl_s * 1000,
                s.service_max_pending,
                s.service_costs.get(a.depth, 0),
                a.service_id,
                a.user_id,
                a.depth,
                a.lang,
                a.summaries_to_run,
                s.task_ttl_s,
                s.events_ttl_s,
                a.idem_digest,
            ],
        )
        kind = reply[0]
        if kind == "rate_limited":
            raise RateLimited(retry_after=int(reply[1]), limit=limit, window=s.rate_window_s)
        if kind == "too_many":
            raise TooManyPendingServices(max_pending=int(reply[1]))
        if kind == "existing":
            return Admitted(str(reply[1]), existing=True)
        return Admitted(a.service_id, False, cast(Tier, str(reply[1])), int(reply[2]))

    async def abort(self, a: ServiceAdmission) -> bool:
        """Undo an admission whose fan-out failed: refund, unpend, forget."""
        reply = await run_script(
            self.redis,
            load_script("lib.services", "service_abort"),
            [
                *self._windows(a),
                keys.idem(a.idem_digest),
                keys.services_pending(a.user_id),
                keys.quota(a.user_id),
                keys.service(a.service_id),
                keys.service_events(a.user_id, a.service_id),
            ],
            [a.service_id],
        )
        return int(reply) == 1

    async def get(self, service_id: str) -> LiveService | None:
        """The live state, or None when there is none (never made, or expired)."""
        fields = pairs_to_dict(await self.redis.execute("HGETALL", keys.service(service_id)))
        return _live(fields) if fields else None

    async def announce(
        self,
        live: LiveService,
        step: str,
        task_id: str,
        *,
        cached_result: str = "",
        now_ms: int = 0,
    ) -> bool:
        """Record a step's task (or its cached result, ending the step) and tell the readers.

        Once per step: a repeat (a transition carried out again) changes nothing.
        """
        reply = await run_script(
            self.redis,
            load_script("lib.services", "service_announce"),
            [
                keys.service(live.service_id),
                keys.service_events(live.user_id, live.service_id),
                keys.services_due(),
            ],
            [step, task_id, self.settings.events_ttl_s, cached_result, live.service_id, now_ms],
        )
        return int(reply) == 1

    async def advance(self, service_id: str, later_steps: int) -> int:
        """Switch to the later steps (1 now, 0 already, -1 not advancing)."""
        reply = await run_script(
            self.redis,
            load_script("lib.services", "service_advance"),
            [keys.service(service_id)],
            [later_steps],
        )
        return int(reply)

    async def close(
        self, live: LiveService, status: Literal["done", "error"], now_ms: int, error: str = ""
    ) -> tuple[bool, int]:
        """End the service; an error refunds it once. (closed now?, units refunded)."""
        reply = await run_script(
            self.redis,
            load_script("lib.services", "service_close"),
            [
                keys.service(live.service_id),
                keys.service_events(live.user_id, live.service_id),
                keys.services_pending(live.user_id),
                keys.services_due(),
                keys.quota(live.user_id),
                keys.idem(live.idem),
            ],
            [live.service_id, status, now_ms, self.settings.events_ttl_s, error],
        )
        return int(reply[0]) == 1, int(reply[1])

    async def confirm(self, service_id: str) -> None:
        """A transition was carried out: it leaves the due set."""
        await self.redis.execute("ZREM", keys.services_due(), service_id)

    async def is_due(self, service_id: str) -> bool:
        """Whether the service has a transition recorded and not yet carried out."""
        return await self.redis.execute("ZSCORE", keys.services_due(), service_id) is not None

    async def due(self, *, older_than_ms: int, limit: int = 5) -> list[str]:
        """Services whose transition was recorded before `older_than_ms` and not confirmed."""
        found: Any = await self.redis.execute(
            "ZRANGEBYSCORE", keys.services_due(), "-inf", older_than_ms, "LIMIT", 0, limit
        )
        return [str(x) for x in found or []]
