"""QStash-facing HTTP: every delivery is signature-checked before anything else happens."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lib.clock import now_ms
from lib.errors import InvalidRequest, InvalidSignature, ServiceUnavailable, SlotlineError
from lib.http.body_limit import WORKER_RULES, body_limit_middleware
from lib.http.errors import EXCEPTION_HANDLERS, error_body
from lib.http.json_body import parse_json
from lib.i18n import message
from lib.qstash.publisher import LazyPublisher, Publisher
from lib.qstash.verify import Verifier
from lib.redis.port import RedisPort
from lib.routing import route, slot_limit
from lib.settings import Settings, get_settings, secret
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome
from lib.tasks.store import TaskStore
from worker.delivery import Reply, Runner, deliver

if TYPE_CHECKING:
    from lib.db.pg import Postgres
    from lib.services.orchestrate import Orchestrator

logger = logging.getLogger(__name__)

# QStash moves a message straight to the DLQ on 489 with this header: a body that can
# never be processed is not retried.
NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}


def _redelivered(request: Request) -> bool:
    """QStash's `Upstash-Retried`: this message was delivered before (0 the first time)."""
    return request.headers.get("upstash-retried", "0").strip() not in ("", "0")


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


def _failed_source(body: bytes) -> tuple[TaskMessage, str]:
    """The dead-lettered message and its id from a failure-callback body.

    Raises:
        ValueError: the body is not a failure callback for a task message.
    """
    try:
        payload = parse_json(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("sourceBody"), str):
            raise ValueError("no sourceBody")
        source = base64.b64decode(payload["sourceBody"], validate=True)
        return TaskMessage.model_validate_json(source), str(payload.get("sourceMessageId") or "")
    except (InvalidRequest, ValueError, binascii.Error, ValidationError) as exc:
        raise ValueError(f"not a failure callback: {type(exc).__name__}") from None


class Worker:
    """The worker's clients (injected, or made at start-up) and its endpoints."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis: RedisPort | None,
        runner: Runner | None,
        verifier: Verifier | None,
        publisher: Publisher | None,
    ) -> None:
        self.settings = settings
        self._redis = redis
        self._runner = runner
        self._verifier = verifier
        self._publisher = publisher
        self._services: Orchestrator | None = None
        self._pg: Postgres | None = None

    @property
    def redis(self) -> RedisPort:
        assert self._redis is not None, "the worker's lifespan has not run"
        return self._redis

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Build what was not injected; close what was built here."""
        owned_redis: RedisPort | None = None
        owned_publisher: LazyPublisher | None = None
        if self._redis is None:
            from lib.redis.factory import create_redis

            self._redis = owned_redis = create_redis(self.settings)
        if self._publisher is None:
            self._publisher = owned_publisher = LazyPublisher(self.settings)
        if self._runner is None and self.settings.worker_preload_llm:
            # Long-lived processes pay LangChain's import (~1 s) at start-up. Serverless
            # ones don't: the combined app also serves the producer, whose cold start
            # must stay free of the LLM layer; the first delivery builds the runner.
            self.runner()
        if self._verifier is None:
            self._verifier = Verifier.from_settings(self.settings)
        try:
            yield
        finally:
            closer = getattr(self._runner, "aclose", None)
            if closer is not None:
                await closer()
            if self._pg is not None:
                await self._pg.aclose()
            if owned_publisher is not None:
                await owned_publisher.aclose()
            if owned_redis is not None:
                await owned_redis.aclose()

    def runner(self) -> Runner:
        """The LLM runner, built on first use (LangChain is imported then)."""
        if self._runner is None:
            from worker.llm import LLMRunner

            self._runner = LLMRunner(self.settings, self.redis)
            import langchain_openai  # noqa: F401  (built on the first chat model otherwise)
        return self._runner

    async def verified_body(self, request: Request) -> bytes:
        """The body, once its signature checks out.

        Raises:
            InvalidSignature: missing, forged, expired or for another URL.
        """
        assert self._verifier is not None
        body = await request.body()
        self._verifier.verify(
            request.headers.get("upstash-signature"), body, _public_url(self.settings, request)
        )
        return body

    async def task(self, request: Request) -> Response:
        """`POST /api/worker/{tier}/{modality}/{mode}`: one delivery of a task message."""
        body = await self.verified_body(request)
        try:
            msg = TaskMessage.model_validate_json(body)
        except ValidationError as exc:
            logger.warning("undeliverable message body: %s", exc.error_count())
            return _non_retryable("message body is not a task")
        p = request.path_params
        if (msg.tier, msg.modality, msg.mode) != (p["tier"], p["modality"], p["mode"]):
            return _non_retryable("task delivered to the wrong worker route")
        if _redelivered(request):
            await self._repair_services()
        reply = await deliver(
            msg,
            message_id=request.headers.get("upstash-message-id", ""),
            redis=self.redis,
            settings=self.settings,
            runner=self.runner(),
            on_step=self._service_step,
        )
        response = _reply(reply)
        if reply.status == 200 and self.settings.database_url is not None:
            response.background = BackgroundTask(_drain_usage, self.redis, self.settings)
        return response

    def _orchestrator(self) -> Orchestrator:
        """The service orchestrator, built on the first service task (Postgres is lazy)."""
        if self._services is None:
            from lib.db.pg import Postgres
            from lib.services.orchestrate import Orchestrator

            assert self._publisher is not None
            self._pg = Postgres.from_settings(self.settings)
            self._services = Orchestrator(self.settings, self.redis, self._pg, self._publisher)
        return self._services

    async def _service_step(self, service_id: str) -> None:
        """A service's step ended: carry out what it recorded (start the next steps...)."""
        await self._orchestrator().carry_out(service_id)

    async def _repair_services(self) -> None:
        """A redelivery: a crash may have left a service's transition undone; redo old ones."""
        if self.settings.database_url is None:
            return
        try:
            older = now_ms() - self.settings.lease_ms
            await self._orchestrator().repair(older_than_ms=older)
        except SlotlineError as exc:
            logger.warning("service repair failed (%s)", exc.code)

    async def failed(self, request: Request) -> Response:
        """QStash failure callback: a message's retries are spent (it is dead-lettered).

        Every delivery is a ticket for its queue, so the ticket is replaced while the
        queue has work (up to `TICKET_REISSUES` times); after that the tasks it served
        are failed and refunded — never one with a live attempt (finish refuses those).
        """
        body = await self.verified_body(request)
        try:
            msg, message_id = _failed_source(body)
        except ValueError as exc:
            logger.warning("failure callback ignored: %s", exc)
            return _non_retryable(str(exc))
        store = TaskStore(self.redis, self.settings)
        loss = await store.ticket_lost(msg, message_id)
        if loss.action == "reissue":
            new_id = await self._reissue(msg)
            logger.warning("task %s: dead-lettered message replaced by %s", msg.task_id, new_id)
            return JSONResponse({"task_id": msg.task_id, "action": "reissued"})
        failed: list[str] = []
        if loss.action == "fail":
            for task in loss.tasks:
                outcome = Outcome(
                    "failed",
                    error_code="delivery_failed",
                    error_message=message("delivery_failed", task.lang),
                )
                if await store.finish(task, None, outcome, now_ms()) == "finished":
                    failed.append(task.task_id)
            logger.warning("task %s: delivery failed for good; failed %s", msg.task_id, failed)
        return JSONResponse({"task_id": msg.task_id, "action": loss.action, "failed": failed})

    async def _reissue(self, msg: TaskMessage) -> str:
        """Publish a new ticket for the dead message's queue (its next generation)."""
        assert self._publisher is not None
        again = msg.model_copy(update={"generation": msg.generation + 1})
        r = route(msg.template, msg.tier, msg.modality == "vision")
        return await self._publisher.publish_task(
            r,
            again.model_dump(mode="json"),
            task_id=f"{msg.task_id}.{again.generation}",
            slot_limit=slot_limit(self.settings, r.model_id),
        )

    async def drain(self, request: Request) -> Response:
        """Scheduled call: flush queued usage rows to Postgres."""
        await self.verified_body(request)
        flushed = await _drain_usage(self.redis, self.settings)
        return JSONResponse({"flushed": flushed})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})


