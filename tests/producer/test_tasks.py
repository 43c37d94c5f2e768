"""Producer submit / status / cancel over HTTP (in process) against a real Valkey."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lib import keys
from lib.auth import TRIAL_COOKIE
from lib.redis.port import RedisPort
from lib.settings import Settings
from tests.support.producer import (
    JOB_MATCH,
    CountingRedis,
    RecordingPublisher,
    build_app,
    client_for,
    make_settings,
)

SUMMARY = {"template": "resume_summary", "variables": {"resume_text": "Ten years of Go."}}


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings, redis: RedisPort, publisher: RecordingPublisher) -> Any:
    return build_app(settings, redis, publisher)


async def test_submit_202_shape_and_publish(
    app: Any, redis: RedisPort, publisher: RecordingPublisher
) -> None:
    """A trial job_match is admitted free, published once with the task message, and queued."""
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    task_id = body["task_id"]
    assert {k: body[k] for k in ("tier", "queue_id", "model_id", "mode", "position")} == {
        "tier": "free",
        "queue_id": "q_glm_flash",
        "model_id": "glm-4.5-flash",
        "mode": "stream",
        "position": 1,
    }
    assert body["status_url"] == f"/api/tasks/{task_id}"
    assert body["events_url"] == f"/api/tasks/{task_id}/events"
    assert resp.headers["location"] == body["status_url"]
    [pub] = publisher.published
    assert pub.task_id == task_id and pub.slot_limit == 2
    assert pub.route.path == "/api/worker/free/text/stream"
    assert pub.body["variables"] == JOB_MATCH["variables"]
    assert pub.body["user_id"].startswith("trial-")
    assert pub.body["models"] == ["glm-4.5-flash"] and pub.body["lang"] == "en"
    assert await redis.execute("GET", keys.queue_pending("q_glm_flash")) == "1"
    assert await redis.execute("ZRANGE", keys.queue_waiting("q_glm_flash"), 0, -1) == [task_id]


async def test_paid_user_is_debited(app: Any, redis: RedisPort) -> None:
    """A signed-in user with balance gets the paid route and is debited once."""
    await redis.execute("SET", keys.quota("alice"), 5)
    async with client_for(app, user="alice") as client:
        body = (await client.post("/api/tasks", json=JOB_MATCH)).json()
    assert (body["tier"], body["queue_id"], body["model_id"]) == (
        "paid",
        "q_deepseek_chat",
        "deepseek-chat",
    )
    assert await redis.execute("GET", keys.quota("alice")) == "4"


async def test_submit_costs_one_round_trip(settings: Settings, redis: RedisPort) -> None:
    """Submit spends one round trip: the admit script (the spec rides along in it)."""
    counting = CountingRedis(redis)
    app = build_app(settings, counting, RecordingPublisher())
    async with client_for(app) as client:
        await client.post("/api/tasks", json=SUMMARY)  # loads the script (NOSCRIPT → EVAL)
        counting.calls.clear()
        resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert resp.status_code == 202
    assert counting.calls == ["EVALSHA"]


async def test_same_body_is_idempotent(app: Any, publisher: RecordingPublisher) -> None:
    """Resubmitting the same body returns the same task; while it is queued its message is
    published again under the same deduplication id (QStash keeps one message)."""
    async with client_for(app) as client:
        first = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        second = await client.post(
            "/api/tasks",
            json={
                **JOB_MATCH,
                "variables": {
                    "job_text": "Senior Python role.",
                    "resume_text": "Python developer, 5 years.",
                },
            },
        )
    assert second.status_code == 202
    assert second.json()["task_id"] == first["task_id"]
    assert second.json()["existing"] is True
    assert [p.task_id for p in publisher.published] == [first["task_id"]] * 2


@pytest.mark.parametrize(
    ("headers", "body_lang", "cookie", "expected"),
    [
        ({}, None, None, "Check the variables. Job description text: required."),
        ({"accept-language": "zh-CN,zh;q=0.9"}, None, None, "请检查变量。职位描述文本：必填。"),
        (
            {"accept-language": "zh-CN"},
            "en",
            None,
            "Check the variables. Job description text: required.",
        ),
        ({"accept-language": "en"}, None, "zh", "请检查变量。职位描述文本：必填。"),
    ],
    ids=["default-en", "accept-zh", "body-lang-wins", "cookie-zh"],
)
async def test_missing_variables_422_localized(
    app: Any,
    publisher: RecordingPublisher,
    headers: dict[str, str],
    body_lang: str | None,
    cookie: str | None,
    expected: str,
) -> None:
    """422 missing_variables names the field, in the caller's language."""
    payload: dict[str, Any] = {"template": "job_match", "variables": {"resume_text": "x"}}
    if body_lang:
        payload["lang"] = body_lang
    async with client_for(app, **headers) as client:
        if cookie:
            client.cookies.set("lang", cookie)
        resp = await client.post("/api/tasks", json=payload)
    assert resp.status_code == 422
    assert resp.json()["error"] == "missing_variables"
    assert resp.json()["message"] == expected
    [field] = resp.json()["fields"]
    assert (field["field"], field["code"]) == ("job_text", "missing")
    assert field["message"] in expected
    assert publisher.published == []


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"template": "poem", "variables": {}}, "unknown_template"),
        ({"template": "job_match"}, "invalid_request"),
        ({**JOB_MATCH, "priority": 99}, "invalid_request"),
        ({**JOB_MATCH, "service_id": "a:b"}, "invalid_request"),
        ({**JOB_MATCH, "extra": 1}, "invalid_request"),
    ],
    ids=["unknown-template", "no-variables", "priority-range", "service-id-unsafe", "extra"],
)
async def test_bad_requests_422(app: Any, payload: dict[str, Any], code: str) -> None:
    """Malformed bodies are 422 with a stable code and nothing admitted."""
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", json=payload)
    assert (resp.status_code, resp.json()["error"]) == (422, code)


