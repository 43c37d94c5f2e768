"""Failure paths that are fair to the user: retry after failure, trial limits, priority, 409."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from lib import keys
from lib.clock import now_ms
from lib.redis.port import RedisPort
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome, Run
from lib.tasks.store import TaskStore
from tests.support.producer import JOB_MATCH, RecordingPublisher, build_app, make_settings
from tests.support.producer import client_for as signed_in_client

SUMMARY = {"template": "resume_summary", "variables": {"resume_text": "Ten years of Go."}}


def cookieless(app: Any, **headers: str) -> httpx.AsyncClient:
    """A browser that drops its cookies after every request (each one is a new trial)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        headers=headers,
        cookies=None,
    )


async def post_fresh(app: Any, body: dict[str, Any], **headers: str) -> httpx.Response:
    async with cookieless(app, **headers) as client:
        return await client.post("/api/tasks", json=body)


def published(publisher: RecordingPublisher, task_id: str) -> TaskMessage:
    [pub] = [p for p in publisher.published if p.task_id == task_id]
    return TaskMessage.model_validate(pub.body)


async def test_a_failed_task_does_not_block_its_retry(tmp_path: Path, redis: RedisPort) -> None:
    """The same body after a failure (or a cancel) makes a new task; while done it is the same."""
    settings = make_settings(tmp_path)
    publisher = RecordingPublisher()
    app = build_app(settings, redis, publisher)
    store = TaskStore(redis, settings)
    async with signed_in_client(app, user="alice") as client:
        first = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        msg = published(publisher, first["task_id"])
        run = await store.start(msg, message_id="m1", now_ms=now_ms())
        assert isinstance(run, Run)
        failed = Outcome("failed", error_code="llm_error", error_message="down")
        assert await store.finish(msg, run, failed, now_ms()) == "finished"
        retry = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        assert retry["existing"] is False and retry["task_id"] != first["task_id"]
        # A cancelled one releases the request too.
        cancelled = await client.delete(retry["status_url"])
        assert cancelled.json()["status"] == "cancelled"
        third = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        assert third["existing"] is False and third["task_id"] != retry["task_id"]
        # While queued the same body answers with the same task, position and all.
        again = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        status = (await client.get(third["status_url"])).json()
    assert again["existing"] is True and again["task_id"] == third["task_id"]
    assert again["position"] == status["position"] == 1


async def test_existing_task_that_started_agrees_with_its_status(
    tmp_path: Path, redis: RedisPort
) -> None:
    """A POST returning a started task says position null, as GET does."""
    settings = make_settings(tmp_path)
    publisher = RecordingPublisher()
    app = build_app(settings, redis, publisher)
    async with signed_in_client(app, user="bob") as client:
        first = (await client.post("/api/tasks", json=SUMMARY)).json()
        msg = published(publisher, first["task_id"])
        await TaskStore(redis, settings).start(msg, message_id="m", now_ms=now_ms())
        again = (await client.post("/api/tasks", json=SUMMARY)).json()
        status = (await client.get(first["status_url"])).json()
    assert again["existing"] is True
    assert again["position"] is None and status["position"] is None


async def test_trial_limit_holds_without_cookies(tmp_path: Path, redis: RedisPort) -> None:
    """Dropping the trial cookie does not reset the limit: the client address is limited too."""
    app = build_app(make_settings(tmp_path), redis, RecordingPublisher())
    templates = ["resume_summary", "job_summary", "job_match"]
    for template in templates:
        body = {**JOB_MATCH, "template": template}
        if template == "resume_summary":
            body = SUMMARY
        if template == "job_summary":
            body = {"template": "job_summary", "variables": {"job_text": "Senior Go role."}}
        assert (await post_fresh(app, body)).status_code == 202
    refused = await post_fresh(
        app, {"template": "interview_prep", "variables": JOB_MATCH["variables"]}
    )
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) > 0
    # Signed-in users are not limited per address.
    async with signed_in_client(app, user="carol") as client:
        assert (await client.post("/api/tasks", json=SUMMARY)).status_code == 202


