"""The pipeline over real HTTP: producer → local QStash → worker → provider, slot pools at work."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lib import keys
from lib.app.stack import LocalStack, StackInfo, check_health
from lib.auth import issue_token
from lib.local.embedded import EmbeddedValkey
from lib.local.qstash import start_local_qstash
from lib.local.serve import ServerThread
from lib.redis.port import pairs_to_dict
from lib.redis.tcp import TcpRedis
from lib.settings import Settings
from lib.tasks.quota import grant
from tests.support.paths import ROOT
from tests.support.provider import FakeProvider, Reply

RESUME = "Backend engineer. Python, Redis, PostgreSQL, Docker. Built queues at Acme 2019-2024."
JOB = "Senior Python engineer. Must have: Python, Redis, Kafka. Nice: Docker."
MATCH = {
    "match_score": 70,
    "overall_assessment": "Good overlap.",
    "strengths": [{"point": "Python", "evidence": "Python services"}],
    "weaknesses": [{"point": "Kafka", "suggestion": "Learn Kafka"}],
    "cover_letter_script": "Dear team, ...",
}
SUMMARY = {
    "jobTitle": "Engineer",
    "company": "Acme",
    "mustHaves": ["Python"],
    "niceToHaves": [],
    "location": None,
    "summary": "Builds things.",
}
# 1x1 transparent PNG
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[FakeProvider, str]]:
    """A fake OpenAI-compatible provider on loopback, serving every model."""
    fake = FakeProvider(keep_requests=True)
    with ServerThread(fake.app()) as server:
        yield fake, server.url + "/v1"


@pytest.fixture(scope="module")
def stack(
    provider: tuple[FakeProvider, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackInfo]:
    """The local stack with tight slot pools: 1 free text slot, 2 vision slots."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        openai_compat_base_url=provider[1],
        glm_flash_max_workers=1,
        glm_vision_max_workers=2,
        deepseek_max_workers=2,
        rate_user_limit=100,
        llm_retries=0,
        start_retry_after_s=1,
    )
    local = LocalStack(
        settings,
        state_dir=tmp_path_factory.mktemp("pipeline"),
        time_scale=0.01,
        persist=False,
        write_stack_file=False,
    )
    info = local.start()
    try:
        check_health(info)
        yield info
    finally:
        local.stop()


@pytest.fixture
async def client(stack: StackInfo, provider: tuple[FakeProvider, str]) -> AsyncIterator[Any]:
    provider[0].reset()
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=30) as c:
        yield c


def bearer(stack: StackInfo, user: str) -> dict[str, str]:
    secret = stack.settings.app_secret
    assert secret is not None
    return {"Authorization": f"Bearer {issue_token(secret.get_secret_value(), user, 3600)}"}


async def submit(
    client: httpx.AsyncClient, stack: StackInfo, user: str, template: str, variables: dict[str, Any]
) -> dict[str, Any]:
    body = {"template": template, "variables": variables, "lang": "en"}
    response = await client.post("/api/tasks", json=body, headers=bearer(stack, user))
    assert response.status_code == 202, response.text
    return dict(response.json())


async def wait_done(
    client: httpx.AsyncClient, stack: StackInfo, user: str, task_id: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await client.get(f"/api/tasks/{task_id}", headers=bearer(stack, user))).json()
        if status["status"] in ("done", "failed", "cancelled"):
            return dict(status)
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish: {status}")


async def assert_counters_zero(client: httpx.AsyncClient) -> None:
    snapshot = (await client.get("/api/queues")).json()
    text = json.dumps(snapshot)
    for queue in snapshot["queues"]:
        assert queue["waiting"] == 0 and queue["in_flight"] == 0, text
    for pool in snapshot["pools"]:
        assert pool["active"] == 0, text


async def test_three_text_tasks_with_one_slot_run_one_after_another(
    client: httpx.AsyncClient, stack: StackInfo, provider: tuple[FakeProvider, str]
) -> None:
    """Concurrency 1: three free job_match tasks never overlap; all done; counters back to 0."""
    fake, _ = provider
    fake.defaults["glm-4.5-flash"] = Reply(json.dumps(MATCH), delay_s=0.3)
    users = [f"serial-{i}" for i in range(3)]
    tasks = [
        await submit(client, stack, u, "job_match", {"resume_text": RESUME, "job_text": JOB})
        for u in users
    ]
    assert {t["queue_id"] for t in tasks} == {"q_glm_flash"}
    done = [
        await wait_done(client, stack, u, t["task_id"]) for u, t in zip(users, tasks, strict=True)
    ]
    assert [d["status"] for d in done] == ["done"] * 3
    spans = sorted((d["started_ms"], d["finished_ms"]) for d in done)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans
    assert done[0]["result"]["match_score"] == 70
    await assert_counters_zero(client)


