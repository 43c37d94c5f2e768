"""The orchestrator on real Redis and Postgres: tier once, refund on error, steps started once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lib import keys
from lib.assets.store import AssetStore, NewAsset
from lib.clock import now_ms
from lib.db.pg import Postgres
from lib.errors import PublishFailed
from lib.redis.port import RedisPort, pairs_to_dict
from lib.routing import Route
from lib.services.orchestrate import Created, CreateRequest, Orchestrator
from lib.settings import Settings
from lib.tasks.message import TaskMessage
from lib.tasks.schedule import Outcome, Run
from lib.tasks.store import TaskStore
from lib.users.owner import Owner
from tests.support.assets import migrated_database, new_user
from tests.support.paths import EXAMPLES
from tests.support.producer import RecordingPublisher


class FlakyPublisher(RecordingPublisher):
    """Publishes, except the first message of a template given (a crash at that moment)."""

    def __init__(self, fail_first: str = "") -> None:
        super().__init__()
        self.fail_first = fail_first

    async def publish_task(
        self, route: Route, body: dict[str, Any], *, task_id: str, slot_limit: int
    ) -> str:
        if self.fail_first and body.get("template") == self.fail_first:
            self.fail_first = ""
            raise PublishFailed("the function died before this publish")
        return await super().publish_task(route, body, task_id=task_id, slot_limit=slot_limit)


@pytest.fixture(scope="module")
def db_url(postgres_url: str) -> Iterator[str]:
    yield migrated_database(postgres_url, "svc")


@pytest.fixture
async def pg(db_url: str) -> AsyncIterator[Postgres]:
    handle = Postgres(db_url, pool_max=2)
    yield handle
    await handle.aclose()


def settings() -> Settings:
    return Settings(service_costs={"a": 1, "b": 2, "c": 3}, glm_flash_max_workers=5)


async def made(pg: Postgres, user: str) -> CreateRequest:
    """A résumé and a job description of `user`, and a depth-c request for them."""
    store, owner = AssetStore(pg), Owner(user, "user", "en")
    resume = await store.put(
        owner,
        NewAsset("resume", "en", "text", text=(EXAMPLES / "resume.en.txt").read_text()),
    )
    job = await store.put(
        owner, NewAsset("jd", "en", "text", text=(EXAMPLES / "job.en.txt").read_text())
    )
    return CreateRequest(resume.id, job.id, None, "en", "c")


async def finish_task(redis: RedisPort, s: Settings, msg: TaskMessage, status: str) -> None:
    """A worker runs the task to its end (no model: the result is canned)."""
    store = TaskStore(redis, s)
    run = await store.start(msg, message_id=f"m-{msg.task_id}", now_ms=now_ms())
    assert isinstance(run, Run) and run.task.task_id == msg.task_id, run
    result = _canned(msg.template) if status == "done" else None
    outcome = Outcome(status, result=result, error_code="llm_error" if status != "done" else "")  # type: ignore[arg-type]
    await store.finish(msg, run, outcome, now_ms())


def _canned(template: str) -> dict[str, Any]:
    if template == "job_summary":
        return {"jobTitle": "Backend engineer", "mustHaves": ["Python"], "niceToHaves": []}
    return {"header": {"name": "Maya Chen"}, "summary": "Backend engineer."}


async def create(orchestrator: Orchestrator, pg: Postgres, user: str) -> Created:
    """A depth-c service of `user` over fresh assets."""
    return await orchestrator.create(
        Owner(user, "user", "en"), await made(pg, user), client_address=""
    )


def messages(publisher: RecordingPublisher, template: str) -> list[TaskMessage]:
    return [
        TaskMessage.model_validate(p.body)
        for p in publisher.published
        if p.body["template"] == template
    ]


async def test_a_paid_service_keeps_its_tier_and_is_refunded_when_a_step_fails(
    redis: RedisPort, pg: Postgres
) -> None:
    """Paid once for the depth; every task paid and uncharged; a failure refunds, cancels."""
    s, user = settings(), new_user()
    publisher = RecordingPublisher()
    orchestrator = Orchestrator(s, redis, pg, publisher)
    await redis.execute("SET", keys.quota(user), 4)
    created = await orchestrator.create(
        Owner(user, "user", "en"), await made(pg, user), client_address=""
    )
    assert created.tier == "paid"
    assert await redis.execute("GET", keys.quota(user)) == "1"
    summaries = [TaskMessage.model_validate(p.body) for p in publisher.published]
    assert {m.template for m in summaries} == {"resume_summary", "job_summary"}
    assert all(m.tier == "paid" and m.step for m in summaries)
    await finish_task(redis, s, summaries[0], "failed")
    await orchestrator.carry_out(created.service_id)
    assert await redis.execute("GET", keys.quota(user)) == "4"  # refunded, once
    await orchestrator.carry_out(created.service_id)
    assert await redis.execute("GET", keys.quota(user)) == "4"
    service = await orchestrator.services.get(created.service_id, user)
    assert service.status == "error" and service.error == "llm_error"
    other = await TaskStore(redis, s).get(summaries[1].task_id, user)
    assert other.status == "cancelled"
    assert await redis.execute("ZCARD", keys.services_pending(user)) == 0


async def test_the_next_steps_start_once_under_duplicates_and_a_crash(
    redis: RedisPort, pg: Postgres
) -> None:
    """Duplicate carry-outs and a crash mid-advance: each later step is admitted once."""
    s, user = settings(), new_user()
    publisher = FlakyPublisher(fail_first="resume_customize")
    orchestrator = Orchestrator(s, redis, pg, publisher)
    created = await orchestrator.create(
        Owner(user, "user", "en"), await made(pg, user), client_address=""
    )
    for msg in [TaskMessage.model_validate(p.body) for p in publisher.published]:
        await finish_task(redis, s, msg, "done")
    # The worker that finished the last summary dies after starting job_match only.
    with pytest.raises(PublishFailed):
        await orchestrator.carry_out(created.service_id)
    assert await orchestrator.live.is_due(created.service_id)  # left for the repair
    # Duplicate deliveries and the owner's read all try to carry it out, at once.
    await asyncio.gather(
        orchestrator.repair(older_than_ms=now_ms() + 1),
        orchestrator.carry_out(created.service_id),
        orchestrator.carry_out(created.service_id),
    )
    assert not await orchestrator.live.is_due(created.service_id)
    for template in ("job_match", "resume_customize", "interview_prep"):
        sent = {m.task_id for m in messages(publisher, template)}
        assert len(sent) == 1, (template, sent)  # one task (republished under its id at most)
    stream = await redis.execute("XRANGE", keys.service_events(user, created.service_id), "-", "+")
    steps = [pairs_to_dict(e[1])["data"] for e in stream if pairs_to_dict(e[1])["type"] == "step"]
    assert len(steps) == 5  # two summaries, three later steps: each announced once
    # The summaries were written back to Postgres, once.
    service = await orchestrator.services.get(created.service_id, user)
    recorded = {st.step: st.status for st in service.steps}
    assert recorded["resume_summary"] == "done" and recorded["job_summary"] == "done"


async def test_the_last_step_closes_the_service_once(redis: RedisPort, pg: Postgres) -> None:
    """Every step done: the service is done (no refund), its pending place freed."""
    s, user = settings(), new_user()
    publisher = RecordingPublisher()
    orchestrator = Orchestrator(s, redis, pg, publisher)
    await redis.execute("SET", keys.quota(user), 3)
    created = await create(orchestrator, pg, user)
    done: set[str] = set()
    for _ in range(3):
        for msg in [TaskMessage.model_validate(p.body) for p in publisher.published]:
            if msg.task_id not in done:
                done.add(msg.task_id)
                await finish_task(redis, s, msg, "done")
        await orchestrator.carry_out(created.service_id)
    service = await orchestrator.services.get(created.service_id, user)
    assert service.status == "done" and len(done) == 5
    assert await redis.execute("GET", keys.quota(user)) == "0"  # charged, not refunded
    assert await redis.execute("ZCARD", keys.services_pending(user)) == 0


async def test_cancel_stops_what_has_not_started_and_refunds(
    redis: RedisPort, pg: Postgres
) -> None:
    """DELETE /api/service/{id}: queued steps cancelled, the service refunded, status error."""
    s, user = settings(), new_user()
    publisher = RecordingPublisher()
    orchestrator = Orchestrator(s, redis, pg, publisher)
    await redis.execute("SET", keys.quota(user), 3)
    created = await orchestrator.create(
        Owner(user, "user", "en"), await made(pg, user), client_address=""
    )
    await orchestrator.cancel(created.service_id, user)
    service = await orchestrator.services.get(created.service_id, user)
    assert (service.status, service.error) == ("error", "cancelled")
    assert await redis.execute("GET", keys.quota(user)) == "3"
    for msg in [TaskMessage.model_validate(p.body) for p in publisher.published]:
        assert (await TaskStore(redis, s).get(msg.task_id, user)).status == "cancelled"
