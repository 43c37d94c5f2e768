"""The asset, user, summary-cache and service storage modules on a real Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from lib.assets.store import AssetStore, NewAsset
from lib.assets.summary_cache import CacheKey, SummaryCache
from lib.db.migrate import migrate
from lib.db.pg import Postgres
from lib.errors import NotFound, ServiceUnavailable
from lib.services.store import ServiceStore
from lib.users.owner import Owner
from lib.users.store import UserStore
from tests.support.assets import migrated_database, new_user, rows_of
from tests.support.pg import fresh_database

RESUME = "Jane Doe\nSenior Python developer, eight years of backend work.\n" * 3


@pytest.fixture(scope="module")
def db_url(postgres_url: str) -> Iterator[str]:
    """One migrated database for this module (tests use their own user ids)."""
    yield migrated_database(postgres_url, "assets")


@pytest.fixture(params=[4, 0], ids=["pool", "per-operation"])
async def pg(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[Postgres]:
    """The request handlers' database, pooled (long-lived process) and not (serverless)."""
    handle = Postgres(db_url, pool_max=request.param)
    yield handle
    await handle.aclose()


def owner(user_id: str, kind: str = "user") -> Owner:
    return Owner(user_id, kind, "en")  # type: ignore[arg-type]


def resume(text: str = RESUME) -> NewAsset:
    return NewAsset(kind="resume", lang="en", source="text", text=text)


async def test_migrations_apply_on_an_empty_database_then_are_a_no_op(
    postgres_url: str,
) -> None:
    """All migrations apply to an empty database in order; a second run applies nothing."""
    url = fresh_database(postgres_url, "mig3")
    assert await migrate(url) == ["0001", "0002", "0003"]
    assert await migrate(url) == []
    with psycopg.connect(url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert {
        "users",
        "resumes",
        "detailed_resumes",
        "job_descriptions",
        "summary_cache",
        "services",
        "service_steps",
    } <= tables


def test_every_created_at_leads_an_index(db_url: str) -> None:
    """Every table with a created_at has an index whose first column is created_at."""
    with psycopg.connect(db_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name = 'created_at'"
            ).fetchall()
        ]
        leading = {
            r[0]
            for r in conn.execute(
                "SELECT t.relname FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
                " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]"
                " WHERE a.attname = 'created_at'"
            ).fetchall()
        }
    assert "resumes" in tables and "service_steps" in tables
    assert set(tables) <= leading, set(tables) - leading


async def test_the_first_write_creates_the_owner_row_and_reads_never_do(
    pg: Postgres, db_url: str
) -> None:
    """A read makes no user row; the first upload makes it (trial marked), later ones reuse it."""
    store, users = AssetStore(pg), UserStore(pg)
    trial = "trial-" + new_user("t") + "abcdefgh"
    with pytest.raises(NotFound):
        await store.get("resume", "0" * 32, trial)
    assert await store.list(trial) == []
    assert await users.get(trial) is None
    await store.put(owner(trial, "trial"), resume())
    await store.put(owner(trial, "trial"), resume(RESUME + "v2"))
    row = await users.get(trial)
    assert row is not None and row.kind == "trial" and row.lang_pref == "en"
    assert rows_of(db_url, trial)["users"] == 1
    assert rows_of(db_url, trial)["resumes"] == 2


async def test_assets_are_read_and_deleted_by_their_owner_only(pg: Postgres) -> None:
    """Another user, a malformed id and a deleted asset are all NotFound."""
    store = AssetStore(pg)
    alice, bob = new_user("a"), new_user("b")
    jd = await store.put(
        owner(alice),
        NewAsset(kind="jd", lang="zh", source="image", image=b"\x89PNG...", image_mime="image/png"),
    )
    got = await store.get("jd", jd.id, alice, with_image=True)
    assert got.image == b"\x89PNG..." and got.text is None and got.has_image
    assert (await store.get("jd", jd.id, alice)).image is None  # bytes only when asked for
    for kind, asset_id, user in [
        ("jd", jd.id, bob),
        ("resume", jd.id, alice),
        ("jd", "not-an-id", alice),
    ]:
        with pytest.raises(NotFound):
            await store.get(kind, asset_id, user)  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            await store.delete(kind, asset_id, user)  # type: ignore[arg-type]
    await store.delete("jd", jd.id, alice)
    with pytest.raises(NotFound):
        await store.get("jd", jd.id, alice)


async def test_the_newest_resume_is_the_active_one(pg: Postgres) -> None:
    """Uploading a résumé makes it active and the owner's earlier ones inactive."""
    store = AssetStore(pg)
    user, other = new_user(), new_user()
    first = await store.put(owner(user), resume())
    theirs = await store.put(owner(other), resume())
    second = await store.put(owner(user), resume(RESUME + "again"))
    assert (await store.get("resume", first.id, user)).active is False
    assert (await store.get("resume", second.id, user)).active is True
    assert (await store.get("resume", theirs.id, other)).active is True