async def test_forwarded_address_counts_only_behind_trusted_proxies(
    tmp_path: Path, redis: RedisPort
) -> None:
    """X-Forwarded-For is ignored without a trusted proxy; behind one it names the client."""
    untrusted = build_app(make_settings(tmp_path), redis, RecordingPublisher())
    for i in range(3):
        body = {"template": "resume_summary", "variables": {"resume_text": f"Go {i}."}}
        response = await post_fresh(untrusted, body, **{"x-forwarded-for": f"10.0.0.{i}"})
        assert response.status_code == 202
    spoofed = await post_fresh(untrusted, SUMMARY, **{"x-forwarded-for": "10.9.9.9"})
    assert spoofed.status_code == 429  # one socket address: three tasks, whatever the header
    await redis.execute("FLUSHALL")
    proxied = build_app(make_settings(tmp_path, trusted_proxies=1), redis, RecordingPublisher())
    for i in range(4):
        body = {"template": "resume_summary", "variables": {"resume_text": f"Go {i}."}}
        headers = {"x-forwarded-for": f"6.6.6.6, 10.0.0.{i}"}  # the client wrote the first
        assert (await post_fresh(proxied, body, **headers)).status_code == 202
    assert await redis.execute("EXISTS", keys.rate_address("10.0.0.3", "tasks")) == 1
    assert await redis.execute("EXISTS", keys.rate_address("6.6.6.6", "tasks")) == 0


@pytest.mark.parametrize(
    ("user", "asked", "status", "stored"),
    [
        (None, None, 202, "0"),  # trial: always 0
        (None, 1, 422, None),
        ("dave", None, 202, "3"),  # the server's priority for job_match
        ("dave", 1, 202, "1"),  # may lower it
        ("dave", 4, 422, None),  # never raise it
    ],
)
async def test_priority_is_not_a_way_to_jump_the_queue(
    tmp_path: Path,
    redis: RedisPort,
    user: str | None,
    asked: int | None,
    status: int,
    stored: str | None,
) -> None:
    """Trial callers get 0; signed-in callers get the template's priority or lower."""
    settings = make_settings(tmp_path, template_priority={"job_match": 3})
    app = build_app(settings, redis, RecordingPublisher())
    body: dict[str, Any] = dict(JOB_MATCH)
    if asked is not None:
        body["priority"] = asked
    async with signed_in_client(app, user=user) as client:
        response = await client.post("/api/tasks", json=body)
    assert response.status_code == status, response.text
    if status == 202:
        fields = keys.task(response.json()["task_id"])
        assert await redis.execute("HGET", fields, "priority") == stored
    else:
        error = response.json()
        assert error["error"] == "priority_not_allowed"
        assert error["max_priority"] == (0 if user is None else 3)
        assert await redis.execute("DBSIZE") == 0


async def test_409_names_the_running_task_to_attach_to(tmp_path: Path, redis: RedisPort) -> None:
    """A second task of a kind gets 409 with the running task's id and events URL."""
    app = build_app(make_settings(tmp_path), redis, RecordingPublisher())
    async with signed_in_client(app, user="erin", **{"accept-language": "zh"}) as client:
        first = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        other = {**JOB_MATCH, "variables": {**JOB_MATCH["variables"], "job_text": "Go role."}}
        response = await client.post("/api/tasks", json=other)
    body = response.json()
    assert response.status_code == 409 and body["error"] == "task_already_running"
    assert body["task_id"] == first["task_id"] and body["events_url"] == first["events_url"]
    assert "A task" not in body["message"]  # in the caller's language


async def test_a_task_admitted_without_its_message_gets_it_on_resubmit(
    tmp_path: Path, redis: RedisPort
) -> None:
    """A crash between admission and publish: the same request publishes the ticket then."""
    failing = RecordingPublisher(fail=True)

    async def killed(task_id: str) -> None:
        # The function instance is stopped mid-request: no handler of ours runs.
        raise asyncio.CancelledError

    failing.before_fail = killed
    settings = make_settings(tmp_path)
    async with signed_in_client(build_app(settings, redis, failing), user="fay") as client:
        with pytest.raises(asyncio.CancelledError):
            await client.post("/api/tasks", json=JOB_MATCH)
    assert await redis.execute("ZCARD", keys.queue_waiting("q_glm_flash")) == 1
    publisher = RecordingPublisher()
    async with signed_in_client(build_app(settings, redis, publisher), user="fay") as client:
        again = (await client.post("/api/tasks", json=JOB_MATCH)).json()
    assert again["existing"] is True
    assert [p.task_id for p in publisher.published] == [again["task_id"]]
