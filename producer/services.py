"""Services: `POST /api/service/create`, `GET|DELETE /api/service/{id}`, `GET /api/services`,
and the service's event stream `GET /api/service/{id}/events` (SSE or long-poll).

Imported on the first request for one of them (producer.app `lazy`): the storage and
orchestration modules stay out of a task-only cold start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from lib import events
from lib.clock import now_ms
from lib.errors import InvalidRequest, NotFound, RedisUnavailable, UnsupportedLanguage
from lib.field_errors import from_validation
from lib.http.errors import request_lang
from lib.http.json_body import read_json
from lib.i18n import LANGS, normalize_lang
from lib.services import plan
from lib.services.events import ServiceEvent, ServiceReader
from lib.services.live import ServiceLive
from lib.services.orchestrate import CreateRequest, Orchestrator
from lib.services.store import Service, ServiceStore
from lib.settings import Settings
from lib.tasks.store import TaskStore
from lib.tasks.view import TaskView
from lib.users.owner import Owner
from producer.identity import client_address, identity

SERVICE_ID = r"^[0-9a-fA-F-]{32,36}$"
ASSET_ID = Field(min_length=32, max_length=36, pattern=SERVICE_ID)


class CreateBody(BaseModel):
    """The body of `POST /api/service/create`."""

    model_config = ConfigDict(extra="forbid")

    resume_id: str = ASSET_ID
    job_id: str = ASSET_ID
    detailed_resume_id: str | None = Field(None, min_length=32, max_length=36, pattern=SERVICE_ID)
    lang: str | None = None
    depth: Literal["a", "b", "c"] = "a"


def _orchestrator(request: Request) -> Orchestrator:
    state = request.app.state
    return Orchestrator(state.settings, state.redis, state.pg, state.publisher)


def _urls(service_id: str) -> dict[str, str]:
    return {
        "status_url": f"/api/service/{service_id}",
        "events_url": f"/api/service/{service_id}/events",
    }


async def create(request: Request) -> JSONResponse:
    """`POST /api/service/create`: prechecks, one admission, the summaries fanned out."""
    ident = identity(request)
    raw = await read_json(request)
    if "lang" not in request.query_params and isinstance(raw, dict):
        # The body's `lang` is the results' language; the page's own (`?lang=`) wins for
        # the messages.
        if isinstance(raw.get("lang"), str):
            request.state.explicit_lang = raw["lang"]
    try:
        body = CreateBody.model_validate(raw)
    except ValidationError as exc:
        fields = from_validation(exc, whole="body")
        detail = "; ".join(f"{f['field']}: {f['code']}" for f in fields)
        raise InvalidRequest(detail, fields=fields) from None
    if body.lang is not None and body.lang not in LANGS:
        raise UnsupportedLanguage(f"unsupported lang {body.lang!r}", supported=list(LANGS))
    settings: Settings = request.app.state.settings
    owner = Owner(ident.user_id, ident.kind, request_lang(request))
    req = CreateRequest(
        resume_id=body.resume_id,
        job_id=body.job_id,
        detailed_resume_id=body.detailed_resume_id,
        lang=normalize_lang(body.lang),
        depth=body.depth,
    )
    created = await _orchestrator(request).create(
        owner, req, client_address=client_address(request, settings.trusted_proxies)
    )
    urls = _urls(created.service_id)
    payload: dict[str, Any] = {
        "service_id": created.service_id,
        "status": "running",
        "depth": created.depth,
        "tier": created.tier,
        "lang": created.lang,
        "existing": created.existing,
        **urls,
    }
    return JSONResponse(payload, status_code=202, headers={"Location": urls["status_url"]})


async def _steps(request: Request, service: Service) -> list[dict[str, Any]]:
    """Each step of the service in order: its live task when it has one, else its record."""
    store: TaskStore = request.app.state.store
    live = await ServiceLive(request.app.state.redis, request.app.state.settings).get(service.id)
    tasks = live.tasks if live else {}
    recorded = {row.step: row for row in service.steps}
    out: list[dict[str, Any]] = []
    for step in plan.all_steps(service.depth, service.detailed_resume_id is not None):
        row = recorded.get(step)
        task_id = tasks.get(step) or (row.task_id if row else None) or None
        item: dict[str, Any] = {
            "step": step,
            "task_id": task_id,
            "status": row.status if row else "pending",
            "position": None,
            "model": row.model if row else None,
            "tokens": row.tokens if row else None,
            "cost": float(row.cost) if row and row.cost is not None else None,
            "degraded": False,
            "cached": bool(row and row.status == "cached"),
            "result": row.result if row else None,
        }
        view = await _view(store, task_id, service.user_id) if task_id else None
        if view is not None:
            usage = view.usage or {}
            item.update(
                status=view.status,
                position=view.position,
                model=view.model_id,
                tokens=(usage.get("usage") or {}).get("total_tokens", item["tokens"]),
                cost=usage.get("cost", item["cost"]),
                degraded=view.degraded,
                result=view.result if view.result is not None else item["result"],
            )
        out.append(item)
    return out


async def _view(store: TaskStore, task_id: str, user_id: str) -> TaskView | None:
    try:
        return await store.get(task_id, user_id)
    except NotFound:
        return None  # expired from Redis: Postgres has its record


def _service_json(service: Service) -> dict[str, Any]:
    return {
        "service_id": service.id,
        "status": service.status,
        "depth": service.depth,
        "tier": service.tier,
        "lang": service.lang,
        "cost": float(service.cost),
        "error": service.error,
        "resume_id": service.resume_id,
        "job_id": service.job_id,
        "detailed_resume_id": service.detailed_resume_id,
        "created_at": service.created_at.isoformat(),
        "updated_at": service.updated_at.isoformat(),
        **_urls(service.id),
    }


async def status(request: Request) -> JSONResponse:
    """`GET /api/service/{id}`: the owner's service with each step (404 for anyone else).

    A transition recorded and never carried out (a crash) is carried out here when it has
    waited longer than a lease: the owner reading the service is one of its way out.
    """
    user_id = identity(request).user_id
    service_id = request.path_params["service_id"]
    service = await ServiceStore(request.app.state.pg).get(service_id, user_id)
    settings: Settings = request.app.state.settings
    orchestrator = _orchestrator(request)
    if service.status in ("created", "running") and await orchestrator.live.is_due(service.id):
        await orchestrator.repair(older_than_ms=now_ms() - settings.lease_ms)
        service = await ServiceStore(request.app.state.pg).get(service_id, user_id)
    return JSONResponse({**_service_json(service), "steps": await _steps(request, service)})


async def list_services(request: Request) -> JSONResponse:
    """`GET /api/services`: the caller's services, newest first."""
    user_id = identity(request).user_id
    found = await ServiceStore(request.app.state.pg).list(user_id)
    return JSONResponse({"services": [_service_json(s) for s in found]})