async def test_two_vision_tasks_with_two_slots_run_together(
    client: httpx.AsyncClient, stack: StackInfo, provider: tuple[FakeProvider, str]
) -> None:
    """Concurrency 2: two screenshot job summaries overlap on the vision pool; counters at 0."""
    fake, _ = provider
    # Each answer waits until both requests have reached the provider (10 s at most), so the
    # tasks overlap however late the second delivery comes on a loaded machine, and cannot
    # if the pool let only one run.
    fake.defaults["glm-4.1v-thinking-flash"] = Reply(json.dumps(SUMMARY), together=2)
    users = ["vision-a", "vision-b"]
    tasks = [await submit(client, stack, u, "job_summary", {"job_image": PNG}) for u in users]
    assert {t["queue_id"] for t in tasks} == {"q_glm_vision_free"}
    assert {t["model_id"] for t in tasks} == {"glm-4.1v-thinking-flash"}
    done = [
        await wait_done(client, stack, u, t["task_id"]) for u, t in zip(users, tasks, strict=True)
    ]
    assert [d["status"] for d in done] == ["done", "done"], done
    (_, e1), (s2, _) = sorted((d["started_ms"], d["finished_ms"]) for d in done)
    assert s2 < e1, "the two vision tasks should overlap"
    image_parts = [
        part
        for r in fake.requests
        for m in r["messages"]
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image_url"
    ]
    assert len(image_parts) == 2 and image_parts[0]["image_url"]["url"] == PNG
    await assert_counters_zero(client)


async def test_paid_and_free_reach_their_own_routes_and_pools(
    client: httpx.AsyncClient, stack: StackInfo, provider: tuple[FakeProvider, str]
) -> None:
    """A user with quota runs on paid DeepSeek and is debited; a user without runs free on GLM."""
    fake, _ = provider
    fake.defaults["deepseek-chat"] = Reply(json.dumps(MATCH))
    fake.defaults["glm-4.5-flash"] = Reply(json.dumps(MATCH))
    redis = TcpRedis.from_url(stack.redis_url)
    try:
        await grant(redis, "payer", 1)
        paid = await submit(
            client, stack, "payer", "job_match", {"resume_text": RESUME, "job_text": JOB}
        )
        free = await submit(
            client, stack, "free-rider", "job_match", {"resume_text": RESUME, "job_text": JOB}
        )
        assert (paid["tier"], paid["queue_id"], paid["model_id"]) == (
            "paid",
            "q_deepseek_chat",
            "deepseek-chat",
        )
        assert (free["tier"], free["queue_id"], free["model_id"]) == (
            "free",
            "q_glm_flash",
            "glm-4.5-flash",
        )
        assert (await wait_done(client, stack, "payer", paid["task_id"]))["status"] == "done"
        assert (await wait_done(client, stack, "free-rider", free["task_id"]))["status"] == "done"
        assert await redis.execute("GET", keys.quota("payer")) == "0"
    finally:
        await redis.aclose()
    assert fake.calls("deepseek-chat") == 1 and fake.calls("glm-4.5-flash") == 1
    await assert_counters_zero(client)


DEGRADED_RESUME = """Jane Doe
jane.doe@example.com | +1 555 123 4567
Backend engineer. Python and Redis since 2015.
Built the billing queue at Acme.
"""


async def test_degraded_result_is_flagged_refunded_and_built_from_the_resume(
    client: httpx.AsyncClient, stack: StackInfo, provider: tuple[FakeProvider, str]
) -> None:
    """Every model failing: done but degraded (status, result, done), refunded, rows flagged."""
    import psycopg

    fake, _ = provider
    fake.defaults["deepseek-chat"] = Reply("not json at all")
    fake.defaults["glm-4.5"] = Reply("still not json")
    user = f"degraded-{time.monotonic_ns()}"
    redis = TcpRedis.from_url(stack.redis_url)
    try:
        await grant(redis, user, 1)
        task = await submit(client, stack, user, "resume_summary", {"resume_text": DEGRADED_RESUME})
        assert task["tier"] == "paid"
        status = await wait_done(client, stack, user, task["task_id"])
        assert await redis.execute("GET", keys.quota(user)) == "1"  # the unit came back
    finally:
        await redis.aclose()
    assert (status["status"], status["degraded"]) == ("done", True)
    result = status["result"]
    assert result["degraded"] is True
    assert result["bullets"] == [
        "Jane Doe",
        "jane.doe@example.com | +1 555 123 4567",
        "Backend engineer.",
        "Python and Redis since 2015.",
        "Built the billing queue at Acme.",
    ]
    events = (
        await client.get(
            f"/api/tasks/{task['task_id']}/events?after=0-0&wait=0",
            headers={**bearer(stack, user), "Accept": "application/json"},
        )
    ).json()["events"]
    by_type = {e["type"]: e["data"] for e in events}
    assert by_type["result"]["degraded"] is True and by_type["done"]["degraded"] is True
    deadline = time.monotonic() + 20
    while True:  # the worker drains usage rows after the task, in the background
        with psycopg.connect(stack.database_url) as conn:
            rows = conn.execute(
                "SELECT model_id, is_success, is_degraded, task_id, attempt, task_template_id"
                " FROM llm_usage_logs WHERE user_id = %s ORDER BY id",
                (user,),
            ).fetchall()
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert rows == [
        (model, False, True, task["task_id"], 1, "resume_summary")
        for model in ("deepseek-chat", "glm-4.5")
    ]
    await assert_counters_zero(client)


