"""Error mapping and language choice: `{"error", "message"}` in the caller's language."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lib.errors import QueueFull, TaskAlreadyRunning
from lib.http.errors import error_response
from lib.i18n import choose_lang
from lib.local.embedded import free_port
from lib.redis.port import RedisPort
from lib.redis.tcp import TcpRedis
from tests.support.producer import (
    JOB_MATCH,
    RecordingPublisher,
    build_app,
    client_for,
    make_settings,
)


@pytest.mark.parametrize(
    ("explicit", "cookie", "accept", "expected"),
    [
        (None, None, None, "en"),
        ("zh", None, None, "zh"),
        ("zh-CN", "en", "en", "zh"),
        ("fr", "zh", "en", "zh"),  # unsupported explicit falls through to the cookie
        (None, "zh_TW", "en-US", "zh"),
        (None, "de", "fr, zh-CN;q=0.8, en;q=0.5", "zh"),
        (None, None, "en;q=0.4, zh;q=0.9", "zh"),
        (None, None, "zh;q=0", "en"),  # q=0 means "not acceptable"
        (None, None, "fr-FR, de", "en"),
        ("EN", "zh", "zh", "en"),
    ],
)
def test_choose_lang(
    explicit: str | None, cookie: str | None, accept: str | None, expected: str
) -> None:
    """Explicit lang → cookie → Accept-Language (by q) → en."""
    assert choose_lang(explicit, cookie, accept) == expected


def test_error_response_carries_retry_after() -> None:
    """Retry-After errors put the seconds in the header, the body and the message."""
    resp = error_response(QueueFull(retry_after=9), "zh")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "9"
    assert bytes(resp.body).decode() == (
        '{"error":"queue_full","message":"当前队列已满，请在 9 秒后重试。","retry_after":9}'
    )


def test_error_response_hides_internal_params() -> None:
    """Only client-facing params reach the body: the queue-full tier and details stay inside."""
    resp = error_response(QueueFull("redis said x", retry_after=3, tier="secret-tier"), "en")
    assert b"secret-tier" not in resp.body and b"redis said" not in resp.body


def test_already_running_names_the_callers_task_to_attach_to() -> None:
    """409 task_already_running carries the caller's running task and its events URL."""
    resp = error_response(TaskAlreadyRunning(task_id="t1", events_url="/api/tasks/t1/events"), "en")
    body = json.loads(bytes(resp.body))
    assert (resp.status_code, body["task_id"], body["events_url"]) == (
        409,
        "t1",
        "/api/tasks/t1/events",
    )


@pytest.fixture
def app(tmp_path: Path, redis: RedisPort) -> Any:
    return build_app(make_settings(tmp_path), redis, RecordingPublisher())


async def test_query_lang_is_remembered_in_cookie(app: Any) -> None:
    """`?lang=zh` answers in Chinese and sets the `lang` cookie that later requests use."""
    async with client_for(app) as client:
        first = await client.get("/api/tasks/nope?lang=zh")
        assert "lang=zh" in first.headers.get_list("set-cookie")[-1]
        second = await client.get("/api/tasks/nope")
    assert first.json()["message"] == second.json()["message"] == "未找到。"


async def test_unknown_route_and_method_are_json(app: Any) -> None:
    """Routing errors use the same JSON shape (404 not_found, 405 invalid_request)."""
    async with client_for(app) as client:
        missing = await client.get("/api/nothing")
        wrong = await client.put("/api/tasks", json=JOB_MATCH)
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "invalid_request")
    assert "allow" in wrong.headers


async def test_redis_down_is_a_localized_503_and_publishes_nothing(tmp_path: Path) -> None:
    """Redis unreachable: submit and status answer 503 service_unavailable, in zh if asked."""
    redis = TcpRedis.from_url(f"redis://127.0.0.1:{free_port()}/0", pool_timeout_s=1.0)
    publisher = RecordingPublisher()
    app = build_app(make_settings(tmp_path), redis, publisher)
    try:
        async with client_for(app, user="alice", **{"accept-language": "zh"}) as client:
            submit = await client.post("/api/tasks", json=JOB_MATCH)
            status = await client.get("/api/tasks/0123456789abcdef0123456789abcdef")
    finally:
        await redis.aclose()
    assert submit.status_code == status.status_code == 503
    assert submit.json() == {"error": "service_unavailable", "message": "服务暂时不可用。"}
    assert publisher.published == []
