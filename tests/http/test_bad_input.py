"""Bad input that used to crash (500): stream ids past 64 bits, deeply nested JSON, signature tokens
the qstash Receiver chokes on. Each is a 4xx with the usual error body, changes nothing in Redis
and logs no crash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from lib import events
from lib.errors import InvalidSignature
from lib.http.json_body import parse_json
from lib.local.qstash.signing import sign
from lib.qstash.verify import Verifier
from lib.redis.port import RedisPort
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY
from tests.support.producer import (
    JOB_MATCH,
    RecordingPublisher,
    build_app,
    client_for,
    make_settings,
)
from tests.support.redis_snapshot import snapshot
from tests.worker.test_app import BASE, ScriptedRunner, admit, signed
from tests.worker.test_app import make_settings as worker_settings
from worker.app import create_app as create_worker

MAX_ID = "18446744073709551615"  # 2^64 - 1
OVER_64_BITS = [
    "18446744073709551616",
    "99999999999999999999-0",
    "0-18446744073709551616",
    f"{MAX_ID}-99999999999999999999",
]
EVENT_ID_EN = (
    "Invalid request: the event id must be a stream id (ms-seq, each part at most 2^64-1)."
)
EVENT_ID_ZH = "请求无效：事件编号必须是流编号（毫秒-序号，每部分不超过 2^64-1）。"
TOO_DEEP_EN = "Invalid request: the body is nested too deeply."
TOO_DEEP_ZH = "请求无效：请求体的嵌套层级过深。"


def no_crash_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR record and no traceback anywhere in the captured logs."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def app(tmp_path: Path, redis: RedisPort, publisher: RecordingPublisher) -> Any:
    return build_app(make_settings(tmp_path), redis, publisher)


async def submit(client: httpx.AsyncClient) -> str:
    resp = await client.post("/api/tasks", json=JOB_MATCH)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["task_id"])


# --- stream ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (MAX_ID, True),
        (f"{MAX_ID}-{MAX_ID}", True),
        ("00001-0001", True),
        *[(v, False) for v in OVER_64_BITS],
        ("123\n", False),  # `$` in a regex matches before a final newline
        ("1-2\n", False),
        ("١٢٣", False),  # Arabic-Indic digits: `\d` takes them, Redis does not
        ("1-٢", False),
    ],
)
def test_stream_id_parts_fit_64_bits(value: str, ok: bool) -> None:
    """A resume point is ASCII `ms[-seq]`, the whole value, each part at most 2^64 - 1."""
    assert events.valid_stream_id(value) is ok


def _events_request(task_id: str, where: str, value: str) -> dict[str, Any]:
    url = f"/api/tasks/{task_id}/events"
    if where == "header":
        return {"url": url, "headers": {"last-event-id": value}}
    if where == "query":
        return {"url": url, "params": {"last_event_id": value}}
    return {"url": url, "params": {"after": value, "wait": "0"}}


@pytest.mark.parametrize("where", ["header", "query", "after"])
@pytest.mark.parametrize("value", OVER_64_BITS)
async def test_stream_ids_over_64_bits_are_422(
    app: Any, redis: RedisPort, caplog: pytest.LogCaptureFixture, where: str, value: str
) -> None:
    """Last-Event-ID, ?last_event_id and long-poll ?after past 2^64 - 1: 422, nothing changes."""
    caplog.set_level(logging.INFO)
    async with client_for(app) as client:
        task_id = await submit(client)
        before = await snapshot(redis)
        resp = await client.get(**_events_request(task_id, where, value))
    assert resp.status_code == 422
    assert resp.json() == {"error": "invalid_request", "message": EVENT_ID_EN}
    assert await snapshot(redis) == before
    no_crash_logged(caplog)


@pytest.mark.parametrize("where", ["query", "after"])
@pytest.mark.parametrize("value", ["123\n", "١٢٣"])
async def test_stream_ids_must_be_plain_ascii(
    app: Any, redis: RedisPort, caplog: pytest.LogCaptureFixture, where: str, value: str
) -> None:
    """A trailing newline or non-ASCII digits (which Redis refuses) are 422, not a Redis error."""
    caplog.set_level(logging.INFO)
    async with client_for(app) as client:
        task_id = await submit(client)
        resp = await client.get(**_events_request(task_id, where, value))
    assert (resp.status_code, resp.json()["error"]) == (422, "invalid_request")
    no_crash_logged(caplog)


async def test_largest_stream_id_is_a_valid_resume_point(app: Any) -> None:
    """`2^64-1-2^64-1` reaches Redis (which takes it) and reads nothing after it."""
    async with client_for(app) as client:
        task_id = await submit(client)
        resp = await client.get(
            f"/api/tasks/{task_id}/events", params={"after": f"{MAX_ID}-{MAX_ID}", "wait": "0"}
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["events"] == []


async def test_bad_event_id_in_chinese(app: Any) -> None:
    """Accept-Language zh: the whole message is Chinese, the English detail is not in it."""
    async with client_for(app, **{"accept-language": "zh"}) as client:
        task_id = await submit(client)
        resp = await client.get(
            f"/api/tasks/{task_id}/events", headers={"last-event-id": OVER_64_BITS[0]}
        )
    assert resp.status_code == 422
    message = resp.json()["message"]
    assert message == EVENT_ID_ZH
    assert not re.search(r"[A-Za-z]", message)


# --- deeply nested JSON ---------------------------------------------------------------------


def nested(depth: int, leaf: Any = "x") -> Any:
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


def deep_json(depth: int) -> str:
    """`depth` levels of alternating arrays and objects, written without recursion."""
    opens = "".join('{"k":' if i % 2 else "[" for i in reversed(range(depth)))
    closes = "".join("}" if i % 2 else "]" for i in range(depth))
    return opens + '"x"' + closes


@pytest.mark.parametrize(
    "body",
    [
        '{"template":"job_match","variables":{"resume_text":%s,"job_text":"x"}}',
        '{"template":"job_match","variables":{"resume_text":"r","job_text":"j","job_summary":%s}}',
        '{"template":"job_match","variables":{"resume_text":"r","job_text":"j"},"extra":%s}',
        "%s",
    ],
    ids=["variable", "summary", "extra-field", "whole-body"],
)
async def test_body_nested_1000_deep_is_422(
    app: Any,
    redis: RedisPort,
    publisher: RecordingPublisher,
    caplog: pytest.LogCaptureFixture,
    body: str,
) -> None:
    """A body nested 1,000 levels deep (RecursionError in json.loads) is 422 invalid_request."""
    caplog.set_level(logging.INFO)
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", content=body % deep_json(1000))
    assert resp.status_code == 422
    assert resp.json() == {"error": "invalid_request", "message": TOO_DEEP_EN}
    assert publisher.published == []
    assert await snapshot(redis) == {}
    no_crash_logged(caplog)


async def test_deep_body_in_chinese(app: Any) -> None:
    """Body `lang: zh` cannot be read from a body too deep to parse; Accept-Language zh can."""
    async with client_for(app, **{"accept-language": "zh-CN"}) as client:
        resp = await client.post("/api/tasks", content=deep_json(1000))
    assert resp.status_code == 422
    assert resp.json()["message"] == TOO_DEEP_ZH
    assert not re.search(r"[A-Za-z]", resp.json()["message"])


async def test_moderate_nesting_still_works(app: Any, publisher: RecordingPublisher) -> None:
    """A summary object nested 100 deep is within the parser's limit and is accepted."""
    variables = {**JOB_MATCH["variables"], "job_summary": nested(100)}
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", json={**JOB_MATCH, "variables": variables})
    assert resp.status_code == 202, resp.text
    assert json.loads(publisher.published[0].body["variables"]["job_summary"]) == nested(100)


