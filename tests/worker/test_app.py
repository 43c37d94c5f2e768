"""The worker endpoint: signature checks, start guard, streaming into events, finish in finally."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from lib import keys
from lib.clock import now_ms
from lib.errors import LLMError
from lib.local.qstash.signing import sign
from lib.qstash.verify import Verifier
from lib.redis.port import RedisPort, pairs_to_dict
from lib.routing import PROVIDERS, ModelId, route
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, Settings
from lib.tasks.admission import Admission
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Run
from lib.tasks.store import TaskStore
from lib.usage.record import UsageRecord
from tests.support.producer import RecordingPublisher
from worker.app import create_app
from worker.delivery import Delta, Fallback, Record, Restart, RunOutput

BASE = "http://worker.test"


class ScriptedRunner:
    """A runner standing in for the LLM layer: emits scripted deltas, then answers or fails."""

    def __init__(
        self,
        deltas: list[str],
        *,
        delay: float = 0.0,
        fail: Exception | None = None,
        degraded: bool = False,
    ) -> None:
        self.deltas = deltas
        self.delay = delay
        self.fail = fail
        self.degraded = degraded
        self.calls: list[tuple[str, str]] = []

    async def run(
        self,
        msg: TaskMessage,
        model: ModelId,
        *,
        on_delta: Delta,
        on_restart: Restart,
        on_fallback: Fallback,
        record: Record,
    ) -> RunOutput:
        self.calls.append((msg.task_id, model))
        for delta in self.deltas:
            await asyncio.sleep(self.delay)
            await on_delta(delta)
        ok = self.fail is None
        record(
            UsageRecord(
                user_id=msg.user_id,
                service_id=msg.service_id,
                task_template_id=msg.template,
                provider=PROVIDERS[model],
                model_id=model,
                input_tokens=10,
                output_tokens=5,
                total_tokens=15,
                is_success=ok,
            )
        )
        if self.fail is not None:
            raise self.fail
        if self.degraded:
            return RunOutput({"degraded": True, "bullets": self.deltas}, model, degraded=True)
        return RunOutput({"text": "".join(self.deltas)}, model)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_base_url": BASE,
        "qstash_current_signing_key": DEV_CURRENT_SIGNING_KEY,
        "qstash_next_signing_key": DEV_NEXT_SIGNING_KEY,
        "token_flush_ms": 50,
        "token_flush_max": 10_000,
        "paid_task_cost": 1,
    }
    values.update(overrides)
    return Settings(**values)


async def admit(redis: RedisPort, settings: Settings, user: str = "u1") -> TaskMessage:
    """Admit a free job_match task and return the message QStash would deliver."""
    task_id = uuid.uuid4().hex
    a = Admission(
        task_id=task_id,
        user_id=user,
        user_kind="user",
        service_id="svc",
        template="job_match",
        lang="zh",
        priority=0,
        idem_digest=uuid.uuid4().hex,
        paid=route("job_match", "paid"),
        free=route("job_match", "free"),
        now_ms=now_ms(),
    )
    got = await TaskStore(redis, settings).admit(a)
    return TaskMessage.build(a.spec(), got.route)


def signed(
    msg: TaskMessage,
    *,
    key: str = DEV_CURRENT_SIGNING_KEY,
    url: str | None = None,
    now: float | None = None,
    body: bytes | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    raw = msg.model_dump_json().encode()
    path = f"/api/worker/{msg.tier}/{msg.modality}/{msg.mode}"
    signature = sign(key, url=url or BASE + path, body=raw, now=now)
    return (
        path,
        body if body is not None else raw,
        {
            "Upstash-Signature": signature,
            "Upstash-Message-Id": "msg_1",
            "Content-Type": "application/json",
        },
    )


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client_for(redis: RedisPort, publisher: RecordingPublisher) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def build(runner: ScriptedRunner, settings: Settings) -> httpx.AsyncClient:
        verifier = Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
        app = create_app(
            settings, redis=redis, runner=runner, verifier=verifier, publisher=publisher
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)
        clients.append(client)
        return client

    yield build
    for c in clients:
        await c.aclose()


async def event_types(redis: RedisPort, msg: TaskMessage) -> list[dict[str, str]]:
    entries = await redis.execute(
        "XRANGE", keys.events(msg.user_id, msg.service_id, msg.task_id), "-", "+"
    )
    return [pairs_to_dict(e[1]) for e in entries]


async def running(redis: RedisPort, msg: TaskMessage, timeout: float = 10.0) -> None:
    """Wait until the delivery under way has started the task (a slow machine takes a while)."""
    deadline = time.monotonic() + timeout
    while await redis.execute("HGET", keys.task(msg.task_id), "status") != "running":
        assert time.monotonic() < deadline, "the task never started"
        await asyncio.sleep(0.01)


async def held(redis: RedisPort) -> dict[str, Any]:
    """The counters a task holds while alive: pending, lock, leases."""
    return {
        "pending": await redis.execute("GET", keys.queue_pending("q_glm_flash")),
        "lock": await redis.execute("GET", keys.user_lock("u1", "job_match")),
        "leases": await redis.execute("ZCARD", keys.model_pool("glm-4.5-flash", "free")),
    }


@pytest.mark.parametrize(
    "forgery", ["unsigned", "wrong_key", "tampered", "other_url", "expired", "garbage"]
)
async def test_forged_deliveries_rejected_and_change_nothing(
    redis: RedisPort, client_for: Any, forgery: str
) -> None:
    """Unsigned, forged, tampered, expired or misaddressed deliveries get 401; nothing moves."""
    settings = make_settings()
    runner = ScriptedRunner(["hi"])
    client = client_for(runner, settings)
    msg = await admit(redis, settings)
    before = await held(redis)
    if forgery == "unsigned":
        path, body, headers = signed(msg)
        del headers["Upstash-Signature"]
    elif forgery == "wrong_key":
        path, body, headers = signed(msg, key="sig_not_the_right_key_at_all_0000")
    elif forgery == "tampered":
        path, body, headers = signed(msg)
        body = body.replace(b'"lang":"zh"', b'"lang":"en"')
    elif forgery == "other_url":
        path, body, headers = signed(msg, url="http://evil.test/api/worker/free/text/stream")
    elif forgery == "expired":
        path, body, headers = signed(msg, now=time.time() - 3600)
    else:
        path, body, headers = signed(msg)
        headers["Upstash-Signature"] = "not.a.jwt"
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    assert runner.calls == []
    assert await held(redis) == before
    assert [e["type"] for e in await event_types(redis, msg)] == ["queued"]


async def test_next_key_and_small_clock_skew_accepted(redis: RedisPort, client_for: Any) -> None:
    """A signature by the next key, issued a few seconds in the future, is accepted."""
    settings = make_settings()
    client = client_for(ScriptedRunner(["ok"]), settings)
    msg = await admit(redis, settings)
    path, body, headers = signed(msg, key=DEV_NEXT_SIGNING_KEY, now=time.time() + 3)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "done"


async def test_stream_tokens_batched_then_done_and_released(
    redis: RedisPort, client_for: Any
) -> None:
    """Deltas land as a few batched token events; result, done, and every counter released."""
    settings = make_settings(token_flush_ms=30)
    deltas = [f"t{i} " for i in range(40)]
    client = client_for(ScriptedRunner(deltas, delay=0.005), settings)
    msg = await admit(redis, settings)
    path, body, headers = signed(msg)
    began = time.monotonic()
    response = await client.post(path, content=body, headers=headers)
    elapsed = time.monotonic() - began
    assert response.json()["status"] == "done"
    events = await event_types(redis, msg)
    types = [e["type"] for e in events]
    assert types[:2] == ["queued", "started"] and types[-2:] == ["result", "done"]
    tokens = [json.loads(e["data"])["text"] for e in events if e["type"] == "token"]
    assert "".join(tokens) == "".join(deltas)
    # Batched: the first delta at once, then at most one write per 30 ms, then what is left.
    # Counted against the measured run, not the nominal 0.2 s: load stretches the 5 ms
    # sleeps, and with them the number of windows (one write per delta would be 40).
    assert 2 <= len(tokens) <= 2 + elapsed / 0.03, (len(tokens), elapsed)
    done = json.loads(events[-1]["data"])
    assert done["usage"]["total_tokens"] == 15 and done["attempts"] == 1
    assert await held(redis) == {"pending": None, "lock": None, "leases": 0}
    assert await redis.execute("XLEN", keys.usage_stream()) == 1


async def test_runner_failure_fails_task_refunds_and_localizes(
    redis: RedisPort, client_for: Any
) -> None:
    """An LLM failure ends in `error` with a zh message, refund, and nothing held."""
    settings = make_settings()
    await redis.execute("SET", keys.quota("u1"), 1)
    client = client_for(ScriptedRunner(["partial"], fail=LLMError("down")), settings)
    msg = await admit(redis, settings)
    assert msg.tier == "paid"
    path, body, headers = signed(msg)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "failed"
    error = json.loads((await event_types(redis, msg))[-1]["data"])
    assert error["code"] == "llm_error" and "退还" in error["message"]
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    assert await redis.execute("ZCARD", keys.model_pool("deepseek-chat", "paid")) == 0


async def test_degraded_result_is_done_flagged_and_refunded(
    redis: RedisPort, client_for: Any
) -> None:
    """A degraded result: done, `degraded` in status and done event, the unit back, rows say so."""
    settings = make_settings()
    await redis.execute("SET", keys.quota("u1"), 1)
    client = client_for(ScriptedRunner(["Jane Doe"], degraded=True), settings)
    msg = await admit(redis, settings)
    assert msg.tier == "paid" and await redis.execute("GET", keys.quota("u1")) == "0"
    path, body, headers = signed(msg)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "done"
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    view = (await TaskStore(redis, settings).get(msg.task_id, "u1")).public()
    assert (view["status"], view["degraded"], view["result"]["degraded"]) == ("done", True, True)
    events = await event_types(redis, msg)
    assert [e["type"] for e in events][-2:] == ["result", "done"]
    assert json.loads(events[-2]["data"])["degraded"] is True
    assert json.loads(events[-1]["data"])["degraded"] is True
    assert await redis.execute("HGET", keys.task(msg.task_id), "refunded") == "1"
    [entry] = await redis.execute("XRANGE", keys.usage_stream(), "-", "+")
    [row] = json.loads(pairs_to_dict(entry[1])["rows"])
    assert (row["is_degraded"], row["task_id"], row["attempt"]) == (True, msg.task_id, 1)


async def test_a_good_result_is_charged_and_not_flagged(redis: RedisPort, client_for: Any) -> None:
    """The same paid task answered normally keeps its unit spent and `degraded` false."""
    settings = make_settings()
    await redis.execute("SET", keys.quota("u1"), 1)
    client = client_for(ScriptedRunner(["ok"]), settings)
    msg = await admit(redis, settings)
    path, body, headers = signed(msg)
    assert (await client.post(path, content=body, headers=headers)).json()["status"] == "done"
    assert await redis.execute("GET", keys.quota("u1")) == "0"
    view = (await TaskStore(redis, settings).get(msg.task_id, "u1")).public()
    assert view["degraded"] is False
    [entry] = await redis.execute("XRANGE", keys.usage_stream(), "-", "+")
    [row] = json.loads(pairs_to_dict(entry[1])["rows"])
    assert row["is_degraded"] is False and row["task_id"] == msg.task_id


async def test_redelivery_after_done_is_acknowledged_without_running(
    redis: RedisPort, client_for: Any
) -> None:
    """At-least-once: a second delivery of a finished task answers 200 and runs nothing."""
    settings = make_settings()
    runner = ScriptedRunner(["a"])
    client = client_for(runner, settings)
    msg = await admit(redis, settings)
    path, body, headers = signed(msg)
    assert (await client.post(path, content=body, headers=headers)).json()["status"] == "done"
    again = await client.post(path, content=body, headers=headers)
    assert again.status_code == 200 and again.json() == {
        "task_id": msg.task_id,
        "status": "skipped",
        "reason": "no_work",
    }
    assert len(runner.calls) == 1


async def test_no_free_slot_answers_429_with_retry_after(redis: RedisPort, client_for: Any) -> None:
    """With the pool full, the delivery comes back when the earliest lease can end."""
    settings = make_settings(glm_flash_max_workers=1)
    runner = ScriptedRunner(["x"])
    client = client_for(runner, settings)
    member = "q_glm_flash|0|other|n"
    expiry = now_ms() + 12_000
    await redis.execute("ZADD", keys.model_pool("glm-4.5-flash", "free"), expiry, member)
    msg = await admit(redis, settings)
    path, body, headers = signed(msg)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 429 and response.headers["Retry-After"] in ("11", "12")
    assert runner.calls == []
    assert await redis.execute("ZRANK", keys.queue_waiting("q_glm_flash"), msg.task_id) == 0


async def test_wrong_route_or_bad_body_is_non_retryable(redis: RedisPort, client_for: Any) -> None:
    """A body that is not a task, or a task on another route, gets 489 + NonRetryable."""
    settings = make_settings()
    client = client_for(ScriptedRunner([]), settings)
    msg = await admit(redis, settings)
    raw = msg.model_dump_json().encode()
    url = BASE + "/api/worker/paid/vision/batch"
    headers = {"Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url=url, body=raw)}
    response = await client.post("/api/worker/paid/vision/batch", content=raw, headers=headers)
    assert response.status_code == 489
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    junk = b'{"hello": 1}'
    path = "/api/worker/free/text/stream"
    headers = {"Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url=BASE + path, body=junk)}
    assert (await client.post(path, content=junk, headers=headers)).status_code == 489


def failure_callback(msg: TaskMessage, message_id: str = "msg_1") -> tuple[bytes, dict[str, str]]:
    """A signed failure-callback delivery for `msg`, as QStash sends it after the DLQ."""
    payload = json.dumps(
        {
            "status": 500,
            "sourceMessageId": message_id,
            "sourceBody": base64.b64encode(msg.model_dump_json().encode()).decode(),
        }
    ).encode()
    url = BASE + "/api/worker/failed"
    return payload, {"Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url=url, body=payload)}


async def test_failure_callback_replaces_the_ticket_while_work_remains(
    redis: RedisPort, client_for: Any, publisher: RecordingPublisher
) -> None:
    """A dead-lettered message of a queued task is replaced by a new ticket; nothing fails."""
    settings = make_settings(ticket_reissues=2)
    client = client_for(ScriptedRunner([]), settings)
    msg = await admit(redis, settings)
    payload, headers = failure_callback(msg)
    response = await client.post("/api/worker/failed", content=payload, headers=headers)
    assert response.json() == {"task_id": msg.task_id, "action": "reissued"}
    [again] = publisher.published
    assert again.task_id == f"{msg.task_id}.1"  # the deduplication id of the new ticket
    assert TaskMessage.model_validate(again.body) == msg.model_copy(update={"generation": 1})
    assert again.route.path == f"/api/worker/{msg.tier}/{msg.modality}/{msg.mode}"
    assert await redis.execute("HGET", keys.task(msg.task_id), "status") == "queued"


async def test_failure_callback_fails_task_and_releases_once_reissues_are_spent(
    redis: RedisPort, client_for: Any, publisher: RecordingPublisher
) -> None:
    """With the reissue budget spent, the queued task fails, is refunded, and nothing is held."""
    settings = make_settings(ticket_reissues=2)
    await redis.execute("SET", keys.quota("u1"), 1)
    client = client_for(ScriptedRunner([]), settings)
    msg = await admit(redis, settings)
    payload, headers = failure_callback(msg.model_copy(update={"generation": 2}))
    response = await client.post("/api/worker/failed", content=payload, headers=headers)
    assert response.json() == {"task_id": msg.task_id, "action": "fail", "failed": [msg.task_id]}
    assert publisher.published == []
    assert await redis.execute("GET", keys.quota("u1")) == "1"
    assert await redis.execute("ZCARD", keys.queue_waiting("q_deepseek_chat")) == 0
    assert await redis.execute("HGET", keys.task(msg.task_id), "error") == "delivery_failed"


async def test_failure_callback_never_fails_a_live_attempt(
    redis: RedisPort, client_for: Any, publisher: RecordingPublisher
) -> None:
    """A dead-lettered duplicate of a running task fails nothing: its attempt is alive."""
    settings = make_settings(ticket_reissues=0)
    client = client_for(ScriptedRunner([]), settings)
    msg = await admit(redis, settings)
    started = await TaskStore(redis, settings).start(msg, message_id="msg_1", now_ms=now_ms())
    assert isinstance(started, Run)
    payload, headers = failure_callback(msg)
    response = await client.post("/api/worker/failed", content=payload, headers=headers)
    assert response.json() == {"task_id": msg.task_id, "action": "fail", "failed": []}
    assert await redis.execute("HGET", keys.task(msg.task_id), "status") == "running"


async def test_lease_expired_without_takeover_asks_for_a_redelivery(
    redis: RedisPort, client_for: Any
) -> None:
    """A stall outlives the lease and nobody takes over: 503 + Retry-After, the task stays
    running and held, and the redelivery restarts it and finishes it once."""
    settings = make_settings(lease_ms=300)
    # A stall: nothing happens for 10 s (the cancel lands in a sleep, not in a Redis call).
    client = client_for(ScriptedRunner(["late"], delay=10), settings)
    msg = await admit(redis, settings)
    path, body, headers = signed(msg)
    request = asyncio.create_task(client.post(path, content=body, headers=headers))
    await running(redis, msg)
    # The lease ran out during the stall and another start purged it; no delivery took over.
    await redis.execute("DEL", keys.model_pool("glm-4.5-flash", "free"))
    response = await asyncio.wait_for(request, 5)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(settings.start_retry_after_s)
    assert response.json()["reason"] == "lease_lost"
    assert await redis.execute("HGET", keys.task(msg.task_id), "status") == "running"
    assert await held(redis) == {"pending": "1", "lock": msg.task_id, "leases": 0}

    redelivery = client_for(ScriptedRunner(["a", "b"]), settings)
    response = await redelivery.post(path, content=body, headers=headers)
    assert response.json()["status"] == "done"
    types = [e["type"] for e in await event_types(redis, msg)]
    assert types.count("restart") == 1 and types.count("done") == 1 and "error" not in types
    assert await held(redis) == {"pending": None, "lock": None, "leases": 0}


async def test_lost_lease_stops_the_attempt(redis: RedisPort, client_for: Any) -> None:
    """When another attempt takes over (lease gone), the running attempt stops, changing nothing."""
    settings = make_settings(lease_ms=300)
    runner = ScriptedRunner(["slow"] * 50, delay=0.05)
    client = client_for(runner, settings)
    msg = await admit(redis, settings)
    path, body, headers = signed(msg)
    request = asyncio.create_task(client.post(path, content=body, headers=headers))
    await running(redis, msg)
    # The lease expired (e.g. a long stall) and a redelivery took the task over.
    await redis.execute("DEL", keys.model_pool("glm-4.5-flash", "free"))
    store = TaskStore(redis, settings)
    takeover = await store.start(msg, message_id="msg_1", now_ms=now_ms())
    assert isinstance(takeover, Run) and takeover.restarted
    response = await asyncio.wait_for(request, 5)
    # The message is still a ticket its queue may need: it asks to come back.
    assert response.status_code == 503 and response.json()["reason"] == "superseded"
    assert await redis.execute("HGET", keys.task(msg.task_id), "status") == "running"
    assert await redis.execute("HGET", keys.task(msg.task_id), "lease") == takeover.lease_id


async def test_a_delivery_runs_the_head_of_its_queue(redis: RedisPort, client_for: Any) -> None:
    """The later task's message arrives first: it runs the earlier task, from its spec."""
    settings = make_settings()
    runner = ScriptedRunner(["x"])
    client = client_for(runner, settings)
    first = await admit(redis, settings, user="u1")
    second = await admit(redis, settings, user="u2")
    path, body, headers = signed(second)
    response = await client.post(path, content=body, headers=headers)
    assert response.json() == {"task_id": first.task_id, "ticket": second.task_id, "status": "done"}
    assert runner.calls == [(first.task_id, "glm-4.5-flash")]
    assert await redis.execute("HGET", keys.task(second.task_id), "status") == "queued"