async def test_non_json_body_422(app: Any) -> None:
    """A body that is not JSON is 422 invalid_request."""
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", content=b"{nope")
    assert (resp.status_code, resp.json()["error"]) == (422, "invalid_request")


@pytest.mark.parametrize(("user", "limit"), [(None, 3), ("alice", 15)], ids=["trial", "user"])
async def test_rate_limit_exact_numbers(app: Any, user: str | None, limit: int) -> None:
    """Trial users get 3 tasks per window, signed-in users 15; the next is 429 + Retry-After."""
    async with client_for(app, user=user) as client:
        for i in range(limit):
            resp = await client.post(
                "/api/tasks", json={**SUMMARY, "variables": {"resume_text": f"resume {i}"}}
            )
            assert resp.status_code == 202, (i, resp.text)
            # Cancel so the per-user lock never interferes: the window counts admissions.
            assert (await client.delete(resp.json()["status_url"])).status_code == 200
        resp = await client.post("/api/tasks", json=SUMMARY)
    assert resp.status_code == 429
    body = resp.json()
    assert body["error"] == "rate_limited"
    assert 295 <= body["retry_after"] <= 300
    assert resp.headers["retry-after"] == str(body["retry_after"])
    assert str(body["retry_after"]) in body["message"]


async def test_second_task_of_a_kind_409(app: Any, publisher: RecordingPublisher) -> None:
    """A second job_match while one is running is 409 task_already_running."""
    async with client_for(app) as client:
        assert (await client.post("/api/tasks", json=JOB_MATCH)).status_code == 202
        resp = await client.post(
            "/api/tasks",
            json={**JOB_MATCH, "variables": {"resume_text": "other", "job_text": "other"}},
        )
    assert (resp.status_code, resp.json()["error"]) == (409, "task_already_running")
    assert len(publisher.published) == 1


async def test_queue_full_publishes_and_debits_nothing(
    tmp_path: Path, redis: RedisPort, publisher: RecordingPublisher
) -> None:
    """Over the backpressure limit: 429 queue_full + Retry-After, no publish, no debit."""
    app = build_app(
        make_settings(tmp_path, queue_max_pending=1, queue_retry_after_s=7), redis, publisher
    )
    await redis.execute("SET", keys.quota("alice"), 5)
    await redis.execute("SET", keys.quota("bob"), 5)
    async with client_for(app, user="alice") as alice, client_for(app, user="bob") as bob:
        assert (await alice.post("/api/tasks", json=JOB_MATCH)).status_code == 202
        resp = await bob.post("/api/tasks", json=SUMMARY)
    assert resp.status_code == 429
    assert (resp.json()["error"], resp.json()["retry_after"]) == ("queue_full", 7)
    assert resp.headers["retry-after"] == "7"
    assert len(publisher.published) == 1
    assert await redis.execute("GET", keys.quota("bob")) == "5"
    assert await redis.execute("GET", keys.queue_pending("q_deepseek_chat")) == "1"
    assert await redis.execute("EXISTS", keys.user_lock("bob", "resume_summary")) == 0


async def assert_released(redis: RedisPort, *, quota: str) -> None:
    """alice's job_match holds nothing: her balance is `quota`, not waiting, not locked."""
    assert await redis.execute("GET", keys.quota("alice")) == quota
    assert await redis.execute("ZCARD", keys.queue_waiting("q_deepseek_chat")) == 0
    assert await redis.execute("EXISTS", keys.user_lock("alice", "job_match")) == 0


async def test_publish_failure_leaves_nothing(
    app: Any, redis: RedisPort, publisher: RecordingPublisher
) -> None:
    """A failed publish is 503 publish_failed and undoes counter, queue, lock and debit."""
    await redis.execute("SET", keys.quota("alice"), 3)
    publisher.fail = True
    async with client_for(app, user="alice") as client:
        resp = await client.post("/api/tasks", json=JOB_MATCH)
        assert (resp.status_code, resp.json()["error"]) == (503, "publish_failed")
        await assert_released(redis, quota="3")
        assert await redis.execute("GET", keys.queue_pending("q_deepseek_chat")) in (None, "0")
        assert await redis.execute("KEYS", "task:*") == []
        assert await redis.execute("KEYS", "idem:*") == []
        publisher.fail = False
        retry = await client.post("/api/tasks", json=JOB_MATCH)
    assert retry.status_code == 202 and retry.json()["tier"] == "paid"


async def test_publish_failure_after_start_keeps_the_task(
    app: Any, redis: RedisPort, publisher: RecordingPublisher
) -> None:
    """A publish that "fails" after the task already started is not undone: 202, debit kept."""
    await redis.execute("SET", keys.quota("alice"), 3)

    async def started(task_id: str) -> None:
        await redis.execute("HSET", keys.task(task_id), "status", "running")

    publisher.fail, publisher.before_fail = True, started
    async with client_for(app, user="alice") as client:
        resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert resp.status_code == 202 and resp.json()["tier"] == "paid"
    assert await redis.execute("GET", keys.quota("alice")) == "2"
    assert await redis.execute("EXISTS", keys.user_lock("alice", "job_match")) == 1


async def test_status_for_owner(app: Any) -> None:
    """The owner sees status, position, model and timestamps of a queued task."""
    async with client_for(app, user="alice") as client:
        task = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        resp = await client.get(task["status_url"])
    assert resp.status_code == 200
    view = resp.json()
    assert (view["task_id"], view["status"], view["position"]) == (task["task_id"], "queued", 1)
    assert view["model_id"] == "glm-4.5-flash" and view["attempts"] == 0
    assert view["created_ms"] > 0 and view["result"] is None
    assert "user_id" not in view and "message_id" not in view


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_non_owner_gets_404(app: Any, redis: RedisPort, method: str) -> None:
    """Another user (or a trial visitor) cannot read or cancel a task: 404, task untouched."""
    async with client_for(app, user="alice") as alice:
        task = (await alice.post("/api/tasks", json=JOB_MATCH)).json()
    for other in (client_for(app, user="mallory"), client_for(app)):
        async with other:
            resp = await other.request(method, task["status_url"])
        assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    assert await redis.execute("HGET", keys.task(task["task_id"]), "status") == "queued"


async def test_unknown_task_404(app: Any) -> None:
    """A task id that does not exist is 404 not_found."""
    async with client_for(app) as client:
        resp = await client.get("/api/tasks/nope")
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")


async def test_cancel_queued_task(
    app: Any, redis: RedisPort, publisher: RecordingPublisher
) -> None:
    """Cancel refunds, unlocks and unqueues; its message stays, a ticket for the queue."""
    await redis.execute("SET", keys.quota("alice"), 2)
    async with client_for(app, user="alice") as client:
        task = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        resp = await client.delete(task["status_url"])
        again = await client.delete(task["status_url"])
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert [p.task_id for p in publisher.published] == [task["task_id"]]
    await assert_released(redis, quota="2")
    assert await redis.execute("EXISTS", keys.queue_specs("q_deepseek_chat")) == 0
    assert (again.status_code, again.json()["error"]) == (409, "task_not_cancellable")


async def test_cancel_started_task_409(app: Any, redis: RedisPort) -> None:
    """A task that has started cannot be cancelled: 409 task_not_cancellable."""
    async with client_for(app) as client:
        task = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        await redis.execute("HSET", keys.task(task["task_id"]), "status", "running")
        resp = await client.delete(task["status_url"], headers={"accept-language": "zh"})
    assert resp.status_code == 409
    assert resp.json() == {
        "error": "task_not_cancellable",
        "message": "该任务已开始或已结束，无法取消。",
    }


async def test_trial_cookie_set_once_and_reused(app: Any) -> None:
    """First contact sets a signed trial cookie; later requests reuse it (same owner)."""
    async with client_for(app) as client:
        first = await client.post("/api/tasks", json=JOB_MATCH)
        set_cookie = first.headers.get("set-cookie", "")
        assert set_cookie.startswith(f"{TRIAL_COOKIE}=trial-")
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        second = await client.get(first.json()["status_url"])
    assert second.status_code == 200
    assert "set-cookie" not in second.headers


async def test_forged_trial_cookie_gets_a_new_identity(app: Any) -> None:
    """A forged trial cookie is replaced, and its holder owns nothing."""
    async with client_for(app) as owner:
        task = (await owner.post("/api/tasks", json=JOB_MATCH)).json()
        value = owner.cookies[TRIAL_COOKIE]
    forged = value.split(".")[0] + ".forged"
    async with client_for(app, cookie=f"{TRIAL_COOKIE}={forged}") as other:
        resp = await other.get(task["status_url"])
    assert resp.status_code == 404
    assert resp.headers["set-cookie"].startswith(f"{TRIAL_COOKIE}=trial-")
    assert forged not in resp.headers["set-cookie"]


async def test_invalid_bearer_401(app: Any) -> None:
    """An invalid bearer token is 401 unauthorized, never a trial fallback."""
    async with client_for(app, authorization="Bearer junk") as client:
        resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert (resp.status_code, resp.json()["error"]) == (401, "unauthorized")
    assert "set-cookie" not in resp.headers


async def test_signed_in_user_gets_no_trial_cookie(app: Any) -> None:
    """A bearer-token caller is never given a trial cookie."""
    async with client_for(app, user="alice") as client:
        resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert resp.status_code == 202 and "set-cookie" not in resp.headers