async def test_lone_surrogate_is_422(
    app: Any, redis: RedisPort, caplog: pytest.LogCaptureFixture
) -> None:
    """`"\\ud800"` parsed into a string no encoder could hash (a 500): now 422, nothing kept."""
    caplog.set_level(logging.INFO)
    raw = '{"template":"job_match","variables":{"resume_text":"\\ud800","job_text":"x"}}'
    async with client_for(app) as client:
        resp = await client.post("/api/tasks", content=raw)
    assert (resp.status_code, resp.json()["error"]) == (422, "invalid_request")
    assert resp.json()["message"] == "Invalid request: the body is not valid JSON."
    assert await snapshot(redis) == {}
    no_crash_logged(caplog)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (deep_json(1000), "too_deep"),
        ("{nope", "not_json"),
        ('"\\udc00"', "not_json"),
        ("", "not_json"),
    ],
)
def test_parse_json_reasons(raw: str, reason: str) -> None:
    """Each way a body is not usable JSON names its (localized) reason."""
    from lib.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as caught:
        parse_json(raw)
    assert caught.value.params == {"reason": reason}


# --- worker: signature tokens and bodies --------------------------------------------------------


@pytest.fixture
async def worker(redis: RedisPort) -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedRunner]]:
    runner = ScriptedRunner(["hi"])
    verifier = Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
    app = create_worker(worker_settings(), redis=redis, runner=runner, verifier=verifier)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client, runner


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forge(header: Any, payload: Any, key: str = DEV_CURRENT_SIGNING_KEY) -> str:
    """A token HMAC-signed with `key` over arbitrary header and payload JSON (or raw bytes)."""
    h = _b64(header if isinstance(header, bytes) else json.dumps(header).encode())
    p = _b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    mac = hmac.new(key.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{_b64(mac)}"


def claims(url: str, raw: bytes, /, **changes: Any) -> dict[str, Any]:
    """Upstash's claims for `raw` sent to `url`, with `changes` (`_DROP` removes a claim)."""
    now = int(time.time())
    base = {
        "iss": "Upstash",
        "sub": url,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "body": _b64(hashlib.sha256(raw).digest()),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()
HS256 = {"alg": "HS256", "typ": "JWT"}
URL = "https://app.example/api/worker/free/text/stream"
BODY = b'{"task_id": "t1"}'


def _malformed_tokens() -> dict[str, str]:
    """Tokens signed with the right key but malformed, and tokens that are not tokens."""
    now = int(time.time())
    inf_exp = b'{"iss":"Upstash","sub":"%s","iat":%d,"nbf":%d,"exp":1e400,"body":"x"}' % (
        URL.encode(),
        now,
        now,
    )
    return {
        "no-body-claim": forge(HS256, claims(URL, BODY, body=_DROP)),
        "no-body-claim-next-key": forge(
            HS256, claims(URL, BODY, body=_DROP), key=DEV_NEXT_SIGNING_KEY
        ),
        "body-claim-int": forge(HS256, claims(URL, BODY, body=5)),
        "body-claim-list": forge(HS256, claims(URL, BODY, body=["x"])),
        "body-claim-null": forge(HS256, claims(URL, BODY, body=None)),
        "body-claim-lone-surrogate": forge(HS256, claims(URL, BODY, body="\ud800")),
        "sub-int": forge(HS256, claims(URL, BODY, sub=5)),
        "no-sub": forge(HS256, claims(URL, BODY, sub=_DROP)),
        "exp-infinite": forge(HS256, inf_exp),
        "exp-string": forge(HS256, claims(URL, BODY, exp="soon")),
        "iat-string": forge(HS256, claims(URL, BODY, iat="x")),
        "iss-list": forge(HS256, claims(URL, BODY, iss=["Upstash"])),
        "payload-list": forge(HS256, [1, 2]),
        "payload-not-json": forge(HS256, b"{not json"),
        "payload-not-utf8": forge(HS256, b"\xff\xfe"),
        "header-list": forge([1], claims(URL, BODY)),
        "alg-none": forge({"alg": "none"}, claims(URL, BODY)),
        "alg-list": forge({"alg": ["HS256"]}, claims(URL, BODY)),
        "crit-header": forge({**HS256, "crit": ["x"]}, claims(URL, BODY)),
        "bad-base64": "a$b.c%d.e^f",
        "two-segments": "abc.def",
        "four-segments": "a.b.c.d",
        "empty-segments": "..",
        "non-ascii": "é.é.é",
        "huge": "a" * 100_000 + ".b.c",
    }


@pytest.mark.parametrize(("name", "token"), list(_malformed_tokens().items()))
def test_any_receiver_failure_is_invalid_signature(name: str, token: str) -> None:
    """Whatever the qstash Receiver raises on a malformed token, verify raises InvalidSignature."""
    verifier = Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
    with pytest.raises(InvalidSignature) as caught:
        verifier.verify(token, BODY, URL)
    assert caught.value.status == 401


def test_missing_body_claim_names_the_reason() -> None:
    """The token without a `body` claim (a KeyError inside the Receiver) is reported as such."""
    verifier = Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
    with pytest.raises(InvalidSignature, match="missing claim 'body'"):
        verifier.verify(forge(HS256, claims(URL, BODY, body=_DROP)), BODY, URL)


@pytest.mark.parametrize("change", ["no-body", "body-int", "body-surrogate"])
async def test_worker_answers_401_to_tokens_the_receiver_chokes_on(
    redis: RedisPort,
    worker: tuple[httpx.AsyncClient, ScriptedRunner],
    caplog: pytest.LogCaptureFixture,
    change: str,
) -> None:
    """A token without a `body` claim, or a non-string one: 401; nothing runs or moves."""
    caplog.set_level(logging.INFO)
    client, runner = worker
    msg = await admit(redis, worker_settings())
    path, body, headers = signed(msg)
    value: Any = {"no-body": _DROP, "body-int": 5, "body-surrogate": "\ud800"}[change]
    headers["Upstash-Signature"] = forge(HS256, claims(BASE + path, body, body=value))
    before = await snapshot(redis)
    resp = await client.post(path, content=body, headers=headers)
    assert (resp.status_code, resp.json()["error"]) == (401, "invalid_signature")
    assert runner.calls == []
    assert await snapshot(redis) == before
    no_crash_logged(caplog)


async def test_signed_deep_delivery_is_non_retryable(
    redis: RedisPort,
    worker: tuple[httpx.AsyncClient, ScriptedRunner],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A correctly signed body nested 1,000 deep is 489 (never retried), not a 500."""
    caplog.set_level(logging.INFO)
    client, runner = worker
    msg = await admit(redis, worker_settings())
    path, _, headers = signed(msg)
    body = deep_json(1000).encode()
    headers["Upstash-Signature"] = jwt.encode(
        claims(BASE + path, body), DEV_CURRENT_SIGNING_KEY, algorithm="HS256"
    )
    before = await snapshot(redis)
    resp = await client.post(path, content=body, headers=headers)
    assert resp.status_code == 489
    assert resp.headers["upstash-nonretryable-error"] == "true"
    assert runner.calls == []
    assert await snapshot(redis) == before
    no_crash_logged(caplog)


def _callback_bodies(msg: Any) -> dict[str, bytes]:
    good = msg.model_dump(mode="json")
    no_models = base64.b64encode(json.dumps({**good, "models": []}).encode()).decode()
    return {
        "null_source": b'{"sourceBody": null}',
        "array": b"[]",
        "null": b"null",
        "not_utf8": b'{"sourceBody": "\xff\xfe"}',
        "bad_base64": b'{"sourceBody": "%%%"}',
        "empty_models": json.dumps({"sourceBody": no_models}).encode(),
        "deep": ('{"sourceBody":' + deep_json(1000) + "}").encode(),
    }


@pytest.mark.parametrize(
    "case",
    ["null_source", "array", "null", "not_utf8", "bad_base64", "empty_models", "deep"],
)
async def test_malformed_signed_failure_callbacks_are_non_retryable(
    redis: RedisPort, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed failure callback whose body is not one gets 489 (to the DLQ), changes nothing."""
    settings = worker_settings()
    msg = await admit(redis, settings)
    body = _callback_bodies(msg)[case]
    url = BASE + "/api/worker/failed"
    headers = {"Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url=url, body=body)}
    verifier = Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)
    app = create_worker(
        settings,
        redis=redis,
        runner=ScriptedRunner([]),
        verifier=verifier,
        publisher=RecordingPublisher(),
    )
    before = await snapshot(redis)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        response = await c.post("/api/worker/failed", content=body, headers=headers)
    assert response.status_code == 489, response.text
    assert response.headers["Upstash-NonRetryable-Error"] == "true"
    assert response.json()["error"] == "invalid_request"
    assert await snapshot(redis) == before
    no_crash_logged(caplog)