async def cancel(request: Request) -> JSONResponse:
    """`DELETE /api/service/{id}`: cancel the steps that have not started; refund."""
    user_id = identity(request).user_id
    service_id = request.path_params["service_id"]
    await _orchestrator(request).cancel(service_id, user_id)
    service = await ServiceStore(request.app.state.pg).get(service_id, user_id)
    return JSONResponse(_service_json(service))


# -- events ------------------------------------------------------------------------------


async def _reader(request: Request, cursor: str | None) -> tuple[ServiceReader, bool]:
    """The reader for the owner (one HMGET of the live state), and whether it has ended."""
    redis = request.app.state.redis
    service_id = request.path_params["service_id"]
    user_id = identity(request).user_id
    live = await ServiceLive(redis, request.app.state.settings).get(service_id)
    if live is None or live.user_id != user_id:
        raise NotFound(service_id=service_id)
    reader = ServiceReader(redis, user_id, service_id)
    await reader.open(cursor)
    return reader, live.stage == "closed"


def _sse(event: ServiceEvent) -> bytes:
    head = f"id: {event.id}\n" if event.id else ""  # a position update has no id
    return f"{head}event: {event.type}\ndata: {event.raw}\n\n".encode()


async def _stream(
    reader: ServiceReader, finished: bool, settings: Settings
) -> AsyncIterator[bytes]:
    started = time.monotonic()
    margin = min(0.5, 0.1 * settings.sse_max_seconds)
    deadline = started + max(0.0, settings.sse_max_seconds - margin)
    next_beat = started + settings.sse_heartbeat_s
    next_position = started
    yield events.sse_retry(settings.sse_retry_ms)
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        wake = min(deadline, next_beat, next_position if reader.waiting else deadline)
        wait_ms = 0 if finished else max(1, int((wake - now) * 1000))
        try:
            batch = await reader.read(block_ms=wait_ms if reader.redis.kind == "tcp" else None)
            if reader.waiting and time.monotonic() >= next_position:
                # While a step waits, its place in the queue is looked up now and then.
                batch += await reader.moved()
                next_position = time.monotonic() + settings.sse_position_refresh_s
        except RedisUnavailable:
            break
        for event in batch:
            yield _sse(event)
            if event.terminal:
                return
        if not batch:
            if finished:
                return
            if reader.redis.kind != "tcp":
                await asyncio.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= next_beat:
            yield events.sse_heartbeat()
            next_beat = time.monotonic() + settings.sse_heartbeat_s
    yield events.sse_retry(settings.sse_retry_ms)


async def stream(request: Request) -> Response:
    """`GET /api/service/{id}/events`: SSE (resumes after `Last-Event-ID`) or long-poll."""
    settings: Settings = request.app.state.settings
    q = request.query_params
    if "after" in q or "wait" in q:
        return await _long_poll(request, settings)
    cursor = request.headers.get("last-event-id") or q.get("last_event_id")
    reader, finished = await _reader(request, cursor)
    return StreamingResponse(
        _stream(reader, finished, settings),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _long_poll(request: Request, settings: Settings) -> JSONResponse:
    q = request.query_params
    try:
        wait = float(q.get("wait", "0"))
    except ValueError:
        raise InvalidRequest("wait must be a number of seconds", reason="wait") from None
    wait = min(max(0.0, wait), settings.longpoll_max_wait_s)
    reader, finished = await _reader(request, q.get("after"))
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        block = max(1, int(left * 1000)) if left > 0 and not finished else None
        batch = await reader.read(block_ms=block if reader.redis.kind == "tcp" else None)
        if batch or finished or time.monotonic() >= deadline:
            break
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    done = any(e.terminal for e in batch) or (finished and not batch)
    return JSONResponse(
        {
            "events": [{"id": e.id, "type": e.type, "data": e.data} for e in batch],
            "last_id": reader.cursor,
            "done": done,
        },
        headers={"Cache-Control": "no-store"},
    )
