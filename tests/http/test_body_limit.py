"""Body limits before work: Content-Length and streamed bodies capped per endpoint kind, unsigned
worker calls refused unread; in process (the middleware alone, the producer and worker apps)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from lib.http.body_limit import (
    PRODUCER_RULES,
    WORKER_RULES,
    BodyKind,
    BodyLimitMiddleware,
    body_limits,
)
from lib.qstash.verify import Verifier
from lib.redis.port import RedisPort
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, Settings
from lib.templates.variables import max_data_url_chars
from tests.support.producer import (
    JOB_MATCH,
    RecordingPublisher,
    build_app,
    client_for,
    make_settings,
)
from tests.support.redis_snapshot import snapshot
from tests.worker.test_app import ScriptedRunner, admit, signed
from tests.worker.test_app import make_settings as worker_settings
from worker.app import create_app as create_worker

MIB = 1024 * 1024
LIMITS: dict[BodyKind, int] = {
    "default": 1000,
    "tasks": 10_000,
    "worker": 20_000,
    "callback": 30_000,
}


class Recorder:
    """An ASGI app that reads the whole body (as endpoints do) and answers with its length."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = await Request(scope, receive).body()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


class Chunks:
    """A client body: `total` bytes in `size`-byte messages; counts how many were read."""

    def __init__(self, total: int, size: int) -> None:
        self.left = total
        self.size = size
        self.pulled = 0

    async def __call__(self) -> Message:
        self.pulled += 1
        n = min(self.size, self.left)
        self.left -= n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.left > 0}


def scope_for(path: str, *, method: str = "POST", headers: dict[str, str] | None = None) -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }


async def call(middleware: Any, scope: Scope, receive: Receive) -> tuple[int, dict[str, str], Any]:
    """Run one request through an ASGI app; its status, headers and (JSON or text) body."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = raw.decode()
    return start["status"], headers, body


@pytest.mark.parametrize(
    ("rules", "method", "path", "kind"),
    [
        (PRODUCER_RULES, "POST", "/api/tasks", "tasks"),
        (PRODUCER_RULES, "GET", "/api/tasks", "default"),
        (PRODUCER_RULES, "POST", "/api/tasks/abc", "default"),
        (PRODUCER_RULES, "DELETE", "/api/tasks/abc", "default"),
        (WORKER_RULES, "POST", "/api/worker/free/text/stream", "worker"),
        (WORKER_RULES, "POST", "/api/worker/failed", "callback"),
        (WORKER_RULES, "POST", "/api/worker/drain", "default"),
        (WORKER_RULES, "GET", "/api/worker/healthz", "default"),
    ],
)
def test_endpoint_kinds(rules: Any, method: str, path: str, kind: str) -> None:
    """Each endpoint maps to its kind; anything unlisted is `default`."""
    rule = BodyLimitMiddleware(Recorder(), rules=rules, limits=LIMITS).rule_for(method, path)
    assert (rule.kind if rule is not None else "default") == kind


def test_limits_come_from_settings() -> None:
    """Every kind's limit is its own setting."""
    settings = Settings(
        body_limit_default_bytes=1,
        body_limit_tasks_bytes=2,
        body_limit_worker_bytes=3,
        body_limit_callback_bytes=4,
        body_limit_upload_bytes=5,
    )
    assert body_limits(settings) == {
        "default": 1,
        "tasks": 2,
        "worker": 3,
        "callback": 4,
        "upload": 5,
    }


def test_default_limits_fit_each_other() -> None:
    """A submitted body fits a delivery, a delivery's base64 fits the failure callback."""
    limits = body_limits(Settings())
    assert limits["tasks"] >= 6 * MIB  # a 4 MiB image is 5.6 MB of base64, plus texts
    assert limits["worker"] >= limits["tasks"] + 64 * 1024
    assert limits["callback"] >= limits["worker"] * 4 // 3 + 64 * 1024


