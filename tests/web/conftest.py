"""Browser tests: the local stack once per module, headless Debian Chromium via Playwright.

A module may set `STACK_SETTINGS = {...}` (e.g. a paced offline model) to change the stack
its tests share. Every page fixture fails its test on a console error or an uncaught page
error, except those the test declares with `errors.allow(pattern)`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from lib.app.stack import LocalStack, StackInfo, check_health
from lib.auth import issue_token
from lib.i18n import LANGS, catalog
from lib.settings import secret
from tests.support.stack import local_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialing Google's hosts, which
# this machine's closed network refuses. Playwright gives every launch a fresh profile
# (its own --user-data-dir).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATOR = "alice"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@dataclass
class WebStack:
    """The running local stack and what browser tests need from it."""

    info: StackInfo
    app_secret: str

    @property
    def url(self) -> str:
        return self.info.app_url

    def token(self, user: str, ttl_s: int = 3600) -> str:
        """A bearer token for `user`, signed with the stack's secret."""
        return issue_token(self.app_secret, user, ttl_s)


@pytest.fixture(scope="module")
def web_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebStack]:
    """One local stack per module (fast QStash clock, `alice` an operator)."""
    overrides: dict[str, Any] = {
        "operators": frozenset({OPERATOR}),
        **getattr(request.module, "STACK_SETTINGS", {}),
    }
    local = LocalStack(
        local_settings().model_copy(update=overrides),
        state_dir=tmp_path_factory.mktemp("web-stack"),
        time_scale=0.01,
        persist=False,
        write_stack_file=False,
    )
    info = local.start()
    try:
        check_health(info)
        yield WebStack(info, secret(info.settings.app_secret) or "")
    finally:
        local.stop()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where tests save screenshots: `docs/screenshots/` with `SLOTLINE_SCREENSHOTS=1`
    (`make screenshots`), else the test's own folder (a test run leaves the tree clean)."""
    folder = DOCS_SCREENSHOTS if os.environ.get("SLOTLINE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (never a browser of its own)."""
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class PageErrors:
    """Console errors and uncaught exceptions of a page; any not allowed fails the test."""

    seen: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect console errors matching `pattern` (e.g. the 404 of a page under test)."""
        self.allowed.append(re.compile(pattern))

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.seen.append(f"console: {msg.text} ({msg.location.get('url', '')})")

    def on_page_error(self, exc: Exception) -> None:
        self.seen.append(f"page error: {exc}")

    def unexpected(self) -> list[str]:
        return [e for e in self.seen if not any(p.search(e) for p in self.allowed)]


@dataclass
class BrowserPage:
    """A fresh browser context (no cookies) with one page and its error guard."""

    context: BrowserContext
    page: Page
    errors: PageErrors
    base_url: str


def watch(context: BrowserContext, base_url: str) -> BrowserPage:
    """A page of `context` whose console errors and page errors are recorded."""
    page = context.new_page()
    errors = PageErrors()
    page.on("console", errors.on_console)
    page.on("pageerror", errors.on_page_error)
    return BrowserPage(context, page, errors, base_url)


@pytest.fixture
def web(browser: Browser, web_stack: WebStack) -> Iterator[BrowserPage]:
    """A fresh context on the stack (English browser); fails the test on page errors."""
    context = browser.new_context(base_url=web_stack.url, locale="en-US")
    context.set_default_timeout(15_000)
    bp = watch(context, web_stack.url)
    try:
        yield bp
    finally:
        context.close()
    unexpected = bp.errors.unexpected()
    assert not unexpected, unexpected


def all_keys() -> set[str]:
    """Every dictionary key of every language."""
    return {key for lang in LANGS for key in catalog(lang)}


def assert_no_raw_keys(page: Page) -> None:
    """The page shows text, never a dictionary key or an unfilled `{placeholder}`."""
    shown = page.locator("body").inner_text()
    leaked = sorted(key for key in all_keys() if key in shown)
    assert not leaked, leaked
    assert not re.search(r"\{[a-z_]+\}", shown), shown


def sign_in(bp: BrowserPage, user: str, token: str, lang: str = "en") -> None:
    """Sign in through the form (the token is kept in the session cookie)."""
    bp.page.goto(f"/{lang}/signin")
    bp.page.get_by_test_id("signin-token").fill(token)
    bp.page.get_by_test_id("signin-submit").click()
    bp.page.wait_for_load_state()
