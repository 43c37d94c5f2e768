"""Services and their steps in Postgres: create (idempotent, pending limit), read owner-only,
move status, claim a step once, record its task and result.

The orchestration (which steps, when, on which tier) is the caller's; this module only
keeps the rows and the few invariants that need the database: a step is claimed once
(`(service_id, step)` unique), status moves forward only (a terminal status is set once,
so a refund on `error` runs once), and creating a service checks the owner's pending
count and the idempotency key under a per-owner lock, so concurrent creates cannot pass
the limit or make the same service twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from lib.db.pg import Postgres, parse_id
from lib.errors import NotFound
from lib.routing import Template
from lib.users.owner import UPSERT_OWNER, Owner, owner_params

ServiceStatus = Literal["created", "running", "done", "error"]
Depth = Literal["a", "b", "c"]
Step = Template  # every step is one task template
StepStatus = Literal["created", "running", "done", "error", "cached"]
PENDING: tuple[ServiceStatus, ...] = ("created", "running")
# Allowed moves: a status may only be set from these.
_FROM: dict[ServiceStatus, tuple[ServiceStatus, ...]] = {
    "created": (),
    "running": ("created",),
    "done": ("created", "running"),
    "error": ("created", "running"),
}
_STEP_TERMINAL = ("done", "error", "cached")
# Advisory lock namespace (the two-key form; lib/db/migrate.py's migration lock uses the other).
_LOCK_NAMESPACE = 0x73657276  # "serv"
MAX_LIST = 200


@dataclass(frozen=True)
class ServiceStep:
    """One step of a service: its task, model, tokens, cost and result."""

    step: Step
    task_id: str | None
    status: StepStatus
    model: str | None
    tokens: int | None
    cost: Decimal | None
    result: Any
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Service:
    """A service row (with its steps when read with `get`)."""

    id: str
    user_id: str
    resume_id: str | None
    job_id: str | None
    detailed_resume_id: str | None
    status: ServiceStatus
    depth: Depth
    lang: str
    tier: str | None
    cost: Decimal
    error: str | None
    idem_key: str | None
    created_at: datetime
    updated_at: datetime
    steps: tuple[ServiceStep, ...] = field(default=())


@dataclass(frozen=True)
class Creation:
    """What `create` did: made `service`, found the `existing` one for the idempotency
    key, or refused (`service` None) because the owner has `pending` services already."""

    service: Service | None
    existing: bool
    pending: int


_COLUMNS = (
    "id, user_id, resume_id, job_id, detailed_resume_id, status, depth, lang, tier, cost,"
    " error, idem_key, created_at, updated_at"
)
_STEP_COLUMNS = (
    "step, task_id, status, model, tokens, cost, result_json, error, created_at, updated_at"
)


def _hex(value: Any) -> str | None:
    return value.hex if value is not None else None


def _service(row: dict[str, Any], steps: tuple[ServiceStep, ...] = ()) -> Service:
    return Service(
        id=row["id"].hex,
        user_id=row["user_id"],
        resume_id=_hex(row["resume_id"]),
        job_id=_hex(row["job_id"]),
        detailed_resume_id=_hex(row["detailed_resume_id"]),
        status=row["status"],
        depth=row["depth"],
        lang=row["lang"],
        tier=row["tier"],
        cost=row["cost"],
        error=row["error"],
        idem_key=row["idem_key"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        steps=steps,
    )


def _step(row: dict[str, Any]) -> ServiceStep:
    return ServiceStep(
        step=row["step"],
        task_id=row["task_id"],
        status=row["status"],
        model=row["model"],
        tokens=row["tokens"],
        cost=row["cost"],
        result=row["result_json"],
        error=row["error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _uuid_or_none(value: str | None) -> Any:
    if value is None:
        return None
    key = parse_id(value)
    if key is None:
        raise NotFound(asset_id=value)
    return key


class ServiceStore:
    """The `services` and `service_steps` tables."""

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg

    async def create(
        self,
        owner: Owner,
        *,
        resume_id: str,
        job_id: str,
        detailed_resume_id: str | None,
        depth: Depth,
        lang: str,
        tier: str | None = None,
        cost: Decimal | int = 0,
        idem_key: str | None = None,
        max_pending: int | None = None,
        service_id: str | None = None,
    ) -> Creation:
        """Create a service (status `created`) for assets the owner owns.

        `service_id` names it (the id its live state in Redis was admitted under);
        Postgres makes one otherwise.

        In one transaction under a per-owner lock: the service with the same `idem_key`
        is returned if there is one; else, with `max_pending` set, the owner's pending
        (`created`/`running`) services are counted and the create refused at the limit.

        Returns:
            The new or existing service, or a refusal with the pending count.

        Raises:
            NotFound: an asset id is malformed, missing, or someone else's.
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        ids = {
            "resume": _uuid_or_none(resume_id),
            "job": _uuid_or_none(job_id),
            "detailed": _uuid_or_none(detailed_resume_id),
        }
        params = {
            **owner_params(owner),
            **ids,
            "depth": depth,
            "lang": lang,
            "tier": tier,
            "cost": cost,
            "idem": idem_key,
            "ns": _LOCK_NAMESPACE,
            "sid": _uuid_or_none(service_id),
        }
        async with self.pg.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%(ns)s, hashtext(%(user)s))", params)
            if idem_key is not None:
                cur = await conn.execute(
                    "SELECT " + _COLUMNS + " FROM services"
                    " WHERE user_id = %(user)s AND idem_key = %(idem)s",
                    params,
                )
                row = await cur.fetchone()
                if row is not None:
                    return Creation(_service(row), existing=True, pending=-1)
            cur = await conn.execute(
                "SELECT count(*) AS n FROM services"
                " WHERE user_id = %(user)s AND status IN ('created', 'running')",
                params,
            )
            counted = await cur.fetchone()
            pending = int(counted["n"]) if counted else 0
            if max_pending is not None and pending >= max_pending:
                return Creation(None, existing=False, pending=pending)
            cur = await conn.execute(
                "WITH owner AS (" + UPSERT_OWNER + ")"
                " INSERT INTO services (id, user_id, resume_id, job_id, detailed_resume_id,"
                " depth, lang, tier, cost, idem_key)"
                " SELECT coalesce(%(sid)s::uuid, gen_random_uuid()), %(user)s, %(resume)s::uuid,"
                " %(job)s::uuid, %(detailed)s::uuid,"
                " %(depth)s, %(lang)s, %(tier)s::text, %(cost)s::numeric, %(idem)s::text"
                " WHERE EXISTS (SELECT 1 FROM resumes WHERE id = %(resume)s AND user_id = %(user)s)"
                " AND EXISTS (SELECT 1 FROM job_descriptions"
                "   WHERE id = %(job)s AND user_id = %(user)s)"
                " AND (%(detailed)s::uuid IS NULL OR EXISTS (SELECT 1 FROM detailed_resumes"
                "   WHERE id = %(detailed)s AND user_id = %(user)s))"
                " RETURNING " + _COLUMNS,
                params,
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFound("an asset of the service is missing or not the caller's")
        return Creation(_service(row), existing=False, pending=pending + 1)

    async def get(self, service_id: str, user_id: str) -> Service:
        """The service with its steps, for its owner only.

        Raises:
            NotFound: no such service, or it is someone else's.
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        key = parse_id(service_id)
        if key is None:
            raise NotFound(service_id=service_id)
        params = {"id": key, "user": user_id}
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT " + _COLUMNS + " FROM services WHERE id = %(id)s AND user_id = %(user)s",
                params,
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(service_id=service_id)
            cur = await conn.execute(
                "SELECT " + _STEP_COLUMNS + " FROM service_steps WHERE service_id = %(id)s"
                " ORDER BY created_at, step",
                params,
            )
            steps = tuple(_step(r) for r in await cur.fetchall())
        return _service(row, steps)

    async def list(self, user_id: str, *, limit: int = 50) -> list[Service]:
        """The owner's services, newest first (without their steps).

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT " + _COLUMNS + " FROM services WHERE user_id = %(user)s"
                " ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
                {"user": user_id, "limit": max(1, min(limit, MAX_LIST))},
            )
            return [_service(r) for r in await cur.fetchall()]

    async def count_pending(self, user_id: str) -> int:
        """The owner's services in `created` or `running`.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM services"
                " WHERE user_id = %(user)s AND status IN ('created', 'running')",
                {"user": user_id},
            )
            row = await cur.fetchone()
        return int(row["n"]) if row else 0

    async def set_status(
        self, service_id: str, status: ServiceStatus, *, error: str | None = None
    ) -> bool:
        """Move a service forward (`created → running → done | error`).

        Returns:
            True when this call changed it; False when it was already there or past it
            (a terminal status is set once: act on True only, e.g. refund once).

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        allowed = list(_FROM[status])
        if not allowed:
            return False
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "UPDATE services SET status = %(status)s, error = coalesce(%(error)s, error),"
                " updated_at = now() WHERE id = %(id)s AND status = ANY(%(allowed)s)",
                {"status": status, "error": error, "id": parse_id(service_id), "allowed": allowed},
            )
            return cur.rowcount == 1

    async def set_billing(self, service_id: str, *, tier: str, cost: Decimal | int) -> None:
        """Record the tier and cost decided for the service.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            await conn.execute(
                "UPDATE services SET tier = %(tier)s, cost = %(cost)s, updated_at = now()"
                " WHERE id = %(id)s",
                {"tier": tier, "cost": cost, "id": parse_id(service_id)},
            )

    async def delete(self, service_id: str, user_id: str) -> Service:
        """Delete the owner's service and its steps.

        Returns:
            The service as it was (with its steps: their tasks may need cancelling).

        Raises:
            NotFound: no such service, or it is someone else's.
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        service = await self.get(service_id, user_id)
        async with self.pg.connection() as conn:
            await conn.execute(
                "DELETE FROM services WHERE id = %(id)s AND user_id = %(user)s",
                {"id": parse_id(service_id), "user": user_id},
            )
        return service

    # -- steps ----------------------------------------------------------------------------

    async def claim_step(self, service_id: str, step: Step) -> bool:
        """Claim a step: True for exactly one caller (duplicate deliveries get False).

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO service_steps (service_id, step) VALUES (%(id)s, %(step)s)"
                " ON CONFLICT (service_id, step) DO NOTHING",
                {"id": parse_id(service_id), "step": step},
            )
            return cur.rowcount == 1

    async def record_task(
        self, service_id: str, step: Step, task_id: str, *, model: str | None = None
    ) -> bool:
        """Attach the pipeline task that runs a claimed step (status `running`).

        Returns:
            False when the step is not claimed or has ended.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "UPDATE service_steps SET task_id = %(task)s, model = coalesce(%(model)s, model),"
                " status = 'running', updated_at = now()"
                " WHERE service_id = %(id)s AND step = %(step)s AND status <> ALL(%(ended)s)",
                {
                    "task": task_id,
                    "model": model,
                    "id": parse_id(service_id),
                    "step": step,
                    "ended": list(_STEP_TERMINAL),
                },
            )
            return cur.rowcount == 1

    async def record_result(
        self,
        service_id: str,
        step: Step,
        *,
        status: Literal["done", "error", "cached"],
        result: Any = None,
        model: str | None = None,
        tokens: int | None = None,
        cost: Decimal | float | None = None,
        error: str | None = None,
    ) -> bool:
        """End a step with its result (once: a second call changes nothing).

        Returns:
            True when this call ended the step.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        from psycopg.types.json import Jsonb

        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "UPDATE service_steps SET status = %(status)s, result_json = %(result)s,"
                " model = coalesce(%(model)s, model), tokens = %(tokens)s, cost = %(cost)s,"
                " error = %(error)s, updated_at = now()"
                " WHERE service_id = %(id)s AND step = %(step)s AND status <> ALL(%(ended)s)",
                {
                    "status": status,
                    "result": Jsonb(result) if result is not None else None,
                    "model": model,
                    "tokens": tokens,
                    "cost": cost,
                    "error": error,
                    "id": parse_id(service_id),
                    "step": step,
                    "ended": list(_STEP_TERMINAL),
                },
            )
            return cur.rowcount == 1

    async def step_of_task(self, task_id: str) -> tuple[str, Step] | None:
        """The (service id, step) a pipeline task runs, or None.

        Raises:
            ServiceUnavailable: Postgres is not configured or unreachable.
        """
        async with self.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT service_id, step FROM service_steps WHERE task_id = %(task)s",
                {"task": task_id},
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return row["service_id"].hex, cast(Step, row["step"])
