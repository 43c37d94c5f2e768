"""Upload routes through the producer app on real Postgres and Valkey: text, PDF, DOCX and
screenshot uploads, every error code (localized, nothing stored), and the cold import."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lib.local.example_files import text_pdf
from lib.redis.tcp import TcpRedis
from tests.support.asset_files import (
    assert_chinese_only,
    docx_file,
    encrypted_pdf,
    image_bytes,
    image_pdf,
    xlsx_like,
)
from tests.support.assets import app_on, migrated_database, new_user, rows_of
from tests.support.paths import EXAMPLES
from tests.support.producer import JOB_MATCH, client_for

RESUME_EN = (EXAMPLES / "resume.en.txt").read_text(encoding="utf-8")
RESUME_ZH = (EXAMPLES / "resume.zh.txt").read_text(encoding="utf-8")
DETAILED_EN = (EXAMPLES / "detailed_resume.en.txt").read_text(encoding="utf-8")
JOB_EN = (EXAMPLES / "job.en.txt").read_text(encoding="utf-8")
JOB_ZH = (EXAMPLES / "job.zh.txt").read_text(encoding="utf-8")

ROUTES = {
    "resume": ("/api/upload/resume", "resume_id", "/api/resumes/"),
    "detailed_resume": (
        "/api/upload/detailed-resume",
        "detailed_resume_id",
        "/api/detailed-resumes/",
    ),
    "jd": ("/api/upload/jd", "job_id", "/api/jobs/"),
}
TEXTS = {"resume": RESUME_EN, "detailed_resume": DETAILED_EN, "jd": JOB_EN}


@pytest.fixture(scope="module")
def db_url(postgres_url: str) -> Iterator[str]:
    """One migrated database for this module (each test has its own users)."""
    yield migrated_database(postgres_url, "uploads")


def _file(name: str, data: bytes, mime: str = "application/octet-stream") -> dict[str, Any]:
    return {"file": (name, data, mime)}


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _pdf(text: str) -> bytes:
    """A PDF of the text, two pages, one line per line of text."""
    lines = text.splitlines()
    half = len(lines) // 2
    return text_pdf(["\n".join(lines[:half]), "\n".join(lines[half:])])


def _docx(text: str) -> bytes:
    return docx_file([line for line in text.splitlines() if line.strip()])


@pytest.mark.parametrize("kind", ["resume", "detailed_resume", "jd"])
async def test_each_route_takes_text_pdf_and_docx(
    kind: str, tmp_path: Path, tcp_redis: TcpRedis, db_url: str
) -> None:
    """JSON text, a PDF and a DOCX each answer 201 with the id, lang and chars, and read back."""
    path, id_field, read = ROUTES[kind]
    user = new_user()
    text = TEXTS[kind]
    async with app_on(tmp_path, tcp_redis, db_url) as app, client_for(app, user=user) as c:
        answers = [
            await c.post(path, json={"text": text, "lang": "en"}),
            # Typed by content: the name and the declared type say text.
            await c.post(path, files=_file("cv.txt", _pdf(text), "text/plain")),
            await c.post(path, files=_file("cv.pdf", _docx(text)), data={"lang": "en"}),
        ]
        for answer, source in zip(answers, ["text", "pdf", "docx"], strict=True):
            assert answer.status_code == 201, answer.text
            body = answer.json()
            assert body["lang"] == "en" and body["source"] == source and body["kind"] == kind
            assert body["chars"] > 0.8 * len(text.strip())
            assert answer.headers["location"] == read + body[id_field]
            got = await c.get(read + body[id_field])
            assert got.status_code == 200
            stored = got.json()
            assert stored[id_field] == body[id_field] and stored["lang"] == "en"
            assert len(stored["text"]) == body["chars"] and stored["summary"] is None
            assert "Python" in stored["text"] and stored["created_at"]
    assert rows_of(db_url, user)["users"] == 1


async def test_a_chinese_resume_is_detected_or_confirmed(
    tmp_path: Path, tcp_redis: TcpRedis, db_url: str
) -> None:
    """Chinese text undeclared is detected zh; declared zh is kept (PDF with CJK text too)."""
    async with app_on(tmp_path, tcp_redis, db_url) as app, client_for(app, user=new_user()) as c:
        detected = await c.post("/api/upload/resume", json={"text": RESUME_ZH})
        declared = await c.post(
            "/api/upload/resume", files=_file("简历.pdf", _pdf(RESUME_ZH)), data={"lang": "zh-CN"}
        )
        job = await c.post("/api/upload/jd", json={"text": JOB_ZH, "lang": "zh"})
    for answer in (detected, declared, job):
        assert answer.status_code == 201, answer.text
        assert answer.json()["lang"] == "zh"


@pytest.mark.parametrize(
    "fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
async def test_a_job_screenshot_is_stored_for_the_vision_route(
    fmt: str, mime: str, tmp_path: Path, tcp_redis: TcpRedis, db_url: str
) -> None:
    """A JD image (file or data URL) is kept as it is, with its type, and served to its owner."""
    image = image_bytes(fmt)
    async with app_on(tmp_path, tcp_redis, db_url) as app, client_for(app, user=new_user()) as c:
        as_file = await c.post("/api/upload/jd", files=_file("shot", image), data={"lang": "zh"})
        as_url = await c.post("/api/upload/jd?lang=zh", json={"image": _data_url(image, mime)})
        for answer in (as_file, as_url):
            assert answer.status_code == 201, answer.text
            body = answer.json()
            assert body["source"] == "image" and body["chars"] == 0 and body["lang"] == "zh"
            job = (await c.get(f"/api/jobs/{body['job_id']}")).json()
            assert job["text"] is None and job["has_image"]
            shot = await c.get(job["image_url"])
            assert shot.status_code == 200 and shot.content == image
            assert shot.headers["content-type"] == mime


def _chinese_only(message: str) -> None:
    """No English in a Chinese message but format names (the shared codes name GIF, JSON
    and "data URL" too)."""
    for name in ("GIF", "JSON", "data URL"):
        message = message.replace(name, "")
    assert_chinese_only(message)


def _error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["error"] == code, body
    return body


async def test_every_upload_error_has_its_code_in_both_languages_and_stores_nothing(
    tmp_path: Path, tcp_redis: TcpRedis, db_url: str
) -> None:
    """415, 413, 422 as the issue lists them, localized in en and zh; no row is written."""
    user = new_user()
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/api/upload/resume", {"files": _file("a.xlsx", xlsx_like())}, 415, "unsupported_file"),
        (
            "/api/upload/resume",
            {"files": _file("a.png", image_bytes("PNG"))},
            415,
            "unsupported_file",
        ),
        (
            "/api/upload/resume",
            {"json": {"image": _data_url(image_bytes("PNG"), "image/png")}},
            415,
            "unsupported_file",
        ),
        (
            "/api/upload/jd",
            {"files": _file("a.gif", b"GIF89a" + b"\0" * 64)},
            415,
            "unsupported_file",
        ),
        ("/api/upload/resume", {"files": _file("big.txt", b"a" * 200_001)}, 413, "file_too_large"),
        (
            "/api/upload/detailed-resume",
            {"files": _file("enc.pdf", encrypted_pdf(_pdf(RESUME_EN), user_password="pw"))},
            422,
            "file_unreadable",
        ),
        (
            "/api/upload/jd",
            {"files": _file("cut.png", image_bytes("PNG")[:-20])},
            422,
            "file_unreadable",
        ),
        ("/api/upload/jd", {"files": _file("scan.pdf", image_pdf())}, 422, "no_text_in_file"),
        ("/api/upload/jd", {"json": {"text": "Too short."}}, 422, "text_too_short"),
        (
            "/api/upload/resume",
            {"json": {"text": RESUME_ZH, "lang": "en"}},
            422,
            "language_mismatch",
        ),
        ("/api/upload/jd", {"json": {"image": "data:image/bmp;base64,AAAA"}}, 415, "bad_image"),
        (
            "/api/upload/jd",
            {"json": {"image": _data_url(b"\x89PNG\r\n\x1a\n" + b"\0" * 120_000, "image/png")}},
            413,
            "image_too_large",
        ),
        ("/api/upload/resume", {"json": {"text": RESUME_EN, "lang": "fr"}}, 422, "invalid_request"),
        ("/api/upload/jd", {"json": {"text": JOB_EN, "image": "data:"}}, 422, "invalid_request"),
        ("/api/upload/jd", {"json": {"texte": JOB_EN}}, 422, "invalid_request"),
        ("/api/upload/jd", {"content": b"%PDF-1.4 not json"}, 422, "invalid_request"),
        ("/api/upload/jd", {"files": {"other": ("x", b"y")}}, 422, "invalid_request"),
    ]
    async with (
        app_on(
            tmp_path,
            tcp_redis,
            db_url,
            upload_max_bytes=200_000,
            upload_max_image_bytes=100_000,
        ) as app,
        client_for(app, user=user) as c,
    ):
        for path, kwargs, status, code in cases:
            english = _error(await c.post(path + "?lang=en", **kwargs), status, code)
            assert english["message"] and "{" not in english["message"]
            chinese = _error(await c.post(path + "?lang=zh", **kwargs), status, code)
            _chinese_only(chinese["message"])
        c.cookies.delete("lang")  # `?lang=` is remembered in a cookie: back to English
        scan = _error(
            await c.post("/api/upload/jd", files=_file("scan.pdf", image_pdf())),
            422,
            "no_text_in_file",
        )
        assert "screenshot" in scan["message"]
        mismatch = _error(
            await c.post("/api/upload/resume", json={"text": RESUME_ZH, "lang": "en"}),
            422,
            "language_mismatch",
        )
        assert mismatch["detected"] == "zh" and "Chinese" in mismatch["message"]
        too_large = _error(
            await c.post("/api/upload/resume", files=_file("big.txt", b"a" * 200_001)),
            413,
            "file_too_large",
        )
        assert too_large["max_bytes"] == 200_000
        short = _error(
            await c.post("/api/upload/jd", json={"text": "Too short."}), 422, "text_too_short"
        )
        assert short["min_chars"] == 80
        # Over the upload body limit (file limit + 64 KiB): refused before it is read.
        huge = await c.post("/api/upload/jd", files=_file("huge.txt", b"a" * 300_000))
        assert _error(huge, 413, "payload_too_large")["max_bytes"] == 200_000 + 64 * 1024
    assert set(rows_of(db_url, user).values()) == {0}


async def test_every_asset_route_is_owner_only(
    tmp_path: Path, tcp_redis: TcpRedis, db_url: str
) -> None:
    """Another signed-in user and a trial visitor get 404 on every read and delete; the list
    shows each caller only their own."""
    owner = new_user("own")
    async with app_on(tmp_path, tcp_redis, db_url) as app:
        async with client_for(app, user=owner) as c:
            ids = {
                "resume": (await c.post("/api/upload/resume", json={"text": RESUME_EN})).json()[
                    "resume_id"
                ],
                "detailed_resume": (
                    await c.post("/api/upload/detailed-resume", json={"text": DETAILED_EN})
                ).json()["detailed_resume_id"],
                "jd": (
                    await c.post(
                        "/api/upload/jd",
                        files=_file("s.png", image_bytes("PNG")),
                        data={"lang": "en"},
                    )
                ).json()["job_id"],
            }
        urls = [ROUTES[kind][2] + asset_id for kind, asset_id in ids.items()]
        async with client_for(app, user=new_user("other")) as other, client_for(app) as trial:
            for stranger in (other, trial):
                for url in [*urls, urls[2] + "/image"]:
                    got = await stranger.get(url)
                    assert _error(got, 404, "not_found")["message"] == "Not found."
                for url in urls:
                    _error(await stranger.delete(url), 404, "not_found")
                listed = await stranger.get("/api/assets")
                assert listed.status_code == 200 and listed.json() == {"assets": []}
            # Malformed and unknown ids are the same 404.
            _error(await other.get("/api/resumes/nope"), 404, "not_found")
            _error(await other.get("/api/resumes/" + "0" * 32), 404, "not_found")
        async with client_for(app, user=owner) as c:
            listed = (await c.get("/api/assets")).json()["assets"]
            assert [a["id"] for a in listed] == [ids["jd"], ids["detailed_resume"], ids["resume"]]
            assert all("text" not in a for a in listed)
            assert listed[2]["preview"] and len(listed[2]["preview"]) <= 120
            assert (await c.get("/api/assets?limit=1")).json()["assets"][0]["id"] == ids["jd"]
            _error(await c.get("/api/assets?limit=0"), 422, "invalid_request")
            for url in urls:
                assert (await c.delete(url)).json()["deleted"] is True
                _error(await c.get(url), 404, "not_found")
                _error(await c.delete(url), 404, "not_found")
            assert (await c.get("/api/assets")).json() == {"assets": []}


async def test_a_trial_visitor_owns_assets_as_a_trial_user(
    tmp_path: Path, tcp_redis: TcpRedis, db_url: str
) -> None:
    """A trial upload creates a `users` row marked trial; the cookie reads it back."""
    async with app_on(tmp_path, tcp_redis, db_url) as app, client_for(app) as trial:
        made = await trial.post("/api/upload/resume", json={"text": RESUME_EN})
        assert made.status_code == 201
        trial_id = next(v for k, v in trial.cookies.items() if k == "slotline_trial").split(".")[0]
        got = await trial.get(made.headers["location"])
        assert got.status_code == 200
    counts = rows_of(db_url, trial_id)
    assert counts["users"] == 1 and counts["resumes"] == 1
    import psycopg

    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT kind FROM users WHERE id = %s", (trial_id,)).fetchone()
    assert row == ("trial",)


async def test_tasks_never_touch_postgres_and_assets_need_it(
    tmp_path: Path, tcp_redis: TcpRedis
) -> None:
    """With an unreachable database, tasks still submit and read; asset routes answer 503."""
    unreachable = "postgresql://nobody@127.0.0.1:9/none"
    async with app_on(tmp_path, tcp_redis, unreachable, database_timeout_s=1.0) as app:
        async with client_for(app, user=new_user()) as c:
            submitted = await c.post("/api/tasks", json=JOB_MATCH)
            assert submitted.status_code == 202
            assert (await c.get(submitted.json()["status_url"])).status_code == 200
            _error(await c.get("/api/assets"), 503, "service_unavailable")
            _error(
                await c.post("/api/upload/resume", json={"text": RESUME_EN}),
                503,
                "service_unavailable",
            )


def test_the_producer_imports_no_database_driver() -> None:
    """`import producer.app` in a fresh interpreter loads no psycopg, psycopg_pool or LLM
    layer, and none of the asset layer (imported by the first asset request)."""
    code = "import sys, json, producer.app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    tops = {m.split(".")[0] for m in loaded}
    assert not tops & {"psycopg", "psycopg_pool", "psycopg_binary", "langchain_openai", "openai"}
    assert not tops & {"pypdf", "docx", "lxml", "PIL"}
    lazy = {"producer.uploads", "producer.assets", "producer.me", "lib.assets.store"}
    assert not loaded & (lazy | {"lib.assets.files", "lib.services.store", "lib.users.store"})
