"""Services through the pipeline: create one, and carry out each of its transitions.

A service's summaries are admitted as tasks at creation (or answered from the summary
cache) and run in parallel; when the last one ends, the finish script records the
`advance` transition (lib/tasks/lua/service_step.lua) and whoever finished it carries it out
here: the summaries are written back, and the depth's steps are admitted with them as
context. The last step's end records `finish`, a step that fails records `fail`. No
request waits in between: the worker that ends a task carries the transition out, and
a transition not carried out (a crash) stays in the due set, where a redelivery or the
service's owner reading it finds it. Every transition is idempotent: steps are admitted
under an idempotency digest of (service, step), their messages published under their
task ids, results recorded once, the service closed (and refunded) once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from lib.assets.store import Asset, AssetStore
from lib.assets.summary_cache import CacheKey, SummaryCache
from lib.clock import now_ms
from lib.db.pg import Postgres
from lib.errors import NotFound, SlotlineError, TaskNotCancellable
from lib.i18n import Lang
from lib.qstash.publisher import Publisher
from lib.redis.port import RedisPort
from lib.routing import Template, route
from lib.services import plan, prechecks
from lib.services.live import LiveService, ServiceAdmission, ServiceLive
from lib.services.store import ServiceStore
from lib.settings import Settings
from lib.tasks.admission import Admission
from lib.tasks.store import TaskStore
from lib.tasks.submit import submit
from lib.tasks.view import TaskView
from lib.templates.prompts import prompt_version
from lib.templates.variables import has_image, validate_variables
from lib.users.owner import Owner

logger = logging.getLogger(__name__)

_ASSET_OF: dict[str, Literal["resume", "detailed_resume", "jd"]] = {
    "resume_summary": "resume",
    "detailed_resume_summary": "detailed_resume",
    "job_summary": "jd",
}


@dataclass(frozen=True)
class CreateRequest:
    """The body of `POST /api/service/create`, validated."""

    resume_id: str
    job_id: str
    detailed_resume_id: str | None
    lang: Lang | None
    depth: plan.Depth


@dataclass(frozen=True)
class Created:
    """The service made (or found: `existing`) by a create call."""

    service_id: str
    existing: bool
    tier: str
    depth: str
    lang: str


@dataclass(frozen=True)
class _Inputs:
    """A service's assets and the texts its steps read."""

    resume: Asset
    job: Asset
    detailed: Asset | None
    sources: plan.Sources

    def of(self, step: str) -> Asset | None:
        kind = _ASSET_OF.get(step)
        return {"resume": self.resume, "jd": self.job, "detailed_resume": self.detailed}.get(
            kind or ""
        )


