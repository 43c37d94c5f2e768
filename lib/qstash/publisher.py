"""What producer and worker need from the push queue, and a lazily built QStash publisher."""

from __future__ import annotations

from typing import Any, Protocol

from lib.routing import Route
from lib.settings import Settings


class Publisher(Protocol):
    """Publishing task messages (`lib.qstash.publish.Publisher` is the real one)."""

    async def publish_task(
        self, route: Route, body: dict[str, Any], *, task_id: str, slot_limit: int
    ) -> str: ...


class LazyPublisher:
    """The QStash publisher, built on first use so `qstash` stays out of cold starts."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._inner: Any = None

    def _get(self) -> Any:
        if self._inner is None:
            from lib.qstash.publish import Publisher as QStashPublisher

            self._inner = QStashPublisher.from_settings(self._settings)
        return self._inner

    async def publish_task(
        self, route: Route, body: dict[str, Any], *, task_id: str, slot_limit: int
    ) -> str:
        result: str = await self._get().publish_task(
            route, body, task_id=task_id, slot_limit=slot_limit
        )
        return result

    async def aclose(self) -> None:
        closer = getattr(self._inner, "aclose", None)
        if closer is not None:
            await closer()