def test_the_upload_limit_follows_the_file_limit() -> None:
    """Uploads take a file of UPLOAD_MAX_BYTES plus the multipart envelope, and a JSON body
    with the largest screenshot as a data URL; unset, the limit moves with the file limit."""
    settings = Settings()
    limit = body_limits(settings)["upload"]
    assert limit >= settings.upload_max_bytes + 64 * 1024
    assert limit >= max_data_url_chars(settings.upload_max_image_bytes) + 1024
    assert body_limits(Settings(upload_max_bytes=MIB))["upload"] == MIB + 64 * 1024
    middleware = BodyLimitMiddleware(Recorder(), rules=PRODUCER_RULES, limits=LIMITS)
    for path in ("/api/upload/resume", "/api/upload/detailed-resume", "/api/upload/jd"):
        rule = middleware.rule_for("POST", path)
        assert rule is not None and rule.kind == "upload"


async def test_content_length_over_limit_refused_unread() -> None:
    """A declared length over the limit is 413 at once: the app never runs, the body is unread."""
    app = Recorder()
    middleware = BodyLimitMiddleware(app, rules=PRODUCER_RULES, limits=LIMITS)
    body = Chunks(50 * MIB, 64 * 1024)
    scope = scope_for("/api/tasks", headers={"content-length": str(50 * MIB)})
    status, headers, payload = await call(middleware, scope, body)
    assert status == 413
    assert payload["error"] == "payload_too_large"
    assert payload["max_bytes"] == LIMITS["tasks"]
    assert payload["message"] == "The request body is larger than 10000 bytes."
    assert headers["connection"] == "close"
    assert (app.calls, body.pulled) == (0, 0)


async def test_streamed_body_stops_at_the_limit() -> None:
    """Without a Content-Length the body is counted: reading stops at the chunk that passes."""
    app = Recorder()
    middleware = BodyLimitMiddleware(app, rules=PRODUCER_RULES, limits=LIMITS)
    body = Chunks(50 * MIB, 1000)
    status, headers, payload = await call(middleware, scope_for("/api/tasks"), body)
    assert status == 413
    assert payload["error"] == "payload_too_large"
    assert headers["connection"] == "close"
    assert body.pulled == LIMITS["tasks"] // 1000 + 1


async def test_lying_content_length_is_still_counted() -> None:
    """A small declared length does not lift the cap on what actually streams in."""
    middleware = BodyLimitMiddleware(Recorder(), rules=PRODUCER_RULES, limits=LIMITS)
    body = Chunks(50 * MIB, 4096)
    scope = scope_for("/api/tasks", headers={"content-length": "10"})
    status, _, _ = await call(middleware, scope, body)
    assert status == 413
    assert body.pulled == LIMITS["tasks"] // 4096 + 1


@pytest.mark.parametrize("size", [0, 1, LIMITS["tasks"]])
async def test_body_within_limit_passes(size: int) -> None:
    """A body up to the limit, declared or streamed, reaches the app whole."""
    for headers in ({"content-length": str(size)}, {}):
        app = Recorder()
        middleware = BodyLimitMiddleware(app, rules=PRODUCER_RULES, limits=LIMITS)
        status, _, payload = await call(
            middleware, scope_for("/api/tasks", headers=headers), Chunks(size, 3000)
        )
        assert (status, payload, app.calls) == (200, size, 1)


async def test_other_endpoints_get_the_default_limit() -> None:
    """An endpoint without a rule is capped at `default`, not at the largest kind."""
    middleware = BodyLimitMiddleware(Recorder(), rules=PRODUCER_RULES, limits=LIMITS)
    status, _, payload = await call(
        middleware, scope_for("/api/tasks/abc", method="DELETE"), Chunks(LIMITS["default"] + 1, 10)
    )
    assert (status, payload["max_bytes"]) == (413, LIMITS["default"])


@pytest.mark.parametrize("path", ["/api/worker/free/text/stream", "/api/worker/failed"])
async def test_unsigned_worker_call_401_unread(path: str) -> None:
    """A worker call without Upstash-Signature is 401 before a byte of its body is read."""
    app = Recorder()
    middleware = BodyLimitMiddleware(app, rules=WORKER_RULES, limits=LIMITS)
    body = Chunks(50 * MIB, 64 * 1024)
    status, headers, payload = await call(middleware, scope_for(path), body)
    assert (status, payload["error"]) == (401, "invalid_signature")
    assert headers["connection"] == "close"
    assert (app.calls, body.pulled) == (0, 0)