def request_digest(owner: Owner, req: CreateRequest, lang: Lang) -> str:
    """The idempotency digest of a create: the owner and the normalized body."""
    body = {
        "user": owner.user_id,
        "resume": req.resume_id,
        "job": req.job_id,
        "detailed": req.detailed_resume_id,
        "lang": lang,
        "depth": req.depth,
        "kind": "service",
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _step_digest(service_id: str, step: str) -> str:
    return hashlib.sha256(f"service:{service_id}:{step}".encode()).hexdigest()


class Orchestrator:
    """Creates services and carries out their transitions (producer and worker alike)."""

    def __init__(
        self, settings: Settings, redis: RedisPort, pg: Postgres, publisher: Publisher
    ) -> None:
        self.settings = settings
        self.live = ServiceLive(redis, settings)
        self.tasks = TaskStore(redis, settings)
        self.services = ServiceStore(pg)
        self.assets = AssetStore(pg)
        self.cache = SummaryCache(pg)
        self.publisher = publisher

    # -- create -------------------------------------------------------------------------

    async def create(self, owner: Owner, req: CreateRequest, *, client_address: str) -> Created:
        """Check, admit (tier decided and debited once), fan the summaries out.

        Raises:
            NotFound: an asset is missing or not the caller's.
            TextTooShort, SectionsMissing, LanguageMismatch: a precheck failed.
            RateLimited, TooManyPendingServices: the admission refused it.
            QueueFull, PublishFailed: a summary could not be queued (nothing is kept).
        """
        inputs = await self._inputs(
            owner.user_id, req.resume_id, req.job_id, req.detailed_resume_id
        )
        lang = req.lang or inputs.resume.lang
        prechecks.check(_prechecked(inputs), lang, self.settings)
        summaries = plan.summary_steps(inputs.detailed is not None)
        digest = request_digest(owner, req, lang)
        admission = ServiceAdmission(
            service_id=uuid.uuid4().hex,
            user_id=owner.user_id,
            user_kind=owner.kind,
            depth=req.depth,
            lang=lang,
            idem_digest=digest,
            summaries_to_run=len(summaries),
            now_ms=now_ms(),
            client_address=client_address,
        )
        got = await self.live.admit(admission)
        if got.existing:
            state = await self.live.get(got.service_id)
            tier = state.tier if state else "free"
            return Created(got.service_id, True, tier, req.depth, lang)
        sid = admission.service_id
        try:
            await self.services.create(
                owner,
                resume_id=req.resume_id,
                job_id=req.job_id,
                detailed_resume_id=req.detailed_resume_id,
                depth=req.depth,
                lang=lang,
                tier=got.tier,
                cost=got.cost,
                idem_key=digest,
                service_id=sid,
            )
        except BaseException:
            await self.live.abort(admission)
            raise
        state = await self.live.get(sid)
        assert state is not None
        try:
            for step in summaries:
                await self._start_summary(state, inputs, step)
        except SlotlineError as exc:
            logger.warning("service %s: a summary could not be queued (%s)", sid, exc.code)
            await self._fail(state, exc.code)
            raise
        await self.services.set_status(sid, "running")
        await self.carry_out(sid)  # every summary cached: advance at once
        return Created(sid, False, got.tier, req.depth, lang)

    async def _inputs(
        self, user_id: str, resume_id: str | None, job_id: str | None, detailed_id: str | None
    ) -> _Inputs:
        if not resume_id or not job_id:
            raise NotFound("a service's résumé or job description is gone")
        resume = await self.assets.get("resume", resume_id, user_id)
        job = await self.assets.get("jd", job_id, user_id, with_image=True)
        detailed = None
        if detailed_id:
            detailed = await self.assets.get("detailed_resume", detailed_id, user_id)
        image = None
        if job.image is not None and job.image_mime:
            import base64

            image = f"data:{job.image_mime};base64," + base64.b64encode(job.image).decode()
        sources = plan.Sources(
            resume_text=resume.text or "",
            job_text=job.text,
            job_image=image,
            detailed_text=detailed.text if detailed else None,
        )
        return _Inputs(resume, job, detailed, sources)

    def _cache_key(self, state: LiveService, inputs: _Inputs, step: str) -> CacheKey:
        asset = inputs.of(step)
        assert asset is not None
        r = route(step, state.tier, asset.has_image)  # type: ignore[arg-type]
        return CacheKey(
            user_id=state.user_id,
            content_sha256=asset.content_sha256,
            template=step,
            lang=state.lang,
            model=r.model_id,
            prompt_version=prompt_version(step, state.lang),
        )

    async def _start_summary(self, state: LiveService, inputs: _Inputs, step: str) -> None:
        """A summary from the cache, or as a task on the service's tier."""
        cached = await self.cache.get(self._cache_key(state, inputs, step))
        if cached is not None:
            await self.services.claim_step(state.service_id, step)  # type: ignore[arg-type]
            result = json.dumps(cached.result, ensure_ascii=False)
            await self.live.announce(state, step, "", cached_result=result, now_ms=now_ms())
            await self.services.record_result(
                state.service_id,
                step,  # type: ignore[arg-type]
                status="cached",
                result=cached.result,
                tokens=cached.tokens,
            )
            return
        variables = plan.summary_variables(step, inputs.sources)  # type: ignore[arg-type]
        await self._start_step(state, step, variables)

    async def _start_step(self, state: LiveService, step: str, variables: dict[str, Any]) -> None:
        """Admit and publish one step's task (again, harmlessly, on a repeat)."""
        template: Template = step  # type: ignore[assignment]
        validated = validate_variables(template, variables)
        image = has_image(validated)
        a = Admission(
            task_id=uuid.uuid4().hex,
            user_id=state.user_id,
            user_kind="user",
            service_id=state.service_id,
            template=template,
            lang=state.lang,
            priority=self.settings.template_priority.get(template, 0),
            idem_digest=_step_digest(state.service_id, step),
            paid=route(template, "paid", image),
            free=route(template, "free", image),
            now_ms=now_ms(),
            variables=validated.model_dump(mode="json", exclude_none=True),
            forced_tier=state.tier,
            step=step,
        )
        admitted = await submit(self.tasks, self.publisher, self.settings, a)
        await self.live.announce(state, step, admitted.task_id, now_ms=now_ms())
        await self.services.claim_step(state.service_id, template)
        await self.services.record_task(
            state.service_id,
            template,
            admitted.task_id,
            model=admitted.route.model_id,
        )

    # -- transitions ----------------------------------------------------------------------

    async def carry_out(self, service_id: str) -> None:
        """Carry out the service's recorded transition, if it has one.

        Raises:
            ServiceUnavailable: Redis or Postgres could not be reached (the transition
                stays in the due set).
        """
        state = await self.live.get(service_id)
        if state is None:
            return
        if state.stage == "advancing":
            await self._advance(state)
        elif state.stage == "steps" and await self.live.is_due(service_id):
            await self._advance(state)  # a crash after the switch: admit what is missing
        elif state.stage == "finishing":
            await self._finish(state)
        elif state.stage == "failing":
            await self._fail(state, state.error_code or "llm_error")

    async def repair(self, *, older_than_ms: int) -> int:
        """Carry out transitions recorded before `older_than_ms` and never confirmed."""
        due = await self.live.due(older_than_ms=older_than_ms)
        for service_id in due:
            try:
                await self.carry_out(service_id)
            except SlotlineError as exc:
                logger.warning("service %s: repair failed (%s)", service_id, exc.code)
        return len(due)

    async def _summaries(self, state: LiveService) -> dict[str, Any]:
        """Each ended summary's result: from its task, or the cached one recorded."""
        found: dict[str, Any] = {}
        service = await self.services.get(state.service_id, state.user_id)
        recorded = {s.step: s for s in service.steps}  # read after this advance's records
        for step in plan.SUMMARIES:
            task_id = state.tasks.get(step)
            if task_id:
                view = await self._task(task_id, state.user_id)
                if view is not None and view.status == "done":
                    found[step] = view.result
            elif step in recorded and recorded[step].result is not None:
                found[step] = recorded[step].result
        return found

    async def _task(self, task_id: str, user_id: str) -> TaskView | None:
        try:
            return await self.tasks.get(task_id, user_id)
        except NotFound:
            return None

    async def _record(self, state: LiveService, inputs: _Inputs | None, step: str) -> None:
        """Write one step's task result to Postgres (and a summary back to its asset)."""
        task_id = state.tasks.get(step)
        if not task_id:
            return
        view = await self._task(task_id, state.user_id)
        if view is None or view.status not in ("done", "failed", "cancelled"):
            return
        usage = view.usage or {}
        tokens = int((usage.get("usage") or {}).get("total_tokens") or 0)
        ok = view.status == "done"
        await self.services.record_result(
            state.service_id,
            step,  # type: ignore[arg-type]
            status="done" if ok else "error",
            result=view.result,
            model=view.model_id,
            tokens=tokens,
            cost=usage.get("cost"),
            error=(view.error or {}).get("code") if not ok else None,
        )
        asset = inputs.of(step) if inputs else None
        if not ok or asset is None:
            return
        kind = _ASSET_OF[step]
        await self.assets.set_summary(kind, asset.id, state.user_id, view.result, tokens)
        if not view.degraded:
            await self.cache.put(self._cache_key(state, inputs, step), view.result, tokens)  # type: ignore[arg-type]

    async def _advance(self, state: LiveService) -> None:
        service = await self.services.get(state.service_id, state.user_id)
        try:
            inputs = await self._inputs(
                state.user_id, service.resume_id, service.job_id, service.detailed_resume_id
            )
        except NotFound:
            await self._fail(state, "not_found")  # an asset was deleted meanwhile
            return
        for step in plan.summary_steps(inputs.detailed is not None):
            await self._record(state, inputs, step)
        summaries = await self._summaries(state)
        later = plan.later_steps(state.depth)  # type: ignore[arg-type]
        if await self.live.advance(state.service_id, len(later)) < 0:
            return
        for step in later:
            variables = plan.step_variables(step, inputs.sources, summaries, state.lang)  # type: ignore[arg-type]
            await self._start_step(state, step, variables)
        await self.live.confirm(state.service_id)
        logger.info("service %s: summaries done, %s admitted", state.service_id, ",".join(later))

    async def _finish(self, state: LiveService) -> None:
        for step in plan.later_steps(state.depth):  # type: ignore[arg-type]
            await self._record(state, None, step)
        await self.services.set_status(state.service_id, "done")
        await self.live.close(state, "done", now_ms())
        logger.info("service %s done", state.service_id)

    async def _fail(self, state: LiveService, code: str) -> None:
        """Cancel what has not started, record what ended, close (refunded once)."""
        state = await self.live.get(state.service_id) or state  # every task announced
        for step, task_id in state.tasks.items():
            if not task_id:
                continue
            try:
                await self.tasks.cancel(task_id, state.user_id, now_ms())
            except (TaskNotCancellable, NotFound):
                pass  # running or ended: it ends on its own
            await self._record(state, None, step)
        await self.services.set_status(state.service_id, "error", error=code)
        closed, refunded = await self.live.close(state, "error", now_ms(), code)
        if closed:
            logger.warning("service %s failed (%s); refunded %s", state.service_id, code, refunded)

    async def cancel(self, service_id: str, user_id: str) -> None:
        """`DELETE /api/service/{id}`: cancel what has not started; refund.

        Raises:
            NotFound: no such service for this user.
        """
        await self.services.get(service_id, user_id)  # owner check
        state = await self.live.get(service_id)
        if state is None or state.stage == "closed":
            return
        await self._fail(state, "cancelled")


def _prechecked(inputs: _Inputs) -> list[prechecks.Asset]:
    found = [
        prechecks.Asset("resume", inputs.resume.lang, inputs.resume.text),
        prechecks.Asset("jd", inputs.job.lang, inputs.job.text),
    ]
    if inputs.detailed is not None:
        found.append(prechecks.Asset("detailed_resume", inputs.detailed.lang, inputs.detailed.text))
    return found
