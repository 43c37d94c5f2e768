"""Errors a user can act on: each field with a code and a localized message, Chinese all
through for a Chinese request, and only the dictionaries' words in any message."""

from __future__ import annotations

import ast
import base64
import re
from pathlib import Path
from typing import Any

import pytest

from lib.errors import SlotlineError
from lib.http.errors import error_body
from lib.i18n import catalog, localize_fields, message
from lib.redis.tcp import TcpRedis
from lib.templates.variables import MAX_RESUME_CHARS, VARIABLE_MODELS
from producer.tasks import SubmitRequest
from tests.support.paths import ROOT
from tests.support.producer import (
    JOB_MATCH,
    RecordingPublisher,
    build_app,
    client_for,
    make_settings,
)
from tests.test_i18n import ALLOWED_LATIN, PLACEHOLDER

LANG_HEADERS = {"en": {"accept-language": "en"}, "zh": {"accept-language": "zh-CN"}}
PNG_TEXT = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()
# What pydantic or Starlette would say in English, had their text leaked.
LEAKS = ("Field required", "String should", "Input should", "Extra inputs", "Not Allowed")


def english_words(text: str) -> set[str]:
    """Latin words of a Chinese text, less product and format names."""
    return set(re.findall(r"[A-Za-z]{2,}", text)) - ALLOWED_LATIN


@pytest.fixture
def app(tmp_path: Path, tcp_redis: TcpRedis) -> Any:
    return build_app(make_settings(tmp_path), tcp_redis, RecordingPublisher())


async def post(app: Any, lang: str, **request: Any) -> tuple[int, dict[str, Any]]:
    async with client_for(app, **LANG_HEADERS[lang]) as client:
        resp = await client.post("/api/tasks", **request)
    return resp.status_code, resp.json()


def check_language(body: dict[str, Any], lang: str) -> None:
    """Every text of the body is in `lang`: no English in Chinese, no leaked library text."""
    texts = [body["message"], *(f["message"] for f in body.get("fields", []))]
    for text in texts:
        assert text and not any(leak in text for leak in LEAKS), text
        if lang == "zh":
            assert not english_words(text), (text, english_words(text))


def variables_case(variables: Any) -> dict[str, Any]:
    return {"json": {"template": "job_match", "variables": variables}}