# -- a worker killed mid-stream -----------------------------------------------------------


def _app_process(env: dict[str, str], sock: socket.socket) -> subprocess.Popen[bytes]:
    """The app on the test's listening socket: requests that come while no process serves
    it wait in the socket's backlog, as a serverless platform holds them during a cold start."""
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "lib.app.asgi:create_app",
        "--fd", str(sock.fileno()), "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, pass_fds=[sock.fileno()]
    )


def _wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


async def _wait_until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    """Poll `check` until it holds (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.mark.timeout(90)  # the waits below add up to 55 s at most, beside three starts
async def test_worker_killed_mid_stream_restarts_and_finishes_once(tmp_path: Path) -> None:
    """kill -9 mid-stream: the lease expires, the redelivery restarts, the task ends done once."""
    valkey = EmbeddedValkey()
    redis_url = valkey.start()
    qstash = start_local_qstash(redis_url.rsplit("/", 1)[0] + "/1", time_scale=0.02)
    fake = FakeProvider()
    content = json.dumps(MATCH)
    fake.defaults["glm-4.5-flash"] = Reply(content, token_delay_s=0.08)
    model = ServerThread(fake.app())
    model.start()
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    app_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    secret = "test-secret-with-enough-length-for-hs256!"
    env = {
        **{k: v for k, v in os.environ.items() if k.upper() not in _setting_names()},
        "REDIS_URL": redis_url,
        "QSTASH_URL": qstash.url,
        "QSTASH_TOKEN": qstash.token,
        "QSTASH_CURRENT_SIGNING_KEY": qstash.current_key,
        "QSTASH_NEXT_SIGNING_KEY": qstash.next_key,
        "APP_BASE_URL": app_url,
        "APP_SECRET": secret,
        "OPENAI_COMPAT_BASE_URL": model.url + "/v1",
        "LEASE_MS": "1500",
        "LLM_RETRIES": "0",
        "START_RETRY_AFTER_S": "1",
        "STATE_DIR": str(tmp_path),
    }
    first = _app_process(env, sock)
    second: subprocess.Popen[bytes] | None = None
    redis = TcpRedis.from_url(redis_url)
    pool = keys.model_pool("glm-4.5-flash", "free")
    try:
        _wait_up(app_url)
        headers = {"Authorization": f"Bearer {issue_token(secret, 'victim', 3600)}"}
        async with httpx.AsyncClient(base_url=app_url, timeout=10) as c:
            body = {
                "template": "job_match",
                "variables": {"resume_text": RESUME, "job_text": JOB},
                "lang": "en",
            }
            task = (await c.post("/api/tasks", json=body, headers=headers)).json()
        task_id = task["task_id"]
        stream = keys.events("victim", "default", task_id)

        async def tokens_flowing() -> bool:
            entries = await redis.execute("XRANGE", stream, "-", "+")
            return sum(1 for e in entries if "token" in e[1]) >= 2

        async def lease_expired() -> bool:
            leases = await redis.execute("ZRANGE", pool, 0, -1, "WITHSCORES")
            return all(float(score) < time.time() * 1000 for score in leases[1::2])

        async def status_done() -> bool:
            return str(await redis.execute("HGET", keys.task(task_id), "status")) == "done"

        # Tokens are flowing: kill the worker without any cleanup.
        assert await _wait_until(tokens_flowing, 15), "no tokens streamed before the kill"
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        assert await redis.execute("HGET", keys.task(task_id), "status") == "running"
        # QStash redelivers (0.24 s later at this time scale); the request waits in the
        # backlog. The new worker comes up once the dead attempt's lease (1.5 s) has run
        # out, so the redelivery finds it expired and restarts the task, however long the
        # start takes on a loaded machine (a live lease would bounce the redelivery and
        # spend QStash's retries).
        assert await _wait_until(lease_expired, 10), "the dead attempt's lease never ran out"
        second = _app_process(env, sock)
        await _wait_until(status_done, 30)
        fields = pairs_to_dict(await redis.execute("HGETALL", keys.task(task_id)))
        assert fields["status"] == "done", fields
        assert int(fields["attempts"]) == 2
        entries = await redis.execute("XRANGE", stream, "-", "+")
        decoded = [pairs_to_dict(e[1]) for e in entries]
        types = [e["type"] for e in decoded]
        assert types.count("done") == 1 and types.count("restart") == 1
        after_restart = types[types.index("restart") :]
        texts = [
            json.loads(e["data"])["text"]
            for e in decoded[types.index("restart") :]
            if e["type"] == "token"
        ]
        assert "".join(texts) == content and after_restart[-2:] == ["result", "done"]
        assert await redis.execute("ZCARD", pool) == 0
        assert await redis.execute("EXISTS", keys.queue_pending("q_glm_flash")) == 0
        assert await redis.execute("EXISTS", keys.user_lock("victim", "job_match")) == 0
    finally:
        await redis.aclose()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        sock.close()
        model.stop()
        qstash.stop()
        valkey.stop()


def _setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}
