"""Pages and their plumbing without a browser: locale helpers, the session cookie and the
cross-site check, operator-only data routes, fingerprinted assets, dead-letter rows, recent
failures, the cold import and the wheel's package data."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psycopg
import pytest

from lib.auth import issue_token
from lib.db import migrate as db
from lib.redis.port import RedisPort
from lib.usage.store import error_kind, recent_failures
from producer.identity import SESSION_COOKIE, origin_verdict
from producer.web.assets import fingerprint
from producer.web.dlq import dead_letter_row
from producer.web.locale import redirect_target, safe_next, split_locale
from tests.support.paths import ROOT
from tests.support.pg import fresh_database
from tests.support.producer import JOB_MATCH, SECRET, RecordingPublisher, build_app, make_settings

BASE = "http://test"
OTHER_SECRET = "other-secret-0123456789abcdef-0123456789"


def test_cold_import_loads_no_template_engine() -> None:
    """Importing the producer app loads neither Jinja2 nor the page routes nor qstash."""
    code = "import sys, json, producer.app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    loaded = set(json.loads(out.stdout))
    assert not {"jinja2", "producer.web.pages", "producer.web.render", "qstash"} & loaded


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/zh/queues", ("zh", "/queues")),
        ("/en/", ("en", "/")),
        ("/zh", ("zh", "/")),
        ("/queues", (None, "/queues")),
        ("/english/x", (None, "/english/x")),
    ],
)
def test_split_locale(path: str, expected: tuple[str | None, str]) -> None:
    """A path's locale is its first segment when that is a supported language."""
    assert split_locale(path) == expected


@pytest.mark.parametrize(
    ("path", "query", "cookie", "accept", "expected"),
    [
        ("/", "", None, None, "/en/"),
        ("/", "", None, "fr;q=1, zh-TW;q=0.8", "/zh/"),
        ("/workbench", "a=1", "zh", "en", "/zh/workbench?a=1"),
        ("/queues", "", "xx", "zh-CN", "/zh/queues"),
        ("/nope", "", "zh", None, None),
    ],
)
def test_redirect_target(
    path: str, query: str, cookie: str | None, accept: str | None, expected: str | None
) -> None:
    """Cookie, then Accept-Language, then en; only page paths redirect."""
    assert redirect_target(path, query, cookie=cookie, accept_language=accept) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/en/queues", "/en/queues"),
        ("//evil.example/x", "/d"),
        ("https://evil.example", "/d"),
        ("/\\evil.example", "/d"),
        ("/a\nb", "/d"),
        (None, "/d"),
    ],
)
def test_safe_next(value: str | None, expected: str) -> None:
    """After sign-in only a path on this site is followed."""
    assert safe_next(value, "/d") == expected


@pytest.mark.parametrize(
    ("origin", "referer", "expected"),
    [
        ("http://test", None, True),
        ("http://TEST", None, True),
        ("http://evil.example", None, False),
        ("null", None, False),
        (None, "http://test/en/queues", True),
        (None, "http://evil.example/x", False),
        ("http://evil.example", "http://test/", False),
        (None, None, None),
    ],
)
def test_origin_verdict(origin: str | None, referer: str | None, expected: bool | None) -> None:
    """Origin (else Referer) must name this host; neither is 'unknown'."""
    assert origin_verdict(origin, referer, ["test", ""]) is expected


@pytest.fixture
async def app(
    tmp_path: Path, tcp_redis: RedisPort
) -> AsyncIterator[tuple[Any, RecordingPublisher]]:
    """The producer app on a flushed Valkey, `alice` an operator, publishing recorded."""
    publisher = RecordingPublisher()
    settings = make_settings(tmp_path, operators=frozenset({"alice"}))
    yield build_app(settings, tcp_redis, publisher), publisher


def _client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, headers=headers)


def _session(user: str) -> dict[str, str]:
    return {"cookie": f"{SESSION_COOKIE}={issue_token(SECRET, user, 600)}"}


