"""Locale routing in a real browser: redirects, `<html lang>`, the language switch, sign-in."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from lib.i18n import message, text
from tests.web.conftest import BrowserPage, WebStack, assert_no_raw_keys, watch

pytestmark = pytest.mark.timeout(90)


def test_language_switch_sets_cookie_and_moves_to_the_other_locale(web: BrowserPage) -> None:
    """en → zh: the `lang` cookie is set, `<html lang="zh">`, the text changes, no raw keys;
    `/` then goes to zh, and the switch back returns to en."""
    page = web.page
    page.goto("/en/")
    assert page.locator("html").get_attribute("lang") == "en"
    expect(page.locator("h1")).to_have_text(text("home.title", "en"))
    assert_no_raw_keys(page)

    page.get_by_test_id("lang-switch").click()
    page.wait_for_url(re.compile(r"/zh/$"))
    assert page.locator("html").get_attribute("lang") == "zh"
    expect(page.locator("h1")).to_have_text(text("home.title", "zh"))
    expect(page.get_by_test_id("lang-switch")).to_have_text(text("common.lang_switch", "zh"))
    cookies = {c["name"]: c for c in web.context.cookies()}
    assert cookies["lang"]["value"] == "zh"
    assert cookies["lang"]["sameSite"] == "Lax"
    assert_no_raw_keys(page)

    page.goto("/")
    page.wait_for_url(re.compile(r"/zh/$"))
    page.get_by_test_id("lang-switch").click()
    page.wait_for_url(re.compile(r"/en/$"))
    assert {c["name"]: c["value"] for c in web.context.cookies()}["lang"] == "en"


@pytest.mark.parametrize(
    ("accept_language", "cookie", "path", "expected"),
    [
        ("zh-CN", None, "/", "/zh/"),
        ("en-US", None, "/queues", "/en/queues"),
        ("fr-FR", None, "/signin", "/en/signin"),
        ("en-US", "zh", "/", "/zh/"),
        ("zh-CN", "en", "/signin?next=/en/", "/en/signin?next=/en/"),
    ],
)
def test_paths_without_locale_redirect_by_cookie_then_accept_language(
    browser: Browser,
    web_stack: WebStack,
    accept_language: str,
    cookie: str | None,
    path: str,
    expected: str,
) -> None:
    """`/`, `/queues`, `/signin` go to the `lang` cookie's locale, else Accept-Language's,
    else en (307, query kept)."""
    context = browser.new_context(
        base_url=web_stack.url, extra_http_headers={"Accept-Language": accept_language}
    )
    try:
        if cookie is not None:
            context.add_cookies([{"name": "lang", "value": cookie, "url": web_stack.url}])
        reply = context.request.get(web_stack.url + path, max_redirects=0)
        assert reply.status == 307
        assert reply.headers["location"] == expected
        bp = watch(context, web_stack.url)
        bp.errors.allow(r"status of 404")  # `/queues` ends on the not-found page
        bp.page.goto(path)
        assert bp.page.url == web_stack.url + expected
        lang = expected.split("/")[1]
        assert bp.page.locator("html").get_attribute("lang") == lang
        assert_no_raw_keys(bp.page)
        assert not bp.errors.unexpected(), bp.errors.unexpected()
    finally:
        context.close()


def test_wrong_token_is_shown_next_to_the_input_in_the_page_language(
    web: BrowserPage, web_stack: WebStack
) -> None:
    """A wrong token on the zh sign-in form: the zh message next to the field, no session."""
    web.errors.allow(r"status of 401")
    page = web.page
    page.goto("/zh/signin")
    page.get_by_test_id("signin-token").fill("not-a-token")
    page.get_by_test_id("signin-submit").click()
    error = page.get_by_test_id("error")
    expect(error).to_have_text(message("unauthorized", "zh"))
    assert page.get_by_test_id("signin-token").get_attribute("aria-invalid") == "true"
    assert "slotline_session" not in {c["name"] for c in web.context.cookies()}
    assert_no_raw_keys(page)


def test_session_cookie_is_httponly_lax_and_sign_out_drops_it(
    web: BrowserPage, web_stack: WebStack
) -> None:
    """Signing in keeps the token in an HttpOnly, SameSite=Lax cookie that page scripts
    cannot read; signing out removes it."""
    page = web.page
    page.goto("/en/signin")
    page.get_by_test_id("signin-token").fill(web_stack.token("carol"))
    page.get_by_test_id("signin-submit").click()
    page.wait_for_url(re.compile(r"/en/$"))
    expect(page.get_by_test_id("signed-in")).to_contain_text("carol")
    session = {c["name"]: c for c in web.context.cookies()}["slotline_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert "slotline_session" not in page.evaluate("document.cookie")
    page.get_by_test_id("signout").click()
    page.wait_for_url(re.compile(r"/en/signin$"))
    assert "slotline_session" not in {c["name"] for c in web.context.cookies()}
    expect(page.get_by_test_id("signin-link")).to_be_visible()