async def test_the_list_is_the_owners_newest_first_with_previews(pg: Postgres) -> None:
    """Every kind, newest first, a one-line preview of at most 120 characters, no text."""
    store = AssetStore(pg)
    user = new_user()
    r = await store.put(owner(user), resume())
    d = await store.put(
        owner(user), NewAsset(kind="detailed_resume", lang="en", source="pdf", text=RESUME * 4)
    )
    j = await store.put(
        owner(user), NewAsset(kind="jd", lang="en", source="docx", text="Job " * 50)
    )
    await store.put(owner(new_user()), resume())
    listed = await store.list(user)
    assert [(a.id, a.kind) for a in listed] == [
        (j.id, "jd"),
        (d.id, "detailed_resume"),
        (r.id, "resume"),
    ]
    assert all(len(a.preview) <= 120 and "\n" not in a.preview for a in listed)
    assert listed[2].preview.startswith("Jane Doe Senior Python developer")
    assert [a.id for a in await store.list(user, limit=1)] == [j.id]


async def test_a_summary_is_written_back_with_its_tokens(pg: Postgres) -> None:
    """set_summary stores the result and tokens on the owner's asset only."""
    store = AssetStore(pg)
    user = new_user()
    r = await store.put(owner(user), resume())
    assert not await store.set_summary("resume", r.id, new_user(), {"x": 1}, 5)
    assert await store.set_summary("resume", r.id, user, {"summary": "Python"}, 321)
    got = await store.get("resume", r.id, user)
    assert got.summary == {"summary": "Python"} and got.summary_tokens == 321
    assert [a.summarized for a in await store.list(user)] == [True]


async def test_the_summary_cache_hits_on_the_same_key_only(pg: Postgres) -> None:
    """Same content, template, lang, model and prompt version hit; any change misses."""
    store, cache = AssetStore(pg), SummaryCache(pg)
    user = new_user()
    asset = await store.put(owner(user), resume())
    key = CacheKey(user, asset.content_sha256, "resume_summary", "en", "glm-4.5-flash", "v1")
    assert await cache.get(key) is None
    assert await cache.put(key, {"summary": "first"}, 100)
    assert not await cache.put(key, {"summary": "second"}, 200)  # the first one stays
    hit = await cache.get(key)
    assert hit is not None and hit.result == {"summary": "first"} and hit.tokens == 100
    # The same text uploaded again has the same content key.
    again = await store.put(owner(user), resume())
    assert again.content_sha256 == asset.content_sha256
    for changed in [
        CacheKey(user, asset.content_sha256, "resume_summary", "en", "deepseek-chat", "v1"),
        CacheKey(user, asset.content_sha256, "resume_summary", "en", "glm-4.5-flash", "v2"),
        CacheKey(user, asset.content_sha256, "resume_summary", "zh", "glm-4.5-flash", "v1"),
        CacheKey(new_user(), asset.content_sha256, "resume_summary", "en", "glm-4.5-flash", "v1"),
    ]:
        assert await cache.get(changed) is None


async def _assets(store: AssetStore, user: str) -> tuple[str, str, str]:
    r = await store.put(owner(user), resume())
    j = await store.put(owner(user), NewAsset(kind="jd", lang="en", source="text", text="J" * 90))
    d = await store.put(
        owner(user), NewAsset(kind="detailed_resume", lang="en", source="text", text="D" * 400)
    )
    return r.id, j.id, d.id


async def _depth_a_service(assets: AssetStore, services: ServiceStore, user: str) -> str:
    """A new depth-a service of `user` on a résumé and a job of theirs: its id."""
    r, j, _ = await _assets(assets, user)
    made = await services.create(
        owner(user), resume_id=r, job_id=j, detailed_resume_id=None, depth="a", lang="en"
    )
    assert made.service is not None
    return made.service.id


async def test_services_are_idempotent_and_owner_only(pg: Postgres) -> None:
    """The same idempotency key returns the same service; others' assets and reads are NotFound."""
    assets, services = AssetStore(pg), ServiceStore(pg)
    user, other = new_user(), new_user()
    r, j, d = await _assets(assets, user)
    made = await services.create(
        owner(user),
        resume_id=r,
        job_id=j,
        detailed_resume_id=d,
        depth="c",
        lang="en",
        idem_key="k1",
    )
    again = await services.create(
        owner(user),
        resume_id=r,
        job_id=j,
        detailed_resume_id=d,
        depth="c",
        lang="en",
        idem_key="k1",
    )
    assert made.service is not None and not made.existing
    assert again.existing and again.service is not None and again.service.id == made.service.id
    with pytest.raises(NotFound):
        await services.get(made.service.id, other)
    with pytest.raises(NotFound):  # someone else's assets
        await services.create(
            owner(other), resume_id=r, job_id=j, detailed_resume_id=None, depth="a", lang="en"
        )
    got = await services.get(made.service.id, user)
    assert (got.resume_id, got.job_id, got.detailed_resume_id) == (r, j, d)
    assert got.status == "created" and got.depth == "c"
    assert [s.id for s in await services.list(user)] == [made.service.id]


