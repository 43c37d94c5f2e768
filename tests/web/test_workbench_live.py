"""The workbench while a service is under way, on a slow offline model with one free slot:
a stream cut mid-way resumes with no duplicated or lost text, a queued service is
cancelled, and limits that concern no input stand under "Create service"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, expect

from lib.i18n import text
from tests.support.asset_files import assert_chinese_only
from tests.web.conftest import BrowserPage, WebStack, watch
from tests.web.cut_proxy import CutProxy
from tests.web.workbench_helpers import (
    create,
    fill,
    inputs,
    open_workbench,
    service,
    step_of,
    task_text,
    wait_finished,
)

pytestmark = pytest.mark.timeout(300)

# One free slot, 1.5 s to the first token, then 80 tokens/s: a job match streams for a few
# seconds in ~50 ms batches, and the summaries queue behind each other.
STACK_SETTINGS: dict[str, Any] = {
    "glm_flash_max_workers": 1,
    "offline_ttft_ms": 1500.0,
    "offline_tokens_per_s": 80.0,
    "rate_trial_limit": 1000,
    "rate_trial_address_limit": 1000,
}


@pytest.fixture
def proxy(web_stack: WebStack) -> Iterator[CutProxy]:
    """A proxy in front of the app that can cut an event stream mid-event."""
    parts = urlsplit(web_stack.url)
    cut = CutProxy((parts.hostname or "127.0.0.1", parts.port or 80))
    try:
        yield cut
    finally:
        cut.stop()


def _page(browser: Browser, base_url: str, lang: str = "en") -> BrowserPage:
    context = browser.new_context(base_url=base_url, locale="zh-CN" if lang == "zh" else "en-US")
    context.set_default_timeout(20_000)
    return watch(context, base_url)


def _close(bp: BrowserPage) -> None:
    bp.context.close()
    assert not bp.errors.unexpected(), bp.errors.unexpected()


def test_a_stream_cut_mid_way_resumes_without_duplicated_or_lost_text(
    browser: Browser, proxy: CutProxy
) -> None:
    """The connection drops in the middle of the match's 10th token event: the browser
    reconnects with Last-Event-ID, and the text the page assembled is exactly the text the
    task streamed, its reading the API's result."""
    bp = _page(browser, proxy.url)
    bp.errors.allow(r"ERR_INCOMPLETE_CHUNKED_ENCODING")  # Chromium's note of the cut itself
    try:
        page = open_workbench(bp, "en")
        fill(page, {k: v for k, v in inputs("en").items() if k != "detailed_resume"})
        cut = proxy.arm(rb'event: token\r?\ndata: \{"step":"job_match"', 10)
        created = create(page, "a")
        assert created["_status"] == 202, created
        wait_finished(page)
        assert cut.done.is_set(), "the stream was not cut"
        events = [r for r in proxy.requests if "/api/service/" in r.path]
        assert len(events) >= 2, events
        resumed = events[1]
        assert resumed.last_event_id, events  # resumed after the last whole event

        body = service(page, created["service_id"])
        match = step_of(body, "job_match")
        streamed = task_text(page, match["task_id"])
        output = page.get_by_test_id("match-output")
        assert output.get_attribute("data-stream-chars") == str(len(streamed))
        expect(page.get_by_test_id("match-score")).to_have_text(
            f"{round(match['result']['match_score'])} / 100"
        )
        expect(output).to_contain_text(match["result"]["overall_assessment"][:60])
    finally:
        _close(bp)


def test_a_queued_service_is_cancelled(browser: Browser, web_stack: WebStack) -> None:
    """With one slot busy, a step waits with its queue position; "Cancel" stops what has
    not started: the service ends in error (cancelled) and the waiting step shows it."""
    bp = _page(browser, web_stack.url)
    try:
        page = open_workbench(bp, "en")
        fill(page, inputs("en"))
        created = create(page, "c")
        assert created["_status"] == 202, created
        waiting = page.locator("[data-step]:has([data-testid=queue-position]:visible)").first
        expect(waiting).to_be_visible()
        step = waiting.get_attribute("data-step")
        expect(waiting.get_by_test_id("queue-position")).to_contain_text(
            re.compile(r"Position \d+ in the queue")
        )
        page.get_by_test_id("cancel").click()
        wait_finished(page, "error")
        body = service(page, created["service_id"])
        assert (body["status"], body["error"]) == ("error", "cancelled"), body
        assert step_of(body, str(step))["status"] == "cancelled", body
        card = page.locator(f"[data-step={step}]")
        expect(card.locator("[data-field=state]")).to_have_attribute("data-state", "cancelled")
        expect(card.get_by_test_id("queue-position")).to_be_hidden()
        expect(page.get_by_test_id("cancel")).to_be_hidden()
        expect(page.locator("[data-testid=error][data-for=service-panel]")).to_have_text(
            text("workbench.service_cancelled", "en")
        )
    finally:
        _close(bp)


def test_a_limit_that_concerns_no_input_stands_under_the_button(
    browser: Browser, web_stack: WebStack
) -> None:
    """A fourth pending service is refused (429): the message stands under "Create
    service", in Chinese on the Chinese page."""
    bp = _page(browser, web_stack.url, "zh")
    bp.errors.allow(r"status of 429")
    try:
        page = open_workbench(bp, "zh")
        texts = inputs("zh")
        fill(page, {"resume": texts["resume"], "jd": texts["jd"]})
        refused: dict[str, Any] | None = None
        made: list[str] = []
        for n in range(5):
            # Another job text each time: the same request would be the same service.
            page.get_by_test_id("jd-input").fill(texts["jd"] + "。" * (n + 1))
            created = create(page, "c")
            if created["_status"] == 429:
                refused = created
                break
            assert created["_status"] == 202, created
            made.append(created["service_id"])
        assert refused is not None and refused["error"] == "too_many_pending_services", refused
        error = page.locator("[data-testid=error][data-for=service]")
        expect(error).to_have_text(refused["message"])
        assert_chinese_only(error.inner_text())
        for service_id in made:  # free the slot for the module's other tests
            page.request.delete(f"/api/service/{service_id}")
    finally:
        _close(bp)


def test_a_waiting_steps_position_moves_up_as_the_steps_ahead_start(
    browser: Browser, web_stack: WebStack
) -> None:
    """Three summaries on one slot: the last one waits at position 2, moves to 1 when the
    first finishes (an id-less position update, after the stream's last id), then runs."""
    bp = _page(browser, web_stack.url)
    try:
        page = open_workbench(bp, "en")
        fill(page, inputs("en"))
        created = create(page, "a")
        assert created["_status"] == 202, created
        cards = page.locator("[data-step]:has([data-testid=queue-position]:visible)")
        expect(cards).to_have_count(2)
        last = cards.nth(1)
        step = last.get_attribute("data-step")
        card = page.locator(f"[data-step={step}]")
        position = card.get_by_test_id("queue-position")
        expect(position).to_have_attribute("data-position", "2")
        expect(position).to_have_attribute("data-position", "1", timeout=60_000)
        expect(card.locator("[data-field=state]")).to_have_attribute(
            "data-state", "running", timeout=60_000
        )
        expect(position).to_be_hidden()
        page.request.delete(f"/api/service/{created['service_id']}")
        wait_finished(page, "error")
    finally:
        _close(bp)