def create_app(
    settings: Settings | None = None,
    *,
    redis: RedisPort | None = None,
    runner: Runner | None = None,
    verifier: Verifier | None = None,
    publisher: Publisher | None = None,
) -> Starlette:
    """The worker app. Clients are injected or built from settings at start-up.

    Args:
        settings: defaults to `get_settings()`.
        redis: a Redis port instead of `create_redis(settings)`.
        runner: the runner instead of the LLM runner.
        verifier: the signature verifier instead of one from the signing keys.
        publisher: publishes replacement tickets (failure callback) instead of QStash.
    """
    worker = Worker(
        settings or get_settings(),
        redis=redis,
        runner=runner,
        verifier=verifier,
        publisher=publisher,
    )
    handlers = dict(EXCEPTION_HANDLERS)
    handlers[InvalidSignature] = _unauthorized
    handlers[SlotlineError] = _worker_error
    app = Starlette(
        routes=[
            Route("/api/worker/failed", worker.failed, methods=["POST"]),
            Route("/api/worker/drain", worker.drain, methods=["POST"]),
            Route("/api/worker/healthz", worker.health, methods=["GET"]),
            Route(
                "/api/worker/{tier:str}/{modality:str}/{mode:str}", worker.task, methods=["POST"]
            ),
        ],
        lifespan=worker.lifespan,
        exception_handlers=handlers,
        # Unsigned calls get 401 before their body is read; bodies are capped (413).
        middleware=[body_limit_middleware(worker.settings, WORKER_RULES)],
    )
    app.state.worker = worker
    return app


async def _unauthorized(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_body("invalid_signature", "en", {}), status_code=401)


async def _worker_error(request: Request, exc: Exception) -> Response:
    """Domain errors answered to QStash; a 503 says when to come back (a retry is spent)."""
    assert isinstance(exc, SlotlineError)
    headers = dict(exc.headers)
    if exc.status == 503 and "Retry-After" not in headers:
        worker: Worker = request.app.state.worker
        headers["Retry-After"] = str(worker.settings.redis_blip_retry_s)
    logger.warning("worker %s -> %s: %s", request.url.path, exc.code, exc.detail)
    body = error_body(exc.code, "en", {"detail": exc.detail, **exc.params})
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _drain_usage(redis: RedisPort, settings: Settings) -> int:
    """Flush usage rows; Postgres being down keeps them queued for the next drain."""
    url = secret(settings.database_url)
    if not url:
        return 0
    from lib.usage.store import drain

    try:
        return await drain(redis, url)
    except ServiceUnavailable as exc:
        logger.warning("usage drain skipped (%s); rows stay queued", exc.detail)
        return 0