async def test_zh_refusal_is_all_chinese() -> None:
    """Accept-Language zh: the 413 message is the Chinese text, no English inside."""
    middleware = BodyLimitMiddleware(Recorder(), rules=PRODUCER_RULES, limits=LIMITS)
    scope = scope_for(
        "/api/tasks", headers={"content-length": str(MIB), "accept-language": "zh-CN,zh;q=0.9"}
    )
    status, _, payload = await call(middleware, scope, Chunks(MIB, 4096))
    assert status == 413
    assert payload["message"] == "请求体超过 10000 字节。"
    assert not re.search(r"[A-Za-z]", payload["message"])


async def test_app_without_a_handler_is_answered_by_the_middleware() -> None:
    """An app that lets `PayloadTooLarge` escape still gets a 413, not a crash."""

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = BodyLimitMiddleware(raw_app, rules=PRODUCER_RULES, limits=LIMITS)
    status, _, payload = await call(middleware, scope_for("/api/tasks"), Chunks(MIB, 4096))
    assert (status, payload["error"]) == (413, "payload_too_large")


# --- the real apps, in process ------------------------------------------------------------


async def big_body(total: int, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    """A streamed (chunked, no Content-Length) body of `total` bytes."""
    block = b"x" * chunk
    while total > 0:
        yield block[: min(chunk, total)]
        total -= chunk


async def streamed(raw: bytes, chunk: int) -> AsyncIterator[bytes]:
    """`raw` as a chunked body, `chunk` bytes a message."""
    for start in range(0, len(raw), chunk):
        yield raw[start : start + chunk]


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_producer_refuses_a_50mb_submit(
    tmp_path: Path, redis: RedisPort, caplog: pytest.LogCaptureFixture, streamed: bool
) -> None:
    """A 50 MB submit is 413 payload_too_large; nothing is published or left in Redis."""
    caplog.set_level(logging.INFO)
    publisher = RecordingPublisher()
    app = build_app(make_settings(tmp_path), redis, publisher)
    image = "data:image/png;base64," + "A" * (50 * MIB)
    raw = json.dumps({"template": "job_summary", "variables": {"job_image": image}}).encode()
    before = await snapshot(redis)
    async with client_for(app) as client:
        if streamed:
            resp = await client.post("/api/tasks", content=big_body(len(raw)))
        else:
            resp = await client.post("/api/tasks", content=raw)
    assert resp.status_code == 413
    assert resp.json()["error"] == "payload_too_large"
    assert resp.json()["max_bytes"] == 8 * MIB
    assert publisher.published == []
    assert await snapshot(redis) == before
    no_errors_logged(caplog)


async def test_producer_still_takes_a_body_under_the_limit(
    tmp_path: Path, redis: RedisPort
) -> None:
    """A normal submit streamed in small chunks passes the limit untouched."""
    publisher = RecordingPublisher()
    app = build_app(make_settings(tmp_path), redis, publisher)
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", content=streamed(json.dumps(JOB_MATCH).encode(), 7))
    assert resp.status_code == 202, resp.text
    assert publisher.published[0].body["variables"] == JOB_MATCH["variables"]


@pytest.fixture
async def worker_client(redis: RedisPort) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    runner = ScriptedRunner(["hi"])
    verifier = Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
    app = create_worker(worker_settings(), redis=redis, runner=runner, verifier=verifier)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://worker.test"
    ) as client:
        yield client, runner


@pytest.mark.parametrize("signature", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_worker_refuses_a_50mb_delivery(
    redis: RedisPort,
    worker_client: tuple[httpx.AsyncClient, Any],
    caplog: pytest.LogCaptureFixture,
    signature: bool,
    streamed: bool,
) -> None:
    """50 MB to a worker route: 401 without a signature, 413 with one; the task is untouched."""
    caplog.set_level(logging.INFO)
    client, runner = worker_client
    msg = await admit(redis, worker_settings())
    path, _, headers = signed(msg)
    if not signature:
        del headers["Upstash-Signature"]
    before = await snapshot(redis)
    total = 50 * MIB
    content: Any = big_body(total) if streamed else b"x" * total
    resp = await client.post(path, content=content, headers=headers)
    expected = (413, "payload_too_large") if signature else (401, "invalid_signature")
    assert (resp.status_code, resp.json()["error"]) == expected
    assert runner.calls == []
    assert await snapshot(redis) == before
    no_errors_logged(caplog)
