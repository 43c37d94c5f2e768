"""Local server speaking the Upstash Redis REST protocol in front of a real Valkey."""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lib.local.serve import ServerThread

logger = logging.getLogger(__name__)

# Upstash serves each request from a pool: nothing may block or hold connection state.
BLOCKING_COMMANDS = frozenset(
    {
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BLMOVE",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "WAIT",
        "WAITAOF",
    }
)
STATEFUL_COMMANDS = frozenset(
    {
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "SUNSUBSCRIBE",
        "MONITOR",
        "MULTI",
        "EXEC",
        "DISCARD",
        "WATCH",
        "UNWATCH",
        "SELECT",
        "HELLO",
        "AUTH",
        "RESET",
        "QUIT",
        "SYNC",
        "PSYNC",
    }
)
EXECABORT = "EXECABORT Transaction discarded because of previous errors."


class _Rejected(Exception):
    """A request or command this server does not run (answered as a Redis-style error)."""


def _arguments(raw: Any) -> list[str]:
    """A JSON command → Redis arguments; numbers are sent as their JSON text."""
    if not isinstance(raw, list) or not raw:
        raise _Rejected("ERR a command must be a non-empty JSON array")
    args: list[str] = []
    for item in raw:
        if isinstance(item, str):
            args.append(item)
        elif isinstance(item, int | float):
            args.append(json.dumps(item))
        else:
            raise _Rejected("ERR command arguments must be strings or numbers")
    name = args[0].upper()
    if name in BLOCKING_COMMANDS or name in STATEFUL_COMMANDS or _blocking_read(name, args):
        raise _Rejected(f"ERR Command is not available: '{args[0]}' (blocking or stateful)")
    return args


def _blocking_read(name: str, args: list[str]) -> bool:
    """XREAD/XREADGROUP with a BLOCK option (looked for before STREAMS only)."""
    if name not in ("XREAD", "XREADGROUP"):
        return False
    i = 1
    while i < len(args):
        token = args[i].upper()
        if token == "STREAMS":
            return False
        if token == "BLOCK":
            return True
        i += {"GROUP": 3, "COUNT": 2}.get(token, 1)
    return False


def _error_text(exc: RedisError) -> str:
    """redis-py strips known prefixes (`ERR`, `NOSCRIPT`, …) into `status_code`; put them back."""
    message = str(exc)
    code = getattr(exc, "status_code", None)
    return f"{code} {message}" if code else message


def _encode(value: Any, b64: bool) -> Any:
    """RESP2 reply (bytes, int, None, nested lists) → JSON; strings base64 except `OK`."""
    if isinstance(value, bytes):
        if b64 and value != b"OK":
            return base64.b64encode(value).decode("ascii")
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return _encode(value.encode(), b64)
    if isinstance(value, list | tuple):
        return [_encode(item, b64) for item in value]
    if isinstance(value, ResponseError):
        return _encode(_error_text(value).encode(), b64)
    return value  # int or None: RESP2 has no other types


def _entry(value: Any, b64: bool) -> dict[str, Any]:
    if isinstance(value, RedisError):
        return {"error": _error_text(value)}
    return {"result": _encode(value, b64)}


