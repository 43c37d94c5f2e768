"""The HTTP face of the local QStash server: publish, batch, messages, DLQ and keys."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lib.clock import now_ms
from lib.local.qstash.delivery import LEASE_S, STARTUP_GRACE_S, Deliverer
from lib.local.qstash.message import parse_publish
from lib.local.qstash.store import QStashStore
from lib.local.qstash.wire import WireError, destination
from lib.redis.port import RedisPort
from lib.redis.tcp import TcpRedis

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
PUBLISH_PREFIX = "/v2/publish/"
ENQUEUE_PREFIX = "/v2/enqueue/"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class LocalQStash:
    """Route handlers over one store and one delivery loop."""

    def __init__(
        self,
        store: QStashStore,
        deliverer: Deliverer,
        *,
        token: str,
        current_key: str,
        next_key: str,
        time_scale: float,
    ) -> None:
        self.store = store
        self.deliverer = deliverer
        self.token = token
        self.current_key = current_key
        self.next_key = next_key
        self.time_scale = time_scale

    def authed(self, handler: Handler) -> Handler:
        """Wrap a handler with the bearer-token check."""

        async def wrapped(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return _error(401, "unauthorized")
            return await handler(request)

        return wrapped

    async def _publish_one(
        self, url: str, headers: dict[str, str], body: bytes, caller_ip: str
    ) -> tuple[int, dict[str, Any]]:
        request = parse_publish(
            url, headers, body, now_ms=now_ms(), time_scale=self.time_scale, caller_ip=caller_ip
        )
        message_id, duplicate = await self.store.publish(request)
        if not duplicate:
            self.deliverer.offer(request.message, request.due_ms)
            logger.debug("published %s to %s", message_id, url)
        return (202 if duplicate else 201), {"messageId": message_id, "deduplicated": duplicate}

    async def publish(self, request: Request) -> Response:
        """`POST /v2/publish/{destination}` (and `/v2/enqueue/{queue}/{destination}`)."""
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        if path.startswith(ENQUEUE_PREFIX):
            rest = path[len(ENQUEUE_PREFIX) :].split("/", 1)
            path_dest = rest[1] if len(rest) == 2 else ""
        else:
            path_dest = path[len(PUBLISH_PREFIX) :]
        query = request.scope.get("query_string", b"").decode("latin-1")
        try:
            url = destination(path_dest, query)
            status, reply = await self._publish_one(
                url, dict(request.headers), await request.body(), _caller(request)
            )
        except WireError as exc:
            return _error(400, str(exc))
        return JSONResponse(reply, status_code=status)

    async def batch(self, request: Request) -> Response:
        """`POST /v2/batch`: each entry answered on its own; a bad one does not stop the rest."""
        try:
            entries = json.loads(await request.body())
        except ValueError:
            return _error(400, "body must be a JSON array")
        if not isinstance(entries, list):
            return _error(400, "body must be a JSON array")
        replies: list[dict[str, Any]] = []
        for entry in entries:
            try:
                if not isinstance(entry, dict):
                    raise WireError("entry must be an object")
                raw = str(entry.get("destination") or "")
                path_dest, _, query = raw.partition("?")
                headers = {str(k).lower(): str(v) for k, v in (entry.get("headers") or {}).items()}
                data = _batch_body(entry.get("body"))
                _, reply = await self._publish_one(
                    destination(path_dest, query), headers, data, _caller(request)
                )
                replies.append(reply)
            except WireError as exc:
                replies.append({"error": str(exc)})
        return JSONResponse(replies)

    async def get_message(self, request: Request) -> Response:
        msg = await self.store.get(request.path_params["message_id"])
        if msg is None:
            return _error(404, "message not found")
        return JSONResponse(msg.to_json())

    async def cancel_message(self, request: Request) -> Response:
        if await self.store.cancel(request.path_params["message_id"]):
            return Response(status_code=200)
        return _error(404, "message not found")

    async def cancel_many(self, request: Request) -> Response:
        """`DELETE /v2/messages` with `{"messageIds": [...]}`, or every message without a body."""
        body = await request.body()
        try:
            ids = json.loads(body).get("messageIds") if body else None
        except (ValueError, AttributeError):
            return _error(400, "invalid body")
        if ids is None:
            ids = await self.store.live_ids()
        cancelled = sum([await self.store.cancel(str(i)) for i in ids])
        return JSONResponse({"cancelled": cancelled})

    async def dlq_list(self, request: Request) -> Response:
        """`GET /v2/dlq?cursor=&count=` (filters: messageId, url, responseStatus)."""
        params = request.query_params
        try:
            start = int(params.get("cursor") or 0)
            count = min(100, max(1, int(params.get("count") or 100)))
        except ValueError:
            return _error(400, "invalid cursor or count")
        filters = {
            "messageId": params.get("messageId"),
            "url": params.get("url"),
            "responseStatus": params.get("responseStatus"),
        }
        matched = []
        for dlq_id in await self.store.dlq_ids():
            entry = await self.store.dlq_get(dlq_id)
            if entry is None:
                continue
            shown = entry.to_json()
            if all(v is None or str(shown.get(k)) == v for k, v in filters.items()):
                matched.append(shown)
        page = matched[start : start + count]
        reply: dict[str, Any] = {"messages": page}
        if start + count < len(matched):
            reply["cursor"] = str(start + count)
        return JSONResponse(reply)

    async def dlq_get(self, request: Request) -> Response:
        entry = await self.store.dlq_get(request.path_params["dlq_id"])
        if entry is None:
            return _error(404, "dlq message not found")
        return JSONResponse(entry.to_json())

    async def dlq_delete(self, request: Request) -> Response:
        if await self.store.dlq_delete(request.path_params["dlq_id"]):
            return Response(status_code=200)
        return _error(404, "dlq message not found")

    async def dlq_delete_many(self, request: Request) -> Response:
        try:
            ids = json.loads(await request.body() or b"{}").get("dlqIds") or []
        except (ValueError, AttributeError):
            return _error(400, "invalid body")
        deleted = sum([await self.store.dlq_delete(str(i)) for i in ids])
        return JSONResponse({"deleted": deleted})

    async def dlq_retry(self, request: Request) -> Response:
        new_id = await self.store.dlq_retry(request.path_params["dlq_id"], now_ms=now_ms())
        if new_id is None:
            return _error(404, "dlq message not found")
        self.deliverer.wake()
        return JSONResponse({"messageId": new_id}, status_code=201)

    async def keys(self, request: Request) -> Response:
        return JSONResponse({"current": self.current_key, "next": self.next_key})

    def routes(self) -> list[Route]:
        a = self.authed
        return [
            Route("/v2/publish/{destination:path}", a(self.publish), methods=["POST"]),
            Route("/v2/enqueue/{queue}/{destination:path}", a(self.publish), methods=["POST"]),
            Route("/v2/batch", a(self.batch), methods=["POST"]),
            Route("/v2/messages/{message_id}", a(self.get_message), methods=["GET"]),
            Route("/v2/messages/{message_id}", a(self.cancel_message), methods=["DELETE"]),
            Route("/v2/messages", a(self.cancel_many), methods=["DELETE"]),
            Route("/v2/dlq", a(self.dlq_list), methods=["GET"]),
            Route("/v2/dlq", a(self.dlq_delete_many), methods=["DELETE"]),
            Route("/v2/dlq/retry/{dlq_id}", a(self.dlq_retry), methods=["POST"]),
            Route("/v2/dlq/{dlq_id}", a(self.dlq_get), methods=["GET"]),
            Route("/v2/dlq/{dlq_id}", a(self.dlq_delete), methods=["DELETE"]),
            Route("/v2/keys", a(self.keys), methods=["GET"]),
        ]


def _batch_body(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _caller(request: Request) -> str:
    return request.client.host if request.client else ""


def create_app(
    redis: RedisPort | str,
    *,
    token: str,
    current_key: str,
    next_key: str,
    time_scale: float = 1.0,
    max_in_flight: int = 64,
    lease_s: float = LEASE_S,
    startup_grace_s: float = STARTUP_GRACE_S,
) -> Starlette:
    """The local QStash server as an ASGI app; its lifespan runs the delivery loop.

    Args:
        redis: a Redis URL (the app opens and closes its own connection, in its own
            event loop) or a `RedisPort` made in the loop the app will run in.
        token: the bearer token publishers must send.
        current_key: the signing key deliveries are signed with.
        next_key: the next signing key (only reported by `/v2/keys`).
        time_scale: multiplies retry delays, `Retry-After` and `Upstash-Delay` (tests: ~0.001).
        max_in_flight: most deliveries under way at once.
        lease_s: an attempt's lease, renewed while it runs (a dead server's run out).
        startup_grace_s: how long after the start a refused connection to a destination
            that has not answered yet is retried without spending a retry.

    Returns:
        The Starlette app.
    """
    owns_redis = isinstance(redis, str)
    port: RedisPort = TcpRedis.from_url(redis) if isinstance(redis, str) else redis
    store = QStashStore(port)
    deliverer = Deliverer(
        store,
        signing_key=current_key,
        time_scale=time_scale,
        max_in_flight=max_in_flight,
        lease_s=lease_s,
        startup_grace_s=startup_grace_s,
    )
    server = LocalQStash(
        store,
        deliverer,
        token=token,
        current_key=current_key,
        next_key=next_key,
        time_scale=time_scale,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await deliverer.start()
        try:
            yield
        finally:
            await deliverer.stop()
            if owns_redis:
                await port.aclose()

    app = Starlette(routes=server.routes(), lifespan=lifespan)
    app.state.store = store
    app.state.deliverer = deliverer
    return app
