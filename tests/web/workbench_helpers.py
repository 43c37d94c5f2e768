"""What the workbench browser tests share: example inputs, files, driving the page, and the
service as the API reports it."""

from __future__ import annotations

import json
import re
from typing import Any

from playwright.sync_api import Page, expect

from lib.local import example_files
from tests.support.paths import EXAMPLES
from tests.web.conftest import BrowserPage

DONE_TIMEOUT_MS = 120_000  # a depth-c service on a loaded 2-core machine


def example(name: str) -> str:
    return (EXAMPLES / name).read_text(encoding="utf-8")


def inputs(lang: str) -> dict[str, str]:
    """The résumé, detailed résumé and job description of `lang` from `examples/`."""
    return {
        "resume": example(f"resume.{lang}.txt"),
        "detailed_resume": example_files.detailed_resume(lang),
        "jd": example(f"job.{lang}.txt"),
    }


def resume_pdf(lang: str) -> bytes:
    """The example résumé as a PDF with selectable text (one page per 45 lines)."""
    return example_files.resume_pdf(lang)


def jd_screenshot_png(lang: str) -> bytes:
    """A screenshot of the example job description (`lib/local/example_files.py`)."""
    return example_files.job_screenshot_png(lang)


def fill(page: Page, texts: dict[str, str]) -> None:
    """Paste texts into the inputs (`resume`, `detailed_resume`, `jd`)."""
    ids = {"resume": "resume-input", "detailed_resume": "detailed-input", "jd": "jd-input"}
    for kind, value in texts.items():
        page.get_by_test_id(ids[kind]).fill(value)


def open_workbench(bp: BrowserPage, lang: str, query: str = "") -> Page:
    """The workbench page in `lang`, loaded (its history asked for)."""
    page = bp.page
    with page.expect_response(re.compile(r"/api/assets")):
        page.goto(f"/{lang}/workbench{query}")
    return page


def create(page: Page, depth: str = "c") -> dict[str, Any]:
    """Choose the depth, click "Create service"; the `POST /api/service/create` answer."""
    page.get_by_test_id("depth").select_option(depth)
    with page.expect_response(re.compile(r"/api/service/create")) as created:
        page.get_by_test_id("create-service").click()
    reply = created.value
    body: dict[str, Any] = reply.json()
    body["_status"] = reply.status
    return body


def wait_finished(page: Page, status: str = "done", timeout_ms: int = DONE_TIMEOUT_MS) -> None:
    """Until the page shows the service `status` (`done` or `error`)."""
    expect(page.get_by_test_id("service-status")).to_have_attribute(
        "data-status", status, timeout=timeout_ms
    )


def service(page: Page, service_id: str) -> dict[str, Any]:
    """`GET /api/service/{id}` as the page's own caller (its cookies)."""
    reply = page.request.get(f"/api/service/{service_id}")
    assert reply.ok, (reply.status, reply.text())
    body: dict[str, Any] = reply.json()
    return body


def step_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = [s for s in body["steps"] if s["step"] == name]
    assert found, (name, body)
    step: dict[str, Any] = found[0]
    return step


def task_text(page: Page, task_id: str) -> str:
    """The text a task streamed (its own event stream, after its last restart)."""
    text, after = "", "0-0"
    for _ in range(100):
        reply = page.request.get(f"/api/tasks/{task_id}/events?after={after}&wait=0")
        assert reply.ok, (reply.status, reply.text())
        body = reply.json()
        for event in body["events"]:
            if event["type"] == "restart":
                text = ""
            elif event["type"] == "token":
                text += event["data"]["text"]
        after = body["last_id"] or after
        if body["done"]:
            return text
    raise AssertionError(f"task {task_id} did not finish")


def shown_text(page: Page, testid: str) -> str:
    return page.get_by_test_id(testid).inner_text()


def json_dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
