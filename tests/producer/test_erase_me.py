"""`DELETE /api/me` on real Postgres and Valkey (both Redis adapters): everything the caller
owns goes, another user's stays, a running task refuses the erase, and it can be repeated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lib import keys
from lib.assets.store import AssetStore
from lib.assets.summary_cache import CacheKey, SummaryCache
from lib.clock import now_ms
from lib.redis.port import RedisPort, pairs_to_dict
from lib.services.store import ServiceStore
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome, Run
from lib.tasks.store import TaskStore
from lib.usage.record import UsageRecord
from lib.usage.store import ERASED_USER
from lib.users.owner import Owner
from tests.support.assets import app_on, migrated_database, new_user, rows_of
from tests.support.paths import EXAMPLES
from tests.support.producer import CountingRedis, RecordingPublisher, client_for

RESUME = (EXAMPLES / "resume.en.txt").read_text(encoding="utf-8")
JOB = (EXAMPLES / "job.en.txt").read_text(encoding="utf-8")
DETAILED = (EXAMPLES / "detailed_resume.en.txt").read_text(encoding="utf-8")
VARIABLES = {"resume_text": "Python developer, 5 years.", "job_text": "Senior Python role."}


@pytest.fixture(scope="module")
def db_url(postgres_url: str) -> Iterator[str]:
    """One migrated database for this module (each test has its own users)."""
    yield migrated_database(postgres_url, "erase")


def _publisher(app: Any) -> RecordingPublisher:
    publisher: RecordingPublisher = app.state.publisher
    return publisher


async def _submit(c: Any, template: str) -> str:
    variables = VARIABLES if template != "resume_summary" else {"resume_text": RESUME}
    answer = await c.post("/api/tasks", json={"template": template, "variables": variables})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


def _message(app: Any, task_id: str) -> TaskMessage:
    body = next(p.body for p in _publisher(app).published if p.task_id == task_id)
    return TaskMessage.model_validate(body)


async def _start(store: TaskStore, msg: TaskMessage) -> Run:
    started = await store.start(msg, message_id=f"m-{msg.task_id}", now_ms=now_ms())
    assert isinstance(started, Run) and started.task.task_id == msg.task_id, started
    return started


async def _finish(store: TaskStore, msg: TaskMessage, run: Run, user: str) -> None:
    row = UsageRecord(
        user_id=user,
        service_id=msg.service_id,
        task_template_id=msg.template,
        provider="offline",
        model_id=run.model,
        input_tokens=10,
        output_tokens=20,
        total_tokens=30,
        is_success=True,
    )
    outcome = Outcome("done", result={"ok": True}, usage_rows=[row])
    ended = await store.finish(
        run.task, run, outcome, now_ms(), ticket=msg, message_id=f"m-{msg.task_id}"
    )
    assert ended == "finished"


async def _own_assets(c: Any, app: Any, user: str) -> None:
    """Three uploads, a service with a step, a cached summary."""
    r = (await c.post("/api/upload/resume", json={"text": RESUME})).json()
    j = (await c.post("/api/upload/jd", json={"text": JOB})).json()
    d = (await c.post("/api/upload/detailed-resume", json={"text": DETAILED})).json()
    made = await ServiceStore(app.state.pg).create(
        Owner(user, "trial" if user.startswith("trial-") else "user", "en"),
        resume_id=r["resume_id"],
        job_id=j["job_id"],
        detailed_resume_id=d["detailed_resume_id"],
        depth="c",
        lang="en",
    )
    assert made.service is not None
    assert await ServiceStore(app.state.pg).claim_step(made.service.id, "resume_summary")
    sha = (await AssetStore(app.state.pg).get("resume", r["resume_id"], user)).content_sha256
    key = CacheKey(user, sha, "resume_summary", "en", "glm-4.5-flash", "v1")
    assert await SummaryCache(app.state.pg).put(key, {"summary": "x"}, 12)


async def _keys_naming(redis: RedisPort, user: str, task_ids: list[str]) -> list[str]:
    """Every key whose name holds the user or one of their tasks, or whose queue state
    (waiting order, specs) still lists one of their tasks."""
    found: list[str] = []
    cursor = "0"
    while True:
        cursor, batch = await redis.execute("SCAN", cursor, "COUNT", 1000)
        for key in map(str, batch):
            if user in key or any(t in key for t in task_ids):
                found.append(key)
            elif key.endswith(":waiting"):
                members = await redis.execute("ZRANGE", key, 0, -1)
                if set(map(str, members)) & set(task_ids):
                    found.append(key)
            elif key.endswith(":specs"):
                specs = pairs_to_dict(await redis.execute("HGETALL", key))
                if set(specs) & set(task_ids):
                    found.append(key)
        if str(cursor) == "0":
            return sorted(found)


async def test_erase_leaves_nothing_of_the_caller_and_keeps_others(
    tmp_path: Path, redis: RedisPort, db_url: str
) -> None:
    """Postgres rows, task hashes, streams, idempotency keys, quota and usage ids of the
    caller go (a running task refuses first); another user's data is untouched."""
    alice, bob = new_user("alice"), new_user("bob")
    counting = CountingRedis(redis)
    async with app_on(tmp_path, counting, db_url) as app:
        store: TaskStore = app.state.store
        await redis.execute("SET", keys.quota(alice), 10)  # paid tier: debited, refunded
        async with client_for(app, user=alice) as a, client_for(app, user=bob) as b:
            await _own_assets(a, app, alice)
            await _own_assets(b, app, bob)
            done = await _submit(a, "job_match")
            msg = _message(app, done)
            await _finish(store, msg, await _start(store, msg), alice)
            running = await _submit(a, "resume_summary")
            theirs = await _submit(b, "job_match")
            run = await _start(store, _message(app, running))

            busy = await a.delete("/api/me")
            assert busy.status_code == 409 and busy.json()["error"] == "account_busy"
            assert busy.headers["retry-after"] == str(busy.json()["retry_after"])
            assert rows_of(db_url, alice)["resumes"] == 1  # nothing changed
            assert (await store.get(running, alice)).status == "running"

            await _finish(store, _message(app, running), run, alice)
            queued = await _submit(a, "interview_prep")
            bob_before = rows_of(db_url, bob)
            bob_keys = await _keys_naming(redis, bob, [theirs])

            digest = await redis.execute("HGET", keys.task(done), "idem")
            assert await redis.execute("EXISTS", keys.idem(str(digest))) == 1
            counting.calls.clear()
            erased = await a.delete("/api/me")
            assert erased.status_code == 200, erased.text
            calls = list(counting.calls)
            body = erased.json()["erased"]
            assert body["user"] is True and body["tasks"] == 3 and body["tasks_cancelled"] == 1
            assert body["event_streams"] == 3
            assert body["resumes"] == body["services"] == body["summary_cache"] == 1

            # Nothing of alice in Postgres (her usage rows are detached, kept for accounting).
            assert set(rows_of(db_url, alice).values()) == {0}
            with psycopg.connect(db_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM llm_usage_logs WHERE user_id = %s", (ERASED_USER,)
                ).fetchone()
            assert row is not None and row[0] >= 2
            # Nothing of alice in Redis but her rate window (task ids only; it expires in
            # RATE_WINDOW_S and must outlive an erase: docs/decisions.md).
            left = await _keys_naming(redis, alice, [done, running, queued])
            assert left == [keys.rate(alice, "tasks")]
            assert await redis.execute("EXISTS", keys.idem(str(digest))) == 0
            # Bob's data is as it was.
            assert rows_of(db_url, bob) == bob_before
            assert await _keys_naming(redis, bob, [theirs]) == bob_keys
            assert (await store.get(theirs, bob)).status == "queued"
            assert (await b.get("/api/assets")).json()["assets"]
            # Alice's reads are empty now; erasing again is a no-op.
            assert (await a.get("/api/assets")).json() == {"assets": []}
            again = (await a.delete("/api/me")).json()["erased"]
            assert again["user"] is False and again["tasks"] == 0 and again["redis_keys"] == 0
    # The Redis side of an erase (small keyspace): one SCAN, one pipelined read, one cancel
    # (HGETALL + script), one DEL; the usage drain adds its lock, read, delete and unlock.
    assert calls.count("SCAN") == 1 and calls.count("PIPELINE") == 1
    assert calls.count("DEL") == 1 and calls.count("HGETALL") == 1, calls
    # EVAL: the first run of a script on a server (EVALSHA answered NOSCRIPT).
    assert len([c for c in calls if c != "EVAL"]) <= 10, calls


