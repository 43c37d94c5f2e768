"""QStash-facing HTTP: every delivery is signature-checked before anything else happens."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lib.body_limit import WORKER_RULES, body_limit_middleware
from lib.errors import ConfigError, InvalidSignature, ServiceUnavailable
from lib.http_errors import EXCEPTION_HANDLERS, error_body
from lib.i18n import message
from lib.messages import TaskMessage
from lib.qstash_verify import Verifier
from lib.redisport import RedisPort
from lib.settings import Settings, get_settings, secret
from lib.tasks import Outcome, TaskStore
from worker.delivery import Reply, Runner, deliver, now_ms

logger = logging.getLogger(__name__)

# QStash moves a message straight to the DLQ on 489 with this header: a body that can
# never be processed is not retried.
NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}


def _verifier(settings: Settings) -> Verifier:
    current = secret(settings.qstash_current_signing_key)
    nxt = secret(settings.qstash_next_signing_key)
    if not current or not nxt:
        raise ConfigError("QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY are required")
    return Verifier(current, nxt)


def _public_url(settings: Settings, request: Request) -> str:
    """The URL QStash signed (`sub`): the configured public base, never the Host header."""
    base = (settings.app_base_url or "").rstrip("/")
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{base}{request.url.path}{query}"


def _reply(reply: Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)


def _non_retryable(detail: str) -> JSONResponse:
    body = error_body("invalid_request", "en", {"detail": detail})
    return JSONResponse(body, status_code=489, headers=NON_RETRYABLE)


def create_app(
    settings: Settings | None = None,
    *,
    redis: RedisPort | None = None,
    runner: Runner | None = None,
    verifier: Verifier | None = None,
) -> Starlette:
    """The worker app. Clients are injected or built from settings at start-up."""
    settings = settings or get_settings()
    state: dict[str, Any] = {"redis": redis, "runner": runner, "verifier": verifier}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned: list[RedisPort] = []
        if state["redis"] is None:
            from lib.redis_factory import create_redis

            client = create_redis(settings)
            state["redis"] = client
            owned.append(client)
        if state["runner"] is None and settings.worker_preload_llm:
            # Long-lived processes pay LangChain's import (~1 s) at start-up. Serverless
            # ones don't: the combined app also serves the producer, whose cold start
            # must stay free of the LLM layer; the first delivery builds the runner.
            llm_runner()
        if state["verifier"] is None:
            state["verifier"] = _verifier(settings)
        try:
            yield
        finally:
            for client in owned:
                await client.aclose()
            closer = getattr(state["runner"], "aclose", None)
            if closer is not None:
                await closer()

    def llm_runner() -> Runner:
        if state["runner"] is None:
            from worker.llm import LLMRunner

            state["runner"] = LLMRunner(settings, state["redis"])
            import langchain_openai  # noqa: F401  (built on the first chat model otherwise)
        return state["runner"]  # type: ignore[no-any-return]

    async def verified_body(request: Request) -> bytes:
        body = await request.body()
        verifier: Verifier = state["verifier"]
        verifier.verify(
            request.headers.get("upstash-signature"), body, _public_url(settings, request)
        )
        return body

    async def task_endpoint(request: Request) -> Response:
        body = await verified_body(request)
        try:
            msg = TaskMessage.model_validate_json(body)
        except ValidationError as exc:
            logger.warning("undeliverable message body: %s", exc.error_count())
            return _non_retryable("message body is not a task")
        p = request.path_params
        if (msg.tier, msg.modality, msg.mode) != (p["tier"], p["modality"], p["mode"]):
            return _non_retryable("task delivered to the wrong worker route")
        reply = await deliver(
            msg,
            message_id=request.headers.get("upstash-message-id", ""),
            redis=state["redis"],
            settings=settings,
            runner=llm_runner(),
        )
        response = _reply(reply)
        if reply.status == 200 and settings.database_url is not None:
            response.background = BackgroundTask(_drain_usage, state["redis"], settings)
        return response

    async def failed_endpoint(request: Request) -> Response:
        """QStash failure callback: retries are exhausted; fail the task and refund."""
        body = await verified_body(request)
        try:
            payload = json.loads(body)
            source = base64.b64decode(payload.get("sourceBody", ""))
            msg = TaskMessage.model_validate_json(source)
        except (ValueError, binascii.Error, ValidationError):
            return JSONResponse({"status": "ignored"}, status_code=200)
        store = TaskStore(state["redis"], settings)
        outcome = Outcome(
            "failed",
            error_code="delivery_failed",
            error_message=message("delivery_failed", msg.lang),
        )
        finished = await store.finish(msg, None, outcome, now_ms())
        logger.warning("task %s failed delivery (finish=%s)", msg.task_id, finished)
        return JSONResponse({"task_id": msg.task_id, "finished": finished == 1})

    async def drain_endpoint(request: Request) -> Response:
        """Scheduled call: flush queued usage rows to Postgres."""
        await verified_body(request)
        flushed = await _drain_usage(state["redis"], settings)
        return JSONResponse({"flushed": flushed})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    handlers = dict(EXCEPTION_HANDLERS)
    handlers[InvalidSignature] = _unauthorized
    return Starlette(
        routes=[
            Route("/api/worker/failed", failed_endpoint, methods=["POST"]),
            Route("/api/worker/drain", drain_endpoint, methods=["POST"]),
            Route("/api/worker/healthz", health, methods=["GET"]),
            Route(
                "/api/worker/{tier:str}/{modality:str}/{mode:str}", task_endpoint, methods=["POST"]
            ),
        ],
        lifespan=lifespan,
        exception_handlers=handlers,
        # Unsigned calls get 401 before their body is read; bodies are capped (413).
        middleware=[body_limit_middleware(settings, WORKER_RULES)],
    )


async def _unauthorized(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_body("invalid_signature", "en", {}), status_code=401)


async def _drain_usage(redis: RedisPort, settings: Settings) -> int:
    """Flush usage rows; Postgres being down keeps them queued for the next drain."""
    url = secret(settings.database_url)
    if not url:
        return 0
    from lib.usage import drain

    try:
        return await drain(redis, url)
    except ServiceUnavailable as exc:
        logger.warning("usage drain skipped (%s); rows stay queued", exc.detail)
        return 0
