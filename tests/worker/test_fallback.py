"""After a fallback: the task's model, its `started` events and `done.model` agree.

The real worker and LLM runner (ChatOpenAI) on a real Valkey, against the fake provider on
loopback, whose first model of the paid route refuses or fails every call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lib import keys
from lib.clock import now_ms
from lib.local.qstash.signing import sign
from lib.local.serve import ServerThread
from lib.qstash.verify import Verifier
from lib.redis.port import RedisPort, load_script, pairs_to_dict, run_script
from lib.routing import Template, route
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, Settings
from lib.tasks.admission import Admission
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome, Run
from lib.tasks.store import TaskStore
from tests.support.llm_samples import variables
from tests.support.producer import RecordingPublisher
from tests.support.provider import Fail, FakeProvider, Reply
from worker.app import create_app
from worker.llm import LLMRunner
from worker.tokens import Attempt, TokenBatcher

BASE = "http://worker.test"
ANSWERS: dict[str, str] = {
    "job_match": json.dumps(
        {
            "match_score": 72,
            "overall_assessment": "A good match on Python.",
            "strengths": [{"point": "Python", "evidence": "8 years"}],
            "weaknesses": [{"point": "Kubernetes", "suggestion": "Name a cluster you ran."}],
            "cover_letter_script": "Dear Globex, …",
        }
    ),
    "job_summary": json.dumps(
        {"jobTitle": "Backend Engineer", "mustHaves": ["Python"], "niceToHaves": ["Kafka"]}
    ),
}


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[FakeProvider, str]]:
    """The fake OpenAI-wire provider on loopback, for every model of the route."""
    fake = FakeProvider()
    with ServerThread(fake.app()) as server:
        yield fake, f"{server.url}/v1"


@pytest.fixture
def fake(provider: tuple[FakeProvider, str]) -> FakeProvider:
    provider[0].reset()
    return provider[0]


@pytest.fixture
def settings(provider: tuple[FakeProvider, str]) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        app_base_url=BASE,
        qstash_current_signing_key=SecretStr(DEV_CURRENT_SIGNING_KEY),
        qstash_next_signing_key=SecretStr(DEV_NEXT_SIGNING_KEY),
        openai_compat_base_url=provider[1],
        paid_task_cost=1,
        llm_retries=1,
        llm_backoff_s=0.001,
        llm_timeout_s=30,
    )


@pytest.fixture
async def worker(redis: RedisPort, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The worker app with the real LLM runner."""
    runner = LLMRunner(settings, redis)
    verifier = Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
    app = create_app(
        settings, redis=redis, runner=runner, verifier=verifier, publisher=RecordingPublisher()
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=60
    ) as client:
        yield client
    await runner.aclose()


async def admit_paid(redis: RedisPort, settings: Settings, template: Template) -> TaskMessage:
    """A paid task (deepseek-chat, then glm-4.5) with real variables."""
    await redis.execute("SET", keys.quota("u1"), 1)
    a = Admission(
        task_id=uuid.uuid4().hex,
        user_id="u1",
        user_kind="user",
        service_id="svc",
        template=template,
        lang="en",
        priority=0,
        idem_digest=uuid.uuid4().hex,
        paid=route(template, "paid"),
        free=route(template, "free"),
        now_ms=now_ms(),
        variables=variables(template),
    )
    got = await TaskStore(redis, settings).admit(a)
    assert got.tier == "paid" and got.route.models == ("deepseek-chat", "glm-4.5")
    return TaskMessage.build(a.spec(), got.route)