async def test_a_trial_visitor_can_erase_themselves(
    tmp_path: Path, redis: RedisPort, db_url: str
) -> None:
    """A trial visitor's uploads, service and tasks are erased like a signed-in user's."""
    async with app_on(tmp_path, redis, db_url) as app, client_for(app) as trial:
        made = await trial.post("/api/upload/resume", json={"text": RESUME})
        assert made.status_code == 201
        trial_id = trial.cookies["slotline_trial"].split(".")[0]
        await _own_assets(trial, app, trial_id)
        task = await _submit(trial, "job_match")
        answer = await trial.delete("/api/me")
        assert answer.status_code == 200
        assert answer.json()["erased"]["resumes"] == 2
        assert set(rows_of(db_url, trial_id).values()) == {0}
        assert await redis.execute("EXISTS", keys.task(task)) == 0
        assert await _keys_naming(redis, trial_id, [task]) == [keys.rate(trial_id, "tasks")]


async def test_erase_takes_the_callers_services_with_it(
    tmp_path: Path, redis: RedisPort, db_url: str
) -> None:
    """A service's live state (its hash, stream, pending place, request key) goes too."""
    user = new_user("svc")
    async with app_on(tmp_path, redis, db_url) as app, client_for(app, user=user) as c:
        ids: dict[str, str] = {}
        for kind, field, body in (
            ("resume", "resume_id", RESUME),
            ("jd", "job_id", JOB),
        ):
            reply = await c.post(f"/api/upload/{kind}", json={"text": body, "lang": "en"})
            ids[field] = reply.json()[field]
        created = await c.post("/api/service/create", json={**ids, "depth": "a"})
        assert created.status_code == 202, created.text
        service_id = created.json()["service_id"]
        assert await redis.execute("EXISTS", keys.service(service_id)) == 1
        erased = await c.delete("/api/me")
        assert erased.status_code == 200, erased.text
    left = [k for k in await redis.execute("KEYS", "*") if user in k or service_id in k]
    assert left == [keys.rate(user, "services")]  # the rate window outlives an erase
    assert await redis.execute("ZSCORE", keys.services_due(), service_id) is None
    assert not [
        k
        for k in await redis.execute("KEYS", "idem:*")
        if await redis.execute("GET", k) == service_id
    ]