# (request, status, code, [(field, code, params)])
CASES: dict[str, tuple[dict[str, Any], int, str, list[tuple[str, str, dict[str, Any]]]]] = {
    "too_long": (
        variables_case({"resume_text": "x" * (MAX_RESUME_CHARS + 1), "job_text": "Go"}),
        422,
        "missing_variables",
        [("resume_text", "too_long", {"max": MAX_RESUME_CHARS})],
    ),
    "missing_and_extra": (
        variables_case({"resume_text": "Go", "cover": "x"}),
        422,
        "missing_variables",
        [("job_text", "missing", {}), ("cover", "not_allowed", {})],
    ),
    "blank_and_mistyped": (
        variables_case({"resume_text": "   ", "job_text": 5}),
        422,
        "missing_variables",
        [("resume_text", "too_short", {"min": 1}), ("job_text", "invalid_type", {})],
    ),
    "variables_not_object": (
        variables_case(["a résumé"]),
        422,
        "invalid_request",
        [("variables", "invalid_type", {"expected": "object"})],
    ),
    "job_one_of": (
        {"json": {"template": "job_summary", "variables": {}}},
        422,
        "missing_variables",
        [("job_text", "missing_one_of", {"one_of": ["job_text", "job_image"]})],
    ),
    "bad_image": (
        {"json": {"template": "job_summary", "variables": {"job_image": PNG_TEXT}}},
        415,
        "bad_image",
        [("job_image", "bad_image", {})],
    ),
    "body_fields": (
        {"json": {**JOB_MATCH, "priority": 99, "service_id": "a:b", "extra": 1}},
        422,
        "invalid_request",
        [
            ("service_id", "invalid_format", {}),
            ("priority", "too_large", {"max": 9}),
            ("extra", "not_allowed", {}),
        ],
    ),
    "body_types": (
        {"json": {"template": "", "variables": {}, "priority": "high", "lang": 5}},
        422,
        "invalid_request",
        [
            ("template", "too_short", {"min": 1}),
            ("lang", "invalid_type", {"expected": "text"}),
            ("priority", "invalid_type", {"expected": "integer"}),
        ],
    ),
    "no_template": (
        {"json": {"variables": {}}},
        422,
        "invalid_request",
        [("template", "missing", {})],
    ),
    "body_not_object": (
        {"json": [1, 2]},
        422,
        "invalid_request",
        [("body", "invalid_type", {"expected": "object"})],
    ),
    "priority_for_trial": (
        {"json": {**JOB_MATCH, "priority": 3}},
        422,
        "priority_not_allowed",
        [("priority", "too_large", {"max": 0})],
    ),
}


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("case", list(CASES))
async def test_each_field_has_a_code_and_a_localized_message(
    app: Any, case: str, lang: str
) -> None:
    """Every invalid field is listed with its code, limits and a message in the caller's
    language; the top message is built from the same texts."""
    request, status, code, expected = CASES[case]
    got_status, body = await post(app, lang, **request)
    assert (got_status, body["error"]) == (status, code), body
    fields = body["fields"]
    assert [(f["field"], f["code"]) for f in fields] == [(f, c) for f, c, _ in expected]
    for item, (_, _, params) in zip(fields, expected, strict=True):
        assert {k: item[k] for k in params} == params
        assert item["message"] == localize_fields([params | item], lang)[0]["message"]
        if code in ("missing_variables", "invalid_request"):
            assert item["message"] in body["message"]
    check_language(body, lang)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "Check the variables. Résumé text: too long, at most 30000 characters."),
        ("zh", "请检查变量。简历文本：过长，最多 30000 个字符。"),
    ],
)
async def test_a_too_long_text_says_so(app: Any, lang: str, expected: str) -> None:
    """Not "Missing or invalid variables": the text is too long, and by how much."""
    request = variables_case({"resume_text": "x" * (MAX_RESUME_CHARS + 1), "job_text": "Go"})
    _, body = await post(app, lang, **request)
    assert body["message"] == expected


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"{nope", "not_json"), (b"[" * 2000 + b"]" * 2000, "too_deep")],
    ids=["not-json", "too-deep"],
)
@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_unparsable_bodies_are_localized(
    app: Any, lang: str, content: bytes, reason: str
) -> None:
    """`请求无效：body is not JSON` no more: the detail is the dictionary's."""
    status, body = await post(app, lang, content=content)
    assert (status, body["error"]) == (422, "invalid_request")
    detail = catalog(lang)
    assert body["message"] == message("invalid_request", lang, {"reason": reason})
    assert detail[f"errors.detail.{reason}"] in body["message"]
    check_language(body, lang)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("en", "This language is not supported. Choose one of: English (en), Chinese (zh)."),
        ("zh", "不支持该语言，可选：英文、中文。"),
    ],
)
async def test_an_unsupported_body_lang_is_422_naming_the_supported(
    app: Any, lang: str, expected: str
) -> None:
    """`"lang": "fr"` is refused (not silently English), in the caller's other language
    (Accept-Language), naming en and zh; nothing is admitted."""
    status, body = await post(app, lang, json={**JOB_MATCH, "lang": "fr"})
    assert (status, body["error"]) == (422, "unsupported_language")
    assert body["supported"] == ["en", "zh"] and body["message"] == expected
    assert [(f["field"], f["code"]) for f in body["fields"]] == [("lang", "not_supported")]
    check_language(body, lang)


@pytest.mark.parametrize(
    ("headers", "cookie", "expected"),
    [
        ({"accept-language": "fr-FR, fr;q=0.9"}, None, "en"),
        ({"accept-language": "fr, zh;q=0.5"}, None, "zh"),
        ({}, "fr", "en"),
        ({"accept-language": "zh"}, "fr", "zh"),
    ],
)
async def test_accept_language_and_cookie_fall_back_silently(
    app: Any, headers: dict[str, str], cookie: str | None, expected: str
) -> None:
    """An unsupported Accept-Language or cookie is no error: the task is admitted in the
    next language that fits."""
    async with client_for(app, **headers) as client:
        if cookie:
            client.cookies.set("lang", cookie)
        resp = await client.post("/api/tasks", json=JOB_MATCH)
        assert resp.status_code == 202, resp.text
        status = await client.get(resp.json()["status_url"])
    assert status.status_code == 200
    assert (await _task_lang(app, resp.json()["task_id"])) == expected


