"""Publishing tasks to QStash (hosted or the local server) with the official `qstash` SDK."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Literal

import httpx
from qstash import AsyncQStash
from qstash.errors import QStashError
from qstash.http import RetryConfig
from qstash.message import PublishResponse

from lib.errors import ConfigError, PublishFailed
from lib.routing import Route, flow_control_key
from lib.settings import Settings, secret

logger = logging.getLogger(__name__)

DELIVERY_RETRIES = 5
FAILED_PATH = "/api/worker/failed"
# Transport retries of the publish call itself: short, the producer answers 503 otherwise.
PUBLISH_RETRY = RetryConfig(retries=2, backoff=lambda attempt: 100.0 * (attempt + 1))


class Publisher:
    """Publishes worker messages; one per process, made by `from_settings`."""

    def __init__(
        self,
        client: AsyncQStash,
        *,
        app_base_url: str,
        timeout_s: float = 300.0,
        retries: int = DELIVERY_RETRIES,
        retry_delay: str | None = None,
        request_timeout_s: float = 5.0,
    ) -> None:
        self._client = client
        self._request_timeout_s = request_timeout_s
        self.app_base_url = app_base_url.rstrip("/")
        self.timeout = f"{math.ceil(timeout_s)}s"
        self.retries = retries
        self.retry_delay = retry_delay

    @classmethod
    def from_settings(cls, settings: Settings, *, retry: RetryConfig | bool = True) -> Publisher:
        """A publisher for the configured QStash (`QSTASH_URL`, `QSTASH_TOKEN`, `APP_BASE_URL`).

        Args:
            settings: the process settings.
            retry: `False` turns the SDK's transport retries off (tests), `True` keeps a
                short default, or a `RetryConfig`.

        Raises:
            ConfigError: the token or the public base URL is missing.
        """
        token = secret(settings.qstash_token)
        if not token or not settings.app_base_url:
            raise ConfigError("QSTASH_TOKEN and APP_BASE_URL are required to publish tasks")
        retry_config: RetryConfig | Literal[False]
        if isinstance(retry, bool):
            retry_config = PUBLISH_RETRY if retry else False
        else:
            retry_config = retry
        client = AsyncQStash(token, retry=retry_config, base_url=settings.qstash_url)
        # The worker's own time limit plus a margin: QStash must not give up first.
        return cls(
            client,
            app_base_url=settings.app_base_url,
            timeout_s=settings.worker_time_limit_s + 20,
            retries=settings.qstash_retries,
            retry_delay=settings.qstash_retry_delay or None,
            request_timeout_s=settings.qstash_publish_timeout_s,
        )

    async def publish_task(
        self, route: Route, body: dict[str, Any], *, task_id: str, slot_limit: int
    ) -> str:
        """Publish one task to its worker endpoint.

        Args:
            route: the task's route (worker path, model and tier for flow control).
            body: the JSON message body.
            task_id: the deduplication id (a re-publish returns the same message).
            slot_limit: the model pool's size, used as the flow-control parallelism.

        Returns:
            The QStash message id.

        Raises:
            PublishFailed: QStash did not accept the message.
        """
        url = self.app_base_url + route.path
        try:
            # The SDK's own client waits up to 600 s and takes no timeout: the whole
            # call, its transport retries included, is bounded here instead.
            async with asyncio.timeout(self._request_timeout_s):
                reply = await self._client.message.publish_json(
                    url=url,
                    body=body,
                    retries=self.retries,
                    retry_delay=self.retry_delay,
                    timeout=self.timeout,
                    deduplication_id=task_id,
                    failure_callback=self.app_base_url + FAILED_PATH,
                    flow_control={
                        "key": flow_control_key(route.model_id, route.tier),
                        "parallelism": max(1, slot_limit),
                    },
                )
        except (QStashError, httpx.HTTPError, TimeoutError, ValueError, KeyError) as exc:
            logger.warning("publishing task %s to %s failed: %s", task_id, url, exc)
            raise PublishFailed(f"publish failed: {type(exc).__name__}", task_id=task_id) from exc
        if not isinstance(reply, PublishResponse):
            raise PublishFailed("unexpected publish reply", task_id=task_id)
        if reply.deduplicated:
            logger.info("task %s already published as %s", task_id, reply.message_id)
        return reply.message_id

    async def aclose(self) -> None:
        """Close the SDK's HTTP client (its pooled connections).

        The SDK offers no close of its own: its `httpx.AsyncClient` is reached at
        `http._client`, read here and never replaced (`test_aclose_closes_the_sdks_client`
        fails if a release moves it; decisions.md, "Producer").
        """
        await self._client.http._client.aclose()
