"""Services on the local stack: uploads, a depth-c service end to end, cache, limits, access."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lib import keys
from lib.app.stack import LocalStack, StackInfo, check_health
from lib.auth import issue_token
from lib.redis.tcp import TcpRedis
from lib.settings import secret
from tests.support.asset_files import assert_chinese_only
from tests.support.paths import EXAMPLES
from tests.support.stack import local_settings

pytestmark = pytest.mark.timeout(180)


def text(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A local stack whose offline model takes a little while (so steps can overlap)."""
    settings = local_settings().model_copy(
        update={"offline_ttft_ms": 300.0, "glm_flash_max_workers": 3}
    )
    local = LocalStack(
        settings, state_dir=tmp_path_factory.mktemp("services"), time_scale=0.01, persist=False
    )
    info = local.start()
    try:
        check_health(info)
        yield info
    finally:
        local.stop()


def client(stack: StackInfo, user: str | None = None) -> httpx.AsyncClient:
    headers = {}
    if user is not None:
        token = issue_token(secret(stack.settings.app_secret) or "", user, 3600)
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(base_url=stack.app_url, headers=headers, timeout=30.0)


async def upload(c: httpx.AsyncClient, kind: str, body: dict[str, Any]) -> str:
    response = await c.post(f"/api/upload/{kind}", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    return str(data[{"resume": "resume_id", "jd": "job_id"}.get(kind, "detailed_resume_id")])


async def assets(c: httpx.AsyncClient, lang: str = "en", detailed: bool = False) -> dict[str, str]:
    ids = {
        "resume_id": await upload(c, "resume", {"text": text(f"resume.{lang}.txt"), "lang": lang}),
        "job_id": await upload(c, "jd", {"text": text(f"job.{lang}.txt"), "lang": lang}),
    }
    if detailed:
        body = {"text": text("detailed_resume.en.txt"), "lang": "en"}
        ids["detailed_resume_id"] = await upload(c, "detailed-resume", body)
    return ids


async def finished(c: httpx.AsyncClient, service_id: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = (await c.get(f"/api/service/{service_id}")).json()
        if body["status"] in ("done", "error"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.2)


async def all_events(c: httpx.AsyncClient, service_id: str) -> list[dict[str, Any]]:
    """The service's whole event stream, long-polled from the start to its end."""
    out: list[dict[str, Any]] = []
    after = ""
    for _ in range(200):
        page = (
            await c.get(f"/api/service/{service_id}/events", params={"after": after, "wait": 5})
        ).json()
        out += page["events"]
        after = page["last_id"]
        if page["done"]:
            return out
    raise AssertionError("the stream never ended")


async def test_a_depth_c_service_runs_every_step_and_writes_summaries_back(
    stack: StackInfo,
) -> None:
    """Three summaries in parallel, then match, customized résumé, interview prep; all done."""
    async with client(stack, "svc-alice") as c:
        ids = await assets(c, detailed=True)
        reply = await c.post("/api/service/create", json={**ids, "depth": "c"})
        assert reply.status_code == 202, reply.text
        created = reply.json()
        assert (created["status"], created["depth"], created["tier"]) == ("running", "c", "free")
        service = await finished(c, created["service_id"])
        events = await all_events(c, created["service_id"])
        resume = (await c.get(f"/api/resumes/{ids['resume_id']}")).json()
    assert service["status"] == "done", service
    steps = {s["step"]: s for s in service["steps"]}
    assert list(steps) == [
        "resume_summary",
        "detailed_resume_summary",
        "job_summary",
        "job_match",
        "resume_customize",
        "interview_prep",
    ]
    assert all(s["status"] == "done" and s["tokens"] for s in steps.values()), steps
    assert steps["job_match"]["result"]["match_score"] >= 0
    assert steps["resume_customize"]["result"]["customized_resume_markdown"]
    # Written back to the asset, with its tokens.
    assert resume["summary"]["header"]["name"] == "Maya Chen"
    # One stream for the page: every step announced, the match streamed, the end last.
    kinds = [e["type"] for e in events]
    announced = [e["data"]["step"] for e in events if e["type"] == "step"]
    assert sorted(announced) == sorted(steps)
    tokens = [e for e in events if e["type"] == "token" and e["data"]["step"] == "job_match"]
    assert tokens and kinds[-1] == "service" and events[-1]["data"]["status"] == "done"
    assert kinds.count("result") == 6


async def test_the_summaries_overlap_in_time(stack: StackInfo) -> None:
    """The three summaries run at once: each starts before any of them finished."""
    async with client(stack, "svc-overlap") as c:
        ids = await assets(c, detailed=True)
        created = (await c.post("/api/service/create", json={**ids, "depth": "a"})).json()
        service = await finished(c, created["service_id"])
        times = []
        for step in service["steps"][:3]:
            task = (await c.get(f"/api/tasks/{step['task_id']}")).json()
            times.append((task["started_ms"], task["finished_ms"]))
    assert max(start for start, _ in times) < min(end for _, end in times), times


async def test_a_later_service_reuses_the_summaries(stack: StackInfo) -> None:
    """The same assets again: summaries come from the cache, only the match runs."""
    async with client(stack, "svc-cache") as c:
        ids = await assets(c)
        first = (await c.post("/api/service/create", json={**ids, "depth": "a"})).json()
        assert (await finished(c, first["service_id"]))["status"] == "done"
        second = (
            await c.post("/api/service/create", json={**ids, "depth": "b", "lang": "en"})
        ).json()
        service = await finished(c, second["service_id"])
    steps = {s["step"]: s for s in service["steps"]}
    assert steps["resume_summary"]["cached"] and steps["job_summary"]["cached"]
    assert steps["resume_summary"]["task_id"] is None
    assert not steps["job_match"]["cached"] and steps["resume_customize"]["status"] == "done"


async def test_the_same_request_returns_the_same_service(stack: StackInfo) -> None:
    """Idempotent: the same body answers with the service it made."""
    async with client(stack, "svc-idem") as c:
        ids = await assets(c)
        first = (await c.post("/api/service/create", json={**ids, "depth": "a"})).json()
        again = (await c.post("/api/service/create", json={**ids, "depth": "a"})).json()
        await finished(c, first["service_id"])
    assert again["service_id"] == first["service_id"] and again["existing"] is True


@pytest.mark.parametrize(
    ("change", "status", "code", "asset"),
    [
        # (text_too_short: an upload that short is refused already; the precheck, a
        # defense in depth, is pinned in tests/services/test_prechecks.py.)
        ({"jd": "We want a Python engineer who ships. " * 8}, 422, "sections_missing", "jd"),
        ({"lang": "zh"}, 422, "language_mismatch", "resume"),
        ({"missing": True}, 404, "not_found", None),
    ],
)
async def test_prechecks_refuse_before_anything_is_queued_or_charged(
    stack: StackInfo, change: dict[str, Any], status: int, code: str, asset: str | None
) -> None:
    """A failed precheck is its own 4xx, names the input, and leaves nothing behind."""
    user = f"svc-pre-{code}"
    async with client(stack, user) as c:
        ids = await assets(c)
        if "jd" in change:
            ids["job_id"] = await upload(c, "jd", {"text": change["jd"], "lang": "en"})
        body: dict[str, Any] = {**ids, "depth": "a"}
        if "lang" in change:
            body["lang"] = change["lang"]
        if change.get("missing"):
            body["resume_id"] = "0" * 32
        reply = await c.post("/api/service/create", json=body, headers={"Accept-Language": "zh"})
        listed = (await c.get("/api/services")).json()
    assert reply.status_code == status, reply.text
    error = reply.json()
    assert error["error"] == code and error.get("asset") == asset
    assert_chinese_only(error["message"])
    assert listed == {"services": []}
    redis = TcpRedis.from_url(stack.redis_url)
    try:
        assert await redis.execute("EXISTS", keys.services_pending(user)) == 0
        assert await redis.execute("ZCARD", keys.rate(user, "services")) == 0
    finally:
        await redis.aclose()


async def test_services_are_the_owners_only(stack: StackInfo) -> None:
    """Another user (or a trial visitor) gets 404 on the service, its events and its cancel."""
    async with client(stack, "svc-owner") as owner, client(stack, "svc-other") as other:
        ids = await assets(owner)
        created = (await owner.post("/api/service/create", json={**ids, "depth": "a"})).json()
        sid = created["service_id"]
        async with client(stack) as trial:
            for who in (other, trial):
                for method, path in (
                    ("GET", f"/api/service/{sid}"),
                    ("GET", f"/api/service/{sid}/events?after=&wait=0"),
                    ("DELETE", f"/api/service/{sid}"),
                ):
                    reply = await who.request(method, path)
                    assert reply.status_code == 404, (method, path, reply.text)
            assert (await other.get("/api/services")).json() == {"services": []}
            foreign = await other.post("/api/service/create", json={**ids, "depth": "a"})
            assert foreign.status_code == 404
        assert (await finished(owner, sid))["status"] == "done"


async def test_the_event_stream_resumes_over_sse_without_gaps(stack: StackInfo) -> None:
    """SSE cut after a few events and resumed with Last-Event-ID: every event once."""
    async with client(stack, "svc-sse") as c:
        ids = await assets(c)
        created = (await c.post("/api/service/create", json={**ids, "depth": "a"})).json()
        url = created["events_url"]
        seen: list[tuple[str, str]] = []
        last_id = ""
        done = False
        while not done:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            async with c.stream("GET", url, headers=headers) as response:
                taken = 0
                event: dict[str, str] = {}
                async for line in response.aiter_lines():
                    if line.startswith(("id:", "event:", "data:")):
                        name, _, value = line.partition(":")
                        event[name] = value.strip()
                    elif not line and "data" in event:
                        seen.append((event.get("event", ""), event["data"]))
                        last_id = event.get("id", last_id)
                        taken += 1
                        if event.get("event") == "service" and '"done"' in event["data"]:
                            done = True
                        event = {}
                        if taken == 3 or done:
                            break  # the connection drops here
        whole = await all_events(c, created["service_id"])
    assert [(kind, json.loads(data)) for kind, data in seen] == [
        (e["type"], e["data"]) for e in whole
    ]


async def test_a_bad_create_body_names_each_field(stack: StackInfo) -> None:
    """Missing ids, a bad depth, an unknown lang: 422 with a code per field, localized."""
    async with client(stack, "svc-body") as c:
        bad = await c.post(
            "/api/service/create", json={"depth": "z"}, headers={"Accept-Language": "zh"}
        )
        lang = await c.post(
            "/api/service/create", json={"resume_id": "0" * 32, "job_id": "0" * 32, "lang": "fr"}
        )
    body = bad.json()
    assert bad.status_code == 422 and body["error"] == "invalid_request"
    assert {f["field"] for f in body["fields"]} >= {"resume_id", "job_id", "depth"}
    assert_chinese_only(body["message"])
    assert lang.status_code == 422 and lang.json()["error"] == "unsupported_language"
    assert lang.json()["supported"] == ["en", "zh"]