async def test_the_pending_limit_holds_under_concurrent_creates(pg: Postgres) -> None:
    """Eight concurrent creates with a limit of 3: exactly 3 services, 5 refusals."""
    assets, services = AssetStore(pg), ServiceStore(pg)
    user = new_user()
    r, j, _ = await _assets(assets, user)
    results = await asyncio.gather(
        *(
            services.create(
                owner(user),
                resume_id=r,
                job_id=j,
                detailed_resume_id=None,
                depth="a",
                lang="en",
                max_pending=3,
            )
            for _ in range(8)
        )
    )
    assert sum(c.service is not None for c in results) == 3
    assert {c.pending for c in results if c.service is None} == {3}
    assert await services.count_pending(user) == 3
    made = next(c.service for c in results if c.service is not None)
    assert made is not None
    assert await services.set_status(made.id, "running")
    assert await services.set_status(made.id, "done")
    assert await services.count_pending(user) == 2


async def test_status_moves_forward_and_a_terminal_status_is_set_once(pg: Postgres) -> None:
    """created → running → error once; no way back, no second terminal status."""
    assets, services = AssetStore(pg), ServiceStore(pg)
    user = new_user()
    sid = await _depth_a_service(assets, services, user)
    assert await services.set_status(sid, "running")
    assert not await services.set_status(sid, "running")
    outcomes = await asyncio.gather(
        *(services.set_status(sid, "error", error="x") for _ in range(5))
    )
    assert outcomes.count(True) == 1
    assert not await services.set_status(sid, "done")
    assert not await services.set_status(sid, "created")
    got = await services.get(sid, user)
    assert got.status == "error" and got.error == "x"


async def test_a_step_is_claimed_once_and_ended_once(pg: Postgres) -> None:
    """Concurrent claims: one wins; the task and result are recorded; a second result is ignored."""
    assets, services = AssetStore(pg), ServiceStore(pg)
    user = new_user()
    sid = await _depth_a_service(assets, services, user)
    claims = await asyncio.gather(*(services.claim_step(sid, "job_match") for _ in range(6)))
    assert claims.count(True) == 1
    task = new_user("task")
    assert await services.record_task(sid, "job_match", task, model="glm-4.5-flash")
    assert await services.step_of_task(task) == (sid, "job_match")
    assert await services.record_result(
        sid, "job_match", status="done", result={"match_score": 80}, tokens=900, cost=0.0
    )
    assert not await services.record_result(sid, "job_match", status="error", error="late")
    assert not await services.record_task(sid, "job_match", "task2")
    (step,) = (await services.get(sid, user)).steps
    assert (step.step, step.task_id, step.status, step.model, step.tokens) == (
        "job_match",
        task,
        "done",
        "glm-4.5-flash",
        900,
    )
    assert step.result == {"match_score": 80}
    assert await services.step_of_task("nope") is None


async def test_a_service_keeps_its_results_when_an_asset_is_deleted(pg: Postgres) -> None:
    """Deleting a résumé leaves its services, with resume_id null."""
    assets, services = AssetStore(pg), ServiceStore(pg)
    user = new_user()
    r, j, _ = await _assets(assets, user)
    made = await services.create(
        owner(user), resume_id=r, job_id=j, detailed_resume_id=None, depth="a", lang="en"
    )
    assert made.service is not None
    await assets.delete("resume", r, user)
    got = await services.get(made.service.id, user)
    assert got.resume_id is None and got.job_id == j
    deleted = await services.delete(made.service.id, user)
    assert deleted.id == made.service.id
    with pytest.raises(NotFound):
        await services.get(made.service.id, user)


async def test_erasing_a_user_removes_every_row_they_own(pg: Postgres, db_url: str) -> None:
    """UserStore.erase deletes the user, assets, cache, services and steps; others stay."""
    assets, services, users = AssetStore(pg), ServiceStore(pg), UserStore(pg)
    cache = SummaryCache(pg)
    user, other = new_user(), new_user()
    for who in (user, other):
        r, j, d = await _assets(assets, who)
        made = await services.create(
            owner(who), resume_id=r, job_id=j, detailed_resume_id=d, depth="c", lang="en"
        )
        assert made.service is not None
        await services.claim_step(made.service.id, "resume_summary")
        await cache.put(CacheKey(who, "sha", "resume_summary", "en", "m", "v1"), {}, 1)
    before = rows_of(db_url, other)
    erased = await users.erase(user)
    assert erased.user and erased.tables == {
        "resumes": 1,
        "detailed_resumes": 1,
        "job_descriptions": 1,
        "services": 1,
        "summary_cache": 1,
    }
    assert set(rows_of(db_url, user).values()) == {0}
    assert rows_of(db_url, other) == before
    again = await users.erase(user)
    assert not again.user and set(again.tables.values()) == {0}


async def test_no_database_or_an_unreachable_one_is_service_unavailable() -> None:
    """No DATABASE_URL, or a server that is not there: 503, within the timeout."""
    with pytest.raises(ServiceUnavailable):
        async with Postgres(None, pool_max=4).connection():
            pass
    for pool_max in (0, 2):
        handle = Postgres("postgresql://nobody@127.0.0.1:9/none", pool_max=pool_max, timeout_s=1)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await AssetStore(handle).list("u1")
        assert time.monotonic() - started < 10  # 1 s timeout; margin for a loaded host
        await handle.aclose()