@dataclass
class _Backend:
    """The Valkey connection pool, created on first use inside the server's event loop."""

    redis_url: str
    _client: aioredis.Redis | None = None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            client = aioredis.Redis.from_url(self.redis_url, protocol=2, decode_responses=False)
            client.response_callbacks.clear()  # raw RESP2 replies, as Upstash sends them
            self._client = client
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def create_app(redis_url: str, token: str) -> Starlette:
    """The REST app: `POST /`, `POST /pipeline`, `POST /multi-exec`, bearer auth.

    Args:
        redis_url: the Valkey/Redis the commands run on.
        token: the bearer token clients must send.

    Returns:
        A Starlette app; its Redis pool is closed by the app's lifespan.
    """
    backend = _Backend(redis_url)
    expected = f"Bearer {token}".encode()

    async def parse(request: Request) -> tuple[Any, bool]:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise PermissionError
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            raise _Rejected("ERR request body is not valid JSON") from exc
        return body, request.headers.get("upstash-encoding", "").lower() == "base64"

    async def single(request: Request) -> JSONResponse:
        try:
            body, b64 = await parse(request)
            reply = await backend.client.execute_command(*_arguments(body))  # type: ignore[no-untyped-call]
        except PermissionError:
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        except _Rejected as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ResponseError as exc:
            return JSONResponse({"error": _error_text(exc)}, status_code=400)
        except RedisError as exc:
            logger.warning("local rest: backend failure: %s", exc)
            return JSONResponse({"error": f"ERR backend failure: {exc}"}, status_code=500)
        return JSONResponse({"result": _encode(reply, b64)})

    async def batch(request: Request) -> JSONResponse:
        atomic = request.url.path.rstrip("/").endswith("multi-exec")
        try:
            body, b64 = await parse(request)
            if not isinstance(body, list) or not body:
                raise _Rejected("ERR a pipeline must be a non-empty JSON array of commands")
            commands: list[list[str] | _Rejected] = []
            for raw in body:
                try:
                    commands.append(_arguments(raw))
                except _Rejected as exc:
                    commands.append(exc)
            entries = await _run_batch(backend.client, commands, atomic=atomic, b64=b64)
        except PermissionError:
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        except _Rejected as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except RedisError as exc:
            logger.warning("local rest: backend failure: %s", exc)
            return JSONResponse({"error": f"ERR backend failure: {exc}"}, status_code=500)
        return JSONResponse(entries)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await backend.aclose()

    return Starlette(
        routes=[
            Route("/", single, methods=["POST"]),
            Route("/pipeline", batch, methods=["POST"]),
            Route("/multi-exec", batch, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


async def _run_batch(
    client: aioredis.Redis, commands: list[list[str] | _Rejected], *, atomic: bool, b64: bool
) -> list[dict[str, Any]]:
    """Run a pipeline (each command answers for itself) or a MULTI/EXEC (all or nothing)."""
    valid = [command for command in commands if isinstance(command, list)]
    rejected = len(valid) < len(commands)
    replies: list[Any] = []
    if valid and not (atomic and rejected):
        pipe = client.pipeline(transaction=atomic)
        for args in valid:
            pipe.execute_command(*args)
        try:
            replies = list(await pipe.execute(raise_on_error=False))
        except ResponseError:
            # A command failed while queueing (arity, unknown name): EXEC discarded all.
            if not atomic:
                raise
            return [{"error": EXECABORT} for _ in commands]
    entries: list[dict[str, Any]] = []
    queued = iter(replies)
    for command in commands:
        if isinstance(command, _Rejected):
            entries.append({"error": str(command)})
        elif atomic and rejected:
            entries.append({"error": EXECABORT})
        else:
            entries.append(_entry(next(queued), b64))
    return entries


@dataclass
class LocalRest:
    """A running local REST server: point `RestRedis` or upstash-redis at `url` with `token`."""

    url: str
    token: str
    _server: ServerThread = field(repr=False)

    def stop(self) -> None:
        """Stop serving (the Valkey behind it keeps running)."""
        self._server.stop()

    def __enter__(self) -> LocalRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_rest(
    redis_url: str, token: str | None = None, *, port: int | None = None
) -> LocalRest:
    """Serve the Upstash REST protocol on loopback in front of `redis_url`.

    Args:
        redis_url: the Valkey/Redis to front.
        token: the bearer token to require; a random one when omitted.
        port: the loopback port; a free one when omitted.

    Returns:
        The running server's URL and token.

    Raises:
        RuntimeError: the server did not come up.
    """
    token = token or secrets.token_urlsafe(24)
    server = ServerThread(create_app(redis_url, token), port=port)
    url = server.start()
    logger.info("local upstash rest on %s", url)
    return LocalRest(url=url, token=token, _server=server)