async def test_session_cookie_is_an_identity_and_its_posts_must_come_from_this_site(
    app: tuple[Any, RecordingPublisher],
) -> None:
    """With the session cookie a POST needs this site's Origin (none or another: 403 and
    nothing published); bearer calls and cookieless trial calls are not affected."""
    asgi, publisher = app
    async with _client(asgi, **_session("bob")) as client:
        for origin in (None, "http://evil.example", "null"):
            headers = {"origin": origin} if origin else {}
            reply = await client.post("/api/tasks", json=JOB_MATCH, headers=headers)
            assert reply.status_code == 403, reply.text
            assert reply.json()["error"] == "cross_site_request"
        assert publisher.published == []
        reply = await client.post("/api/tasks", json=JOB_MATCH, headers={"origin": BASE})
        assert reply.status_code == 202, reply.text
        status = await client.get(reply.json()["status_url"])
        assert status.status_code == 200  # the session's user owns it
    bearer = {"authorization": f"Bearer {issue_token(SECRET, 'carol', 600)}"}
    async with _client(asgi, **bearer, origin="http://evil.example") as client:
        assert (await client.post("/api/tasks", json=JOB_MATCH)).status_code == 202
    async with _client(asgi) as client:
        assert (await client.post("/api/tasks", json=JOB_MATCH)).status_code == 202
        reply = await client.post(
            "/api/tasks",
            json={**JOB_MATCH, "service_id": "x"},
            headers={"referer": "http://evil.example/"},
        )
        assert reply.status_code == 403
    async with _client(asgi, **_session("bob"), origin=BASE, **{"accept-language": "zh"}) as c:
        assert (await c.post("/zh/signout")).status_code == 303
    async with _client(asgi, **_session("bob"), **{"accept-language": "zh"}) as c:
        reply = await c.post("/zh/signout")
        assert reply.status_code == 403
        assert reply.json()["message"] == "该请求来自其他站点，已被拒绝。"


async def test_an_invalid_session_is_401_on_the_api_and_is_cleared(
    app: tuple[Any, RecordingPublisher],
) -> None:
    """An expired or forged session cookie is refused (never a silent trial) and removed."""
    asgi, _ = app
    async with _client(asgi, cookie=f"{SESSION_COOKIE}=forged.token.value") as client:
        reply = await client.get("/api/tasks/abc")
        assert reply.status_code == 401
        cleared = reply.headers["set-cookie"]
        assert cleared.startswith(f"{SESSION_COOKIE}=;") and "Max-Age=0" in cleared


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": f"Bearer {issue_token(SECRET, 'bob', 600)}"},
        {"cookie": f"{SESSION_COOKIE}={issue_token(SECRET, 'bob', 600)}"},
        {"authorization": "Bearer not-a-token"},
        {"cookie": f"{SESSION_COOKIE}={issue_token(OTHER_SECRET, 'alice', 600)}"},
    ],
    ids=["trial", "bearer-bob", "session-bob", "bad-token", "forged-alice"],
)
async def test_dashboard_and_its_data_are_404_for_non_operators(
    app: tuple[Any, RecordingPublisher], headers: dict[str, str]
) -> None:
    """Trial, signed-in non-operators and invalid credentials get 404 on page and data."""
    asgi, _ = app
    async with _client(asgi, origin=BASE, **headers) as client:
        page = await client.get("/en/queues")
        assert page.status_code == 404
        assert "text/html" in page.headers["content-type"]
        for method, path in (
            ("GET", "/api/ops/queues"),
            ("GET", "/api/ops/failures"),
            ("POST", "/api/ops/dlq/1-1/retry"),
        ):
            reply = await client.request(method, path)
            assert reply.status_code == 404, (method, path)
            assert reply.json()["error"] == "not_found"


@pytest.mark.parametrize("via", ["bearer", "session"])
async def test_operators_get_the_dashboard_and_its_data(
    app: tuple[Any, RecordingPublisher], via: str
) -> None:
    """An operator (bearer header or session cookie) gets the page and the snapshot."""
    asgi, _ = app
    token = issue_token(SECRET, "alice", 600)
    headers = (
        {"authorization": f"Bearer {token}"}
        if via == "bearer"
        else {"cookie": f"{SESSION_COOKIE}={token}"}
    )
    async with _client(asgi, **headers) as client:
        page = await client.get("/zh/queues")
        assert page.status_code == 200
        assert '<html lang="zh">' in page.text
        assert page.text.count('data-testid="queue-row"') == 5
        data = (await client.get("/api/ops/queues")).json()
        assert {q["queue_id"] for q in data["queues"]} >= {"q_glm_flash"}
        assert data["now_ms"] > 0


async def test_static_assets_are_fingerprinted_and_immutable(
    app: tuple[Any, RecordingPublisher],
) -> None:
    """Pages link `/static/{name}.{sha256 prefix}.{ext}`, served for a year as immutable;
    another hash is 404, a matching ETag 304."""
    asgi, _ = app
    async with _client(asgi) as client:
        page = await client.get("/en/")
        urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
        assert {u.split("/")[-1].split(".")[0] for u in urls} >= {"site", "common", "favicon"}
        for url in urls:
            reply = await client.get(url)
            assert reply.status_code == 200, url
            assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
            name = url.rsplit("/", 1)[1]
            stem, digest, suffix = name.rsplit(".", 2)
            assert hashlib.sha256(reply.content).hexdigest().startswith(digest)
            assert fingerprint(f"{stem}.{suffix}", reply.content) == name
            again = await client.get(url, headers={"if-none-match": reply.headers["etag"]})
            assert again.status_code == 304
        stale = re.sub(r"\.[0-9a-f]{12}\.", ".000000000000.", urls[0])
        assert (await client.get(stale)).status_code == 404
        assert (await client.get("/static/site.css")).status_code == 404


