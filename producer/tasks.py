"""Task submission, status and cancel: `POST /api/tasks`, `GET|DELETE /api/tasks/{id}`."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.auth import Identity
from lib.clock import now_ms
from lib.errors import InvalidRequest, PriorityNotAllowed, UnsupportedLanguage
from lib.field_errors import field_error, from_validation
from lib.http.errors import request_lang
from lib.http.json_body import read_json
from lib.i18n import LANGS, normalize_lang
from lib.qstash.publisher import Publisher
from lib.routing import Route, route
from lib.settings import Settings
from lib.tasks.admission import PRIORITY_MAX, Admission
from lib.tasks.store import TaskStore
from lib.tasks.submit import submit as submit_task
from lib.templates.variables import has_image, validate_variables
from producer.identity import client_address, identity

logger = logging.getLogger(__name__)

DEFAULT_SERVICE = "default"


class SubmitRequest(BaseModel):
    """The body of `POST /api/tasks`."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, max_length=64)
    variables: dict[str, Any]
    lang: str | None = None
    # Key-safe: it becomes part of the event stream's key name.
    service_id: str = Field(
        DEFAULT_SERVICE, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$"
    )
    # None: the server's priority for the template (`TEMPLATE_PRIORITY`); a caller may
    # only lower it (docs/decisions.md, "Priority").
    priority: int | None = Field(None, ge=0, le=PRIORITY_MAX)


def effective_priority(settings: Settings, ident: Identity, req: SubmitRequest) -> int:
    """The task's priority: the server's for the template, or lower if the caller asks.

    Raises:
        PriorityNotAllowed: the caller asked for more than it may have.
    """
    allowed = 0 if ident.kind == "trial" else settings.template_priority.get(req.template, 0)
    if req.priority is None:
        return allowed
    if req.priority > allowed:
        raise PriorityNotAllowed(
            f"priority {req.priority} > {allowed}",
            max_priority=allowed,
            fields=[field_error("priority", "too_large", max=allowed)],
        )
    return req.priority


def idem_digest(
    ident: Identity,
    req: SubmitRequest,
    variables: dict[str, Any],
    lang: str,
    paid: Route,
    free: Route,
) -> str:
    """Idempotency digest: user + normalized body (sorted-keys JSON) + models + service/step."""
    normalized = json.dumps(
        {
            "user": ident.user_id,
            "template": req.template,
            "variables": variables,
            "lang": lang,
            "service": req.service_id,
            "models": [list(paid.models), list(free.models)],
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(normalized.encode()).hexdigest()


async def _parse(request: Request) -> SubmitRequest:
    """The body, validated.

    Raises:
        InvalidRequest: a field is missing, unknown or invalid (`fields` lists each).
        UnsupportedLanguage: `lang` is not one we speak (`supported`); the error itself
            answers in the cookie's or `Accept-Language`'s language.
    """
    raw = await read_json(request)
    lang = raw.get("lang") if isinstance(raw, dict) else None
    if isinstance(lang, str):
        if normalize_lang(lang) is None:
            supported = list(LANGS)
            raise UnsupportedLanguage(
                f"lang {lang[:20]!r}",
                supported=supported,
                fields=[field_error("lang", "not_supported", supported=supported)],
            )
        # Errors from here on answer in the language the body asks for.
        request.state.explicit_lang = lang
    try:
        return SubmitRequest.model_validate(raw)
    except ValidationError as exc:
        fields = from_validation(exc, whole="body")
        detail = "; ".join(f"{f['field']}: {f['code']}" for f in fields)
        raise InvalidRequest(detail, fields=fields) from None


def _urls(task_id: str) -> dict[str, str]:
    return {
        "status_url": f"/api/tasks/{task_id}",
        "events_url": f"/api/tasks/{task_id}/events",
    }


async def submit(request: Request) -> JSONResponse:
    """`POST /api/tasks`: validate, admit (1 round trip), publish, remember the message id."""
    settings: Settings = request.app.state.settings
    store: TaskStore = request.app.state.store
    publisher: Publisher = request.app.state.publisher
    ident = identity(request)
    req = await _parse(request)
    lang = request_lang(request)
    validated = validate_variables(req.template, req.variables)
    variables = validated.model_dump(mode="json", exclude_none=True)
    image = has_image(validated)
    paid = route(req.template, "paid", image)  # type: ignore[arg-type]  # validated above
    free = route(req.template, "free", image)  # type: ignore[arg-type]
    admission = Admission(
        task_id=uuid.uuid4().hex,
        user_id=ident.user_id,
        user_kind=ident.kind,
        service_id=req.service_id,
        template=req.template,
        lang=lang,
        priority=effective_priority(settings, ident, req),
        idem_digest=idem_digest(ident, req, variables, lang, paid, free),
        paid=paid,
        free=free,
        now_ms=now_ms(),
        variables=variables,
        client_address=client_address(request, settings.trusted_proxies),
    )
    admitted = await submit_task(store, publisher, settings, admission)
    urls = _urls(admitted.task_id)
    body: dict[str, Any] = {
        "task_id": admitted.task_id,
        "tier": admitted.tier,
        "queue_id": admitted.route.queue_id,
        "model_id": admitted.route.model_id,
        "mode": admitted.route.mode,
        "position": admitted.position,
        "expected_wait_s": admitted.expected_wait_s,
        "existing": admitted.existing,
        **urls,
    }
    return JSONResponse(body, status_code=202, headers={"Location": urls["status_url"]})


async def status(request: Request) -> JSONResponse:
    """`GET /api/tasks/{id}`: the owner's view of a task (404 for anyone else)."""
    store: TaskStore = request.app.state.store
    view = await store.get(request.path_params["task_id"], identity(request).user_id)
    return JSONResponse({**view.public(), **_urls(view.task_id)})


async def cancel(request: Request) -> JSONResponse:
    """`DELETE /api/tasks/{id}`: cancel a queued task.

    Its message stays at the queue: every delivery is a ticket for the queue, and this
    one may be serving another task already (docs/decisions.md, "Tickets").
    """
    store: TaskStore = request.app.state.store
    task_id = request.path_params["task_id"]
    view = await store.cancel(task_id, identity(request).user_id, now_ms())
    return JSONResponse({**view.public(), **_urls(view.task_id)})
