"""One ASGI app for both sides: the worker under `/api/worker/…`, the rest to the producer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from lib.settings import Settings, get_settings

if TYPE_CHECKING:
    from lib.qstash.publisher import Publisher
    from lib.qstash.verify import Verifier
    from lib.redis.port import RedisPort
    from worker.delivery import Runner

WORKER_PREFIX = "/api/worker/"


class _Dispatch:
    """Send `/api/worker/…` to the worker app and every other path to the producer app.

    Both sub-apps declare their routes with full paths, so they are dispatched to as they
    are (a `Mount("/api/worker")` would strip the prefix their routes expect).
    """

    def __init__(self, producer: ASGIApp, worker: ASGIApp) -> None:
        self.producer = producer
        self.worker = worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        target = self.worker if path.startswith(WORKER_PREFIX) else self.producer
        await target(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    redis: RedisPort | None = None,
    publisher: Publisher | None = None,
    runner: Runner | None = None,
    verifier: Verifier | None = None,
) -> Starlette:
    """The combined producer + worker app (Vercel, Lambda, `slotline dev`).

    Mounted Starlette apps do not run their own lifespans, so the parent's lifespan
    enters both (producer first, worker second; they close in reverse order). Each side
    owns the clients it was not given; nothing connects before start-up.

    Args:
        settings: defaults to `get_settings()`.
        redis: a Redis port shared by both sides instead of one made from settings each.
        publisher: the publisher of both sides instead of the QStash one.
        runner: the worker's runner instead of the LLM runner.
        verifier: the worker's signature verifier instead of one from the signing keys.

    Returns:
        The Starlette app.
    """
    from lib.qstash.publisher import LazyPublisher
    from producer.app import create_app as create_producer
    from worker.app import create_app as create_worker

    settings = settings or get_settings()
    # One publisher for both sides (the worker replaces dead-lettered tickets).
    owned = LazyPublisher(settings) if publisher is None else None
    shared = publisher or owned
    producer = create_producer(settings, redis=redis, publisher=shared)
    worker = create_worker(
        settings, redis=redis, runner=runner, verifier=verifier, publisher=shared
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if owned is not None:
                stack.push_async_callback(owned.aclose)
            await stack.enter_async_context(producer.router.lifespan_context(producer))
            await stack.enter_async_context(worker.router.lifespan_context(worker))
            yield

    app = Starlette(routes=[Mount("", app=_Dispatch(producer, worker))], lifespan=lifespan)
    app.state.settings = settings
    app.state.producer = producer
    app.state.worker = worker
    return app


def create_deploy_app(settings: Settings | None = None) -> Starlette:
    """The combined app for a deployment: refuses to start without what a deployment needs.

    Nothing connects here (safe at import time); settings are read once.

    Args:
        settings: defaults to `get_settings()`.

    Returns:
        The Starlette app.

    Raises:
        ConfigError: every missing deployment setting, each with what it disables.
    """
    from lib.app.doctor import deploy_missing
    from lib.errors import ConfigError

    settings = settings or get_settings()
    missing = deploy_missing(settings)
    if missing:
        listed = "; ".join(f"{m.setting} (disables {m.disables})" for m in missing)
        raise ConfigError(f"missing deployment settings: {listed}")
    return create_app(settings)
