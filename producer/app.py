"""The producer's ASGI app: `create_app(settings)` wires routes, identity, errors and clients."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lib.auth import app_secret
from lib.db.pg import Postgres
from lib.http.body_limit import PRODUCER_RULES, body_limit_middleware
from lib.http.errors import EXCEPTION_HANDLERS
from lib.qstash.publisher import LazyPublisher, Publisher
from lib.redis.port import RedisPort
from lib.settings import Settings, get_settings
from lib.tasks.store import TaskStore
from producer import events, info, queues, tasks
from producer.identity import IdentityMiddleware
from producer.web import ops
from producer.web.lazy import LazyPages

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def lazy(path: str) -> Endpoint:
    """The endpoint `module.function`, imported on its first request.

    The asset and account routes (their handlers, the storage modules, file processing)
    stay out of the cold start of an invocation that only serves tasks: ~35 ms of
    imports measured here (docs/decisions.md, "Assets in Postgres").
    """
    module_name, _, name = path.rpartition(".")

    async def endpoint(request: Request) -> Response:
        handler: Endpoint = getattr(importlib.import_module(module_name), name)
        return await handler(request)

    endpoint.__name__ = endpoint.__qualname__ = name
    return endpoint


def create_app(
    settings: Settings | None = None,
    *,
    redis: RedisPort | None = None,
    publisher: Publisher | None = None,
    pg: Postgres | None = None,
) -> Starlette:
    """The producer app.

    Clients passed in belong to the caller (tests, `slotline dev`); missing ones are
    created in the lifespan and closed with it. Nothing connects at import time.

    Args:
        settings: defaults to `get_settings()`.
        redis: a Redis port to use instead of `create_redis(settings)`.
        publisher: a publisher to use instead of the QStash one.
        pg: the Postgres handle instead of `Postgres.from_settings(settings)` (nothing
            connects before the first query; psycopg is imported then).

    Returns:
        The Starlette app.
    """
    settings = settings or get_settings()
    owned_pg = Postgres.from_settings(settings) if pg is None else None
    database = pg or owned_pg
    assert database is not None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned_redis: RedisPort | None = None
        owned_publisher: LazyPublisher | None = None
        if app.state.redis is None:
            from lib.redis.factory import create_redis

            owned_redis = create_redis(settings)
            app.state.redis = owned_redis
            app.state.store = TaskStore(owned_redis, settings)
        if app.state.publisher is None:
            owned_publisher = LazyPublisher(settings)
            app.state.publisher = owned_publisher
        try:
            yield
        finally:
            dead_letters = getattr(app.state, "dead_letters", None)
            if dead_letters is not None:
                await dead_letters.aclose()
            if owned_publisher is not None:
                await owned_publisher.aclose()
            if owned_redis is not None:
                await owned_redis.aclose()
            if owned_pg is not None:
                await owned_pg.aclose()

    routes = [
        Route("/api/tasks", tasks.submit, methods=["POST"]),
        Route("/api/tasks/{task_id}", tasks.status, methods=["GET"]),
        Route("/api/tasks/{task_id}", tasks.cancel, methods=["DELETE"]),
        Route("/api/tasks/{task_id}/events", events.stream, methods=["GET"]),
        Route("/api/upload/resume", lazy("producer.uploads.upload_resume"), methods=["POST"]),
        Route(
            "/api/upload/detailed-resume",
            lazy("producer.uploads.upload_detailed_resume"),
            methods=["POST"],
        ),
        Route("/api/upload/jd", lazy("producer.uploads.upload_jd"), methods=["POST"]),
        Route("/api/assets", lazy("producer.assets.list_assets"), methods=["GET"]),
        Route("/api/resumes/{asset_id}", lazy("producer.assets.get_resume"), methods=["GET"]),
        Route("/api/resumes/{asset_id}", lazy("producer.assets.delete_resume"), methods=["DELETE"]),
        Route(
            "/api/detailed-resumes/{asset_id}",
            lazy("producer.assets.get_detailed_resume"),
            methods=["GET"],
        ),
        Route(
            "/api/detailed-resumes/{asset_id}",
            lazy("producer.assets.delete_detailed_resume"),
            methods=["DELETE"],
        ),
        Route("/api/jobs/{asset_id}", lazy("producer.assets.get_job"), methods=["GET"]),
        Route("/api/jobs/{asset_id}", lazy("producer.assets.delete_job"), methods=["DELETE"]),
        Route("/api/jobs/{asset_id}/image", lazy("producer.assets.get_job_image"), methods=["GET"]),
        Route("/api/me", lazy("producer.me.erase_me"), methods=["DELETE"]),
        Route("/api/service/create", lazy("producer.services.create"), methods=["POST"]),
        Route("/api/services", lazy("producer.services.list_services"), methods=["GET"]),
        Route("/api/service/{service_id}", lazy("producer.services.status"), methods=["GET"]),
        Route("/api/service/{service_id}", lazy("producer.services.cancel"), methods=["DELETE"]),
        Route(
            "/api/service/{service_id}/events",
            lazy("producer.services.stream"),
            methods=["GET"],
        ),
        Route("/api/queues", queues.queues, methods=["GET"]),
        Route("/api/templates", info.templates, methods=["GET"]),
        Route("/api/usage", info.usage, methods=["GET"]),
        Route("/healthz", info.healthz, methods=["GET"]),
        Route("/api/ops/queues", ops.queues_data, methods=["GET"]),
        Route("/api/ops/failures", ops.failures_data, methods=["GET"]),
        Route("/api/ops/dlq/{dlq_id}/retry", ops.dlq_retry, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            body_limit_middleware(settings, PRODUCER_RULES),
            Middleware(
                IdentityMiddleware,
                app_secret=app_secret(settings),
                app_base_url=settings.app_base_url,
            ),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # Whatever no API route takes (not even by path, which answers 405): the pages, assets
    # and the not-found page, built on the first request for one.
    app.router.default = LazyPages(settings)
    app.state.settings = settings
    app.state.redis = redis
    app.state.store = TaskStore(redis, settings) if redis is not None else None
    app.state.publisher = publisher
    # The storage modules take it (`AssetStore(app.state.pg)`, `ServiceStore(...)`).
    app.state.pg = database
    return app