def test_dead_letter_rows_carry_ids_and_codes_only() -> None:
    """A DLQ entry shows its ids, path, status and error code, never the message body."""
    msg = SimpleNamespace(
        dlq_id="1796-42",
        message_id="msg_1",
        body=json.dumps({"task_id": "t1", "queue_id": "q_glm_flash", "variables": {"r": "SECRET"}}),
        body_base64=None,
        response_body=json.dumps({"error": "slot_busy", "message": "SECRET too"}),
        response_body_base64=None,
        response_status=429,
        url="http://127.0.0.1:1/api/worker/free/text/stream?x=SECRET",
        created_at=1796,
    )
    row = dead_letter_row(msg)
    assert row == {
        "dlq_id": "1796-42",
        "message_id": "msg_1",
        "task_id": "t1",
        "queue_id": "q_glm_flash",
        "path": "/api/worker/free/text/stream",
        "status": 429,
        "reason": "slot_busy",
        "created_ms": 1796,
    }
    odd = dead_letter_row(
        SimpleNamespace(**{**vars(msg), "body": "not json", "response_body": "<html>SECRET"})
    )
    assert odd["task_id"] is None and odd["reason"] is None
    assert "SECRET" not in json.dumps(odd)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("APIStatusError: HTTP 429", "APIStatusError"),
        ("lost: attempt 3 ended without finishing", "lost"),
        ("cancelled", "cancelled"),
        ("ValidationError: 1 validation error for Job", "ValidationError"),
        ("错误: 内容", "unknown"),
        (None, "unknown"),
    ],
)
def test_error_kind(message: str | None, kind: str) -> None:
    """A logged error's kind is what precedes its first colon, identifier characters only."""
    assert error_kind(message) == kind


def test_recent_failures_are_the_newest_failed_attempts(postgres_url: str) -> None:
    """Failed attempts of the last hour, newest first; successes and older rows left out."""
    url = fresh_database(postgres_url, "web_failures")
    asyncio.run(db.migrate(url))
    now = datetime.now(UTC)
    rows = [
        ("a", True, None, now),
        ("b", False, "APIStatusError: HTTP 500", now - timedelta(minutes=5)),
        ("c", False, "lost: attempt 2 ended without finishing", now - timedelta(minutes=1)),
        ("d", False, "TimeoutError: slow", now - timedelta(hours=2)),
    ]
    with psycopg.connect(url, autocommit=True) as conn:
        for source, ok, error, at in rows:
            conn.execute(
                "INSERT INTO llm_usage_logs (source_id, user_id, service_id, task_template_id,"
                " provider, model_id, is_success, error_message, created_at)"
                " VALUES (%s, 'u1', 's', 'job_match', 'offline', 'glm-4.5-flash', %s, %s, %s)",
                (source, ok, error, at),
            )
    failures = asyncio.run(recent_failures(url, minutes=60, limit=10))
    assert [f.error_kind for f in failures] == ["lost", "APIStatusError"]
    assert all(f.model == "glm-4.5-flash" and f.template == "job_match" for f in failures)


def test_build_ships_dictionaries_templates_and_assets(tmp_path: Path) -> None:
    """setuptools' build (what a wheel packs: `build_py`) holds every dictionary file,
    template and static file, Lua script, migration and prompt, from the package-data
    patterns in pyproject.toml."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("api", "lib", "producer", "worker", "prompts"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "build"
    code = (
        "import sys, setuptools; "
        f"sys.argv = ['setup.py', '-q', 'build_py', '-d', {str(out)!r}]; setuptools.setup()"
    )
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=src,
        capture_output=True,
        check=True,
        timeout=120,
    )
    built = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    wanted = {
        str(p.relative_to(ROOT))
        for pattern in (
            "lib/locales/*/*.json",
            "producer/web/templates/*",
            "producer/web/static/*",
            "lib/**/lua/*.lua",
            "lib/db/migrations/*.sql",
            "prompts/*/*.toml",
        )
        for p in ROOT.glob(pattern)
    }
    assert len(wanted) > 12
    assert not wanted - built, wanted - built