async def _task_lang(app: Any, task_id: str) -> str:
    from lib import keys

    return str(await app.state.redis.execute("HGET", keys.task(task_id), "lang"))


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_other_routes_name_their_fields(app: Any, lang: str) -> None:
    """A wrong method, a long-poll `wait` and a usage `days` that are not numbers: the
    same localized shape, no Starlette or Python text in it."""
    async with client_for(app, **LANG_HEADERS[lang]) as client:
        wrong = await client.put("/api/tasks")
        task = (await client.post("/api/tasks", json=JOB_MATCH)).json()
        wait = await client.get(f"{task['events_url']}?after=0-0&wait=soon")
        days = await client.get("/api/usage?days=many")
        zero = await client.get("/api/usage?days=0")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "invalid_request")
    assert wrong.json()["message"] == message(
        "invalid_request", lang, {"reason": "method_not_allowed"}
    )
    check_language(wrong.json(), lang)
    for resp, field, code in (
        (wait, "wait", "invalid_type"),
        (days, "days", "invalid_type"),
        (zero, "days", "too_small"),
    ):
        assert (resp.status_code, resp.json()["error"]) == (422, "invalid_request"), resp.text
        assert [(f["field"], f["code"]) for f in resp.json()["fields"]] == [(field, code)]
        check_language(resp.json(), lang)


def test_every_field_has_a_label_in_both_languages() -> None:
    """Each variable and body field is named by a label, never by its identifier."""
    names = {"variables", "body", "wait", "days", "unknown"} | set(SubmitRequest.model_fields)
    for model in VARIABLE_MODELS.values():
        names |= set(model.model_fields)
    for lang in ("en", "zh"):
        texts = catalog(lang)
        assert not {n for n in names if f"errors.field_name.{n}" not in texts}, lang


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_field_code_renders_in_both_languages(lang: str) -> None:
    """Every field code has its text, every placeholder filled, Chinese without English."""
    codes = {k.split(".")[-1] for k in catalog("en") if k.startswith("errors.field.")}
    items = [
        {"field": "resume_text", "code": code, "max": 9, "min": 2, "max_bytes": 100}
        | {"expected": "integer", "supported": ["en", "zh"], "one_of": ["job_text", "job_image"]}
        for code in codes
    ]
    for item in localize_fields(items, lang):
        assert not PLACEHOLDER.search(item["message"]) and item["message"], item
        if lang == "zh":
            assert not english_words(item["message"]), item


def test_an_unknown_name_is_not_echoed() -> None:
    """A caller's own unknown field is labelled generically: its (maybe English) name is
    in `field`, never inside the Chinese message."""
    [item] = localize_fields([{"field": "coverLetter", "code": "not_allowed"}], "zh")
    assert item["field"] == "coverLetter" and "cover" not in item["message"].lower()


def test_a_chinese_detail_never_falls_back_to_english() -> None:
    """An error raised with only an English detail (no `reason`): English keeps it, a
    Chinese message gets the dictionary's generic detail."""
    assert message("invalid_request", "en", {"detail": "bad thing"}) == "Invalid request: bad thing"
    zh = message("invalid_request", "zh", {"detail": "bad thing"})
    assert zh == "请求无效：" + catalog("zh")["errors.detail.generic"]
    body = error_body("invalid_request", "zh", {"detail": "wait must be a number"})
    check_language(body, "zh")


def _detail_codes() -> set[str]:
    """Error classes whose message shows a `{detail}`."""
    stack: list[type[SlotlineError]] = [SlotlineError]
    names: set[str] = set()
    en = catalog("en")
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "{detail}" in en.get(f"errors.{cls.code}", ""):
            names.add(cls.__name__)
    return names


def test_user_facing_errors_with_a_detail_carry_a_reason_or_fields() -> None:
    """Every `InvalidRequest(…)` (and each error whose message shows `{detail}`) raised by
    the producer or `lib/` names its localized detail (`reason=`) or its `fields=`: the
    English text is for logs only. (The worker answers QStash, in English.)"""
    classes = _detail_codes()
    assert {"InvalidRequest", "FileUnreadable", "UnsupportedFile"} <= classes
    missing: list[str] = []
    for folder in ("lib", "producer"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                    continue
                if node.func.id not in classes:
                    continue
                given = {k.arg for k in node.keywords}
                if not given & {"reason", "fields"} and not any(
                    k.arg is None for k in node.keywords
                ):
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}")
    assert not missing, missing
