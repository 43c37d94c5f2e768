"""The queue dashboard in a real browser: live rows as an operator, 404 for anyone else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import expect

from lib.i18n import text
from lib.routing import QUEUES, all_pools
from lib.settings import secret
from tests.web.conftest import (
    OPERATOR,
    BrowserPage,
    WebStack,
    assert_no_raw_keys,
    sign_in,
)

pytestmark = pytest.mark.timeout(150)

# Each job_match takes ~3 s to its first token and ~7 s more to finish on the paced offline
# model: the free pool's 2 slots stay busy long enough for the page to show it.
STACK_SETTINGS: dict[str, Any] = {
    "offline_ttft_ms": 3000.0,
    "offline_tokens_per_s": 60.0,
    "dashboard_failures_poll_ms": 1000,
}
SECRET_TEXT = "CONFIDENTIAL-RESUME-TEXT"
DEAD_TASK = "t-dead-letter-1"


def make_dead_letter(stack: WebStack) -> str:
    """A message that QStash dead-letters at once (404, no retries); its DLQ id."""
    token = secret(stack.info.settings.qstash_token)
    headers = {"Authorization": f"Bearer {token}", "Upstash-Retries": "0"}
    body = {"task_id": DEAD_TASK, "queue_id": "q_glm_flash", "variables": {"r": SECRET_TEXT}}
    qstash = stack.info.qstash_url
    with httpx.Client(timeout=10) as client:
        reply = client.post(
            f"{qstash}/v2/publish/{stack.url}/api/ops/gone", json=body, headers=headers
        )
        reply.raise_for_status()
        message_id = reply.json()["messageId"]
        for _ in range(200):
            found = client.get(
                f"{qstash}/v2/dlq", params={"messageId": message_id}, headers=headers
            )
            messages = found.json()["messages"]
            if messages:
                return str(messages[0]["dlqId"])
            client.get(f"{stack.url}/healthz")  # a short pause that also needs the app up
    raise AssertionError("the message was not dead-lettered")


def log_failed_attempt(stack: WebStack) -> None:
    """One failed LLM attempt in the usage log, its error text carrying content."""
    with psycopg.connect(stack.info.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO llm_usage_logs (source_id, user_id, service_id, task_template_id,"
            " provider, model_id, is_success, error_message)"
            " VALUES ('web-test:0', 'u9', 's', 'job_summary',"
            " 'offline', 'glm-4.5-flash', false, %s)",
            (f"APIStatusError: HTTP 503 {SECRET_TEXT}",),
        )


def submit_job_matches(stack: WebStack, users: list[str]) -> list[str]:
    """One job_match per user (free tier: `q_glm_flash`); their task ids."""
    ids = []
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        for user in users:
            body = {
                "template": "job_match",
                "variables": {"resume_text": f"Python developer {user}", "job_text": "Python role"},
            }
            reply = client.post(
                "/api/tasks", json=body, headers={"Authorization": f"Bearer {stack.token(user)}"}
            )
            assert reply.status_code == 202, reply.text
            assert reply.json()["queue_id"] == "q_glm_flash"
            ids.append(reply.json()["task_id"])
    return ids


def test_operator_dashboard_updates_live_in_both_languages(
    web: BrowserPage, web_stack: WebStack, screenshots: Path
) -> None:
    """An operator sees every queue and pool, in-flight counts change while tasks run, a dead
    letter with its reason is retried from the page, a failed attempt shows its kind only,
    and the switch to zh keeps it live."""
    page = web.page
    dlq_id = make_dead_letter(web_stack)
    log_failed_attempt(web_stack)
    sign_in(web, OPERATOR, web_stack.token(OPERATOR))
    assert page.url.endswith("/en/queues")
    expect(page.get_by_test_id("queue-row")).to_have_count(len(QUEUES))
    expect(page.get_by_test_id("pool-row")).to_have_count(len(all_pools()))

    dead = page.get_by_test_id("dlq-row").filter(has_text=DEAD_TASK)
    expect(dead).to_be_visible()
    expect(dead).to_contain_text("404 · not_found")
    failure = page.get_by_test_id("failure-row").filter(has_text="job_summary")
    expect(failure).to_contain_text("APIStatusError")

    flash = page.locator('[data-testid=queue-row][data-queue-id="q_glm_flash"]')
    in_flight = flash.locator("[data-field=in_flight]")
    waiting = flash.locator("[data-field=waiting]")
    pool = page.locator(
        '[data-testid=pool-row][data-model-id="glm-4.5-flash"][data-tier="free"]'
    ).locator("[data-field=active]")
    expect(in_flight).to_have_text("0")
    expect(pool).to_have_text("0 / 2")

    tasks = submit_job_matches(web_stack, ["u1", "u2", "u3", "u4"])
    assert len(tasks) == 4
    expect(in_flight).to_have_text("2", timeout=20_000)
    expect(waiting).to_have_text("2")
    expect(pool).to_have_text("2 / 2")
    expect(page.locator("#chart polyline.in-flight")).to_have_count(1)
    assert_no_raw_keys(page)
    assert SECRET_TEXT not in page.content()
    page.screenshot(path=str(screenshots / "queues.en.png"), full_page=True)

    page.get_by_test_id("lang-switch").click()
    page.wait_for_url(re.compile(r"/zh/queues$"))
    assert page.locator("html").get_attribute("lang") == "zh"
    cookies = {c["name"]: c["value"] for c in web.context.cookies()}
    assert cookies["lang"] == "zh"
    expect(page.locator("h1")).to_have_text(text("queues.title", "zh"))
    expect(flash.locator("[data-field=pending]")).not_to_have_text("0", timeout=10_000)
    expect(page.get_by_test_id("dlq-row").filter(has_text=DEAD_TASK)).to_be_visible()
    expect(page.get_by_test_id("updated")).to_contain_text("更新于")
    assert_no_raw_keys(page)
    page.screenshot(path=str(screenshots / "queues.zh.png"), full_page=True)
    assert (screenshots / "queues.en.png").stat().st_size > 10_000

    row = page.get_by_test_id("dlq-row").filter(has_text=DEAD_TASK).first
    row.get_by_test_id("dlq-retry").click()
    expect(row).to_contain_text(text("queues.retried", "zh", {"id": ""}).split("，")[0])
    token = secret(web_stack.info.settings.qstash_token)
    gone = httpx.get(
        f"{web_stack.info.qstash_url}/v2/dlq/{dlq_id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert gone.status_code == 404

    expect(in_flight).to_have_text("0", timeout=45_000)
    expect(flash.locator("[data-field=pending]")).to_have_text("0")
    expect(flash.locator("[data-field=wait_max]")).not_to_have_text(text("common.none", "zh"))


def _not_found_body(html: str) -> str:
    return re.sub(r'nonce="[^"]+"', "", html)


@pytest.mark.parametrize("who", ["trial", "user"])
def test_dashboard_is_404_for_everyone_but_operators(
    web: BrowserPage, web_stack: WebStack, who: str
) -> None:
    """A trial visitor and a signed-in non-operator get the not-found page on the dashboard
    (the same page as an unknown path) and 404 on each of its data routes."""
    web.errors.allow(r"status of 404")
    page = web.page
    if who == "user":
        sign_in(web, "bob", web_stack.token("bob"))
        expect(page.get_by_test_id("signed-in")).to_contain_text("bob")
    response = page.goto("/en/queues")
    assert response is not None and response.status == 404
    expect(page.get_by_test_id("not-found")).to_have_text(text("common.not_found_body", "en"))
    assert page.get_by_test_id("queue-row").count() == 0
    assert page.get_by_test_id("nav-queues").count() == 0
    dashboard = page.context.request.get(f"{web.base_url}/en/queues")
    unknown = page.context.request.get(f"{web.base_url}/en/no-such-page")
    assert dashboard.status == unknown.status == 404
    assert _not_found_body(dashboard.text()) == _not_found_body(unknown.text())
    for method, path in (
        ("GET", "/api/ops/queues"),
        ("GET", "/api/ops/failures"),
        ("POST", "/api/ops/dlq/1-1/retry"),
    ):
        reply = page.evaluate(
            "async ([m, p]) => { const r = await fetch(p, {method: m}); "
            "return [r.status, await r.text()]; }",
            [method, path],
        )
        assert reply[0] == 404, (method, path, reply)
        assert json.loads(reply[1])["error"] == "not_found"