async def deliver(client: httpx.AsyncClient, msg: TaskMessage) -> dict[str, Any]:
    raw = msg.model_dump_json().encode()
    path = f"/api/worker/{msg.tier}/{msg.modality}/{msg.mode}"
    headers = {
        "Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url=BASE + path, body=raw),
        "Upstash-Message-Id": "msg_1",
        "Content-Type": "application/json",
    }
    response = await client.post(path, content=raw, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def events(redis: RedisPort, msg: TaskMessage) -> list[tuple[str, Any]]:
    entries = await redis.execute(
        "XRANGE", keys.events(msg.user_id, msg.service_id, msg.task_id), "-", "+"
    )
    out = []
    for _, flat in entries:
        fields = pairs_to_dict(flat)
        out.append((fields["type"], json.loads(fields["data"])))
    return out


@pytest.mark.parametrize(
    ("template", "failure"),
    [("job_match", Fail(401, "bad key")), ("job_summary", Fail(503)), ("job_summary", None)],
)
async def test_model_after_fallback_agrees_everywhere(
    redis: RedisPort,
    settings: Settings,
    worker: httpx.AsyncClient,
    fake: FakeProvider,
    template: Template,
    failure: Fail | None,
) -> None:
    """deepseek-chat failing (refused, or transient until its retries are spent; or an
    invalid answer): a second `started` names glm-4.5, and the task hash, `done.model`,
    `GET` and the usage rows say glm-4.5 produced the result."""
    fake.default = failure or Reply("not json at all")
    fake.script("glm-4.5", Reply(ANSWERS[template]))
    msg = await admit_paid(redis, settings, template)
    assert (await deliver(worker, msg))["status"] == "done"

    stream = await events(redis, msg)
    started = [data for kind, data in stream if kind == "started"]
    assert started == [
        {"model": "deepseek-chat", "attempt": 1},
        {"model": "glm-4.5", "attempt": 1, "fallback": True},
    ]
    kinds = [kind for kind, _ in stream]
    assert kinds.index("started") < kinds.index("result") < kinds.index("done")
    done = stream[-1][1]
    assert stream[-1][0] == "done" and done["model"] == "glm-4.5"
    view = (await TaskStore(redis, settings).get(msg.task_id, "u1")).public()
    assert (view["status"], view["model_id"], view["usage"]["model"]) == (
        "done",
        "glm-4.5",
        "glm-4.5",
    )
    [entry] = await redis.execute("XRANGE", keys.usage_stream(), "-", "+")
    rows = json.loads(pairs_to_dict(entry[1])["rows"])
    tries = 1 if failure is not None and failure.status == 401 else 2
    assert [(r["model_id"], r["is_success"]) for r in rows] == [
        *[("deepseek-chat", False)] * tries,
        ("glm-4.5", True),
    ]
    assert done["attempts"] == tries + 1
    # Charged: the fallback answered (a real result, not a degraded one).
    assert await redis.execute("GET", keys.quota("u1")) == "0"


async def test_no_fallback_no_second_started(
    redis: RedisPort, settings: Settings, worker: httpx.AsyncClient, fake: FakeProvider
) -> None:
    """The primary answering: one `started`, and everything says deepseek-chat."""
    fake.default = Reply(ANSWERS["job_match"])
    msg = await admit_paid(redis, settings, "job_match")
    assert (await deliver(worker, msg))["status"] == "done"
    stream = await events(redis, msg)
    assert [data for kind, data in stream if kind == "started"] == [
        {"model": "deepseek-chat", "attempt": 1}
    ]
    view = (await TaskStore(redis, settings).get(msg.task_id, "u1")).public()
    assert view["model_id"] == stream[-1][1]["model"] == "deepseek-chat"


async def test_switch_is_fenced_and_idempotent(redis: RedisPort, settings: Settings) -> None:
    """The switch goes through the attempt's fence: a stale lease changes nothing, and the
    same switch written twice (a lost reply) is one event."""
    msg = await admit_paid(redis, settings, "job_summary")
    store = TaskStore(redis, settings)
    run = await store.start(msg, message_id="m1", now_ms=now_ms())
    assert isinstance(run, Run)
    events_key = keys.events(msg.user_id, msg.service_id, msg.task_id)
    task_key = keys.task(msg.task_id)

    async def switch(lease: str) -> Any:
        return await run_script(
            redis,
            load_script("lib.tasks", "append_token"),
            [task_key, events_key],
            [lease, "started", '{"model":"glm-4.5"}', 0, "glm-4.5", "zhipu", 2],
        )

    assert await switch("someone-else") == "fenced"
    assert await redis.execute("HGET", task_key, "model") == "deepseek-chat"
    batcher = TokenBatcher(
        redis, Attempt(task_key, events_key, run.lease_id), flush_ms=50, max_chars=100
    )
    await batcher.switch("glm-4.5", attempt=1, provider="zhipu", out_price=2)
    assert await switch(run.lease_id) == "dup"
    fields = pairs_to_dict(await redis.execute("HGETALL", task_key))
    assert (fields["model"], fields["provider"], fields["out_price"]) == ("glm-4.5", "zhipu", "2")
    assert [kind for kind, _ in await events(redis, msg)].count("started") == 2
    await store.finish(run.task, run, Outcome("done", result={"ok": 1}), now_ms())


async def test_a_dead_attempt_after_a_fallback_is_logged_on_the_fallback_model(
    redis: RedisPort, settings: Settings
) -> None:
    """An attempt that streamed, fell back, and died: its row (written by Lua) names the
    fallback model and its provider, counts every delta streamed, priced as that model."""
    msg = await admit_paid(redis, settings, "job_match")
    store = TaskStore(redis, settings)
    now = now_ms()
    run = await store.start(msg, message_id="m1", now_ms=now)
    assert isinstance(run, Run)
    attempt = Attempt(
        keys.task(msg.task_id), keys.events(msg.user_id, msg.service_id, msg.task_id), run.lease_id
    )
    batcher = TokenBatcher(redis, attempt, flush_ms=10_000, max_chars=1)
    for piece in ("a", "b", "c"):
        await batcher.add(piece)  # one write each (max_chars=1): n = 1, 2, 3
    await batcher.restart({"attempt": 1})
    await batcher.switch("glm-4.5", attempt=1, provider="zhipu", out_price=1_000_000)
    # The process dies; the failure callback ends the task once the lease has run out.
    later = now + settings.lease_ms + 1
    failed = Outcome("failed", error_code="delivery_failed", error_message="x")
    assert await store.finish(msg, None, failed, later) == "finished"
    [entry] = await redis.execute("XRANGE", keys.usage_stream(), "-", "+")
    [row] = json.loads(pairs_to_dict(entry[1])["rows"])
    assert (row["model_id"], row["provider"], row["output_tokens"]) == ("glm-4.5", "zhipu", 3)
    assert float(row["cost"]) == 3.0 and row["is_success"] is False
