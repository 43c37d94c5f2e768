"""Dead letters for the dashboard: QStash's DLQ through the official SDK, built on first use.

Only ids, counts and codes leave this module: a dead-lettered message's body holds the
user's variables, so it is read for the task and queue ids and nothing else.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

from lib.errors import ConfigError, NotFound, ServiceUnavailable
from lib.settings import Settings, secret

logger = logging.getLogger(__name__)

# QStash's DLQ pages hold at most 100 entries.
PAGE_SIZE = 100
TIMEOUT_S = 5.0
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _id_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and _ID.match(value) else None


def _json_object(text: str | None, b64: str | None) -> dict[str, Any]:
    raw: str | None = text
    if raw is None and b64:
        try:
            raw = base64.b64decode(b64).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return {}
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def reason_code(status: int, body: dict[str, Any]) -> str | None:
    """The stable error code a failed delivery answered with (our JSON error shape), if any."""
    code = body.get("error")
    if isinstance(code, str) and _CODE.match(code):
        return code
    return None


def dead_letter_row(msg: Any) -> dict[str, Any]:
    """One DLQ entry as the dashboard shows it: ids, where it went, the status and code.

    Args:
        msg: a `qstash.dlq.DlqMessage`.
    """
    body = _json_object(msg.body, msg.body_base64)
    response = _json_object(msg.response_body, msg.response_body_base64)
    status = int(msg.response_status or 0)
    return {
        "dlq_id": _id_or_none(msg.dlq_id),
        "message_id": _id_or_none(msg.message_id),
        "task_id": _id_or_none(body.get("task_id")),
        "queue_id": _id_or_none(body.get("queue_id")),
        "path": urlsplit(str(msg.url or "")).path[:200],
        "status": status,
        "reason": reason_code(status, response),
        "created_ms": int(msg.created_at or 0),
    }


class DeadLetters:
    """QStash's dead-letter queue (hosted or the local server), the client built on first use.

    The dashboard's routes are in the producer, whose cold start must not import `qstash`.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None

    def _token(self) -> str:
        token = secret(self._settings.qstash_token)
        if not token:
            raise ConfigError("QSTASH_TOKEN is required to read the dead-letter queue")
        return token

    def _sdk(self) -> Any:
        if self._client is None:
            from qstash import AsyncQStash

            self._client = AsyncQStash(
                self._token(), retry=False, base_url=self._settings.qstash_url
            )
        return self._client

    async def list(self, limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
        """The newest dead letters, newest first (at most `limit`).

        Raises:
            ConfigError: no QStash token is configured.
            ServiceUnavailable: QStash did not answer or refused.
        """
        import httpx
        from qstash.errors import QStashError

        try:
            page = await self._sdk().dlq.list(count=min(limit, PAGE_SIZE))
        except (QStashError, httpx.HTTPError) as exc:  # the SDK lets httpx's errors through
            raise ServiceUnavailable(f"dlq: {type(exc).__name__}") from exc
        rows = [dead_letter_row(m) for m in page.messages]
        rows.sort(key=lambda r: r["created_ms"], reverse=True)
        return rows[:limit]

    async def retry(self, dlq_id: str) -> str:
        """Publish a dead letter again (`POST /v2/dlq/retry/{dlqId}`); the new message id.

        The SDK (3.4) has no call for it, so this is the documented REST call itself, with
        the SDK's token and base URL.

        Raises:
            NotFound: no such dead letter (already retried or deleted).
            ConfigError: no QStash token is configured.
            ServiceUnavailable: QStash did not answer or refused.
        """
        import httpx

        if not _ID.match(dlq_id):
            raise NotFound("no such dead letter")
        base = (self._settings.qstash_url or "https://qstash.upstash.io").rstrip("/")
        url = f"{base}/v2/dlq/retry/{quote(dlq_id, safe='')}"
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                reply = await client.post(url, headers={"Authorization": f"Bearer {self._token()}"})
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"dlq retry: {type(exc).__name__}") from exc
        if reply.status_code == 404:
            raise NotFound("no such dead letter")
        if reply.status_code >= 300:
            raise ServiceUnavailable(f"dlq retry: HTTP {reply.status_code}")
        try:
            data = reply.json()
        except ValueError:
            data = {}
        new_id = data.get("messageId") if isinstance(data, dict) else None
        logger.info("dead letter %s published again as %s", dlq_id, new_id)
        return str(new_id or "")

    async def aclose(self) -> None:
        """Close the SDK's HTTP client, if one was made."""
        if self._client is not None:
            await self._client.http._client.aclose()
            self._client = None
