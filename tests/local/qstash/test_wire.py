"""Pure parsing of QStash wire values (no server)."""

from __future__ import annotations

import email.utils
import math

import pytest

from lib.local.qstash.message import parse_publish
from lib.local.qstash.wire import (
    FlowControl,
    WireError,
    default_backoff_s,
    destination,
    eval_retry_delay_ms,
    parse_duration,
    parse_flow_control,
    retry_after_s,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("1m", 60),
        ("6m5s", 365),
        ("3d5h12m", 3 * 86400 + 5 * 3600 + 720),
        ("20ms", 0.02),
        ("30", 30),
        (7, 7),
        ("1.5s", 1.5),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    """Durations in QStash's and Go's notation become seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "10x", "5s junk"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything else is a WireError."""
    with pytest.raises(WireError):
        parse_duration(text)


@pytest.mark.parametrize(
    "value", ["parallelism=5, rate=10, period=1m", "parallelism=5,rate=10,period=1m"]
)
def test_flow_control_with_and_without_spaces(value: str) -> None:
    """Both spellings of the flow-control value parse the same."""
    assert parse_flow_control("k", value) == FlowControl("k", 5, 10, 60.0)


def test_flow_control_defaults_and_errors() -> None:
    """Period defaults to 1 s; unknown settings are rejected."""
    assert parse_flow_control("k", "parallelism=2") == FlowControl("k", 2, 0, 1.0)
    with pytest.raises(WireError):
        parse_flow_control("k", "speed=3")
    with pytest.raises(WireError):
        parse_flow_control("k", "parallelism=x")


def test_default_backoff() -> None:
    """min(1 day, e^(2.5 n)): 12 s, 2 m 28 s, 30 m, 6 h, 24 h."""
    assert [round(default_backoff_s(n)) for n in range(1, 6)] == [12, 148, 1808, 22026, 86400]


@pytest.mark.parametrize(
    ("expression", "retried", "ms"),
    [
        ("1000", 3, 1000),
        ("1000 * (1 + retried)", 2, 3000),
        ("pow(2, retried)", 3, 8),
        ("max(10, pow(2, retried))", 1, 10),
        ("exp(retried)", 1, math.e),
    ],
)
def test_retry_delay_expression(expression: str, retried: int, ms: float) -> None:
    """Upstash-Retry-Delay expressions evaluate over `retried`."""
    assert eval_retry_delay_ms(expression, retried) == pytest.approx(ms)


@pytest.mark.parametrize("expression", ["__import__('os')", "retried.real", "lambda: 1", "1 +"])
def test_retry_delay_expression_is_sandboxed(expression: str) -> None:
    """Anything beyond arithmetic and the documented functions is refused."""
    with pytest.raises(WireError):
        eval_retry_delay_ms(expression, 0)


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "delay"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"Retry-After": "6m5s"}, 365.0),
        ({"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}, 90.0),
        ({"X-RateLimit-Reset": str(int(NOW + 20))}, 20.0),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"Retry-After": "100000"}, None),  # over a day: the default applies
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], delay: float | None) -> None:
    """Retry-After in seconds, Go duration or HTTP date, and X-RateLimit-Reset*."""
    got = retry_after_s(headers, NOW)
    assert got == (pytest.approx(delay) if delay is not None else None)


@pytest.mark.parametrize(
    ("path", "query", "url"),
    [
        ("http://127.0.0.1:8000/api/worker", "", "http://127.0.0.1:8000/api/worker"),
        ("https://h.example/a//b", "x=1&y=2", "https://h.example/a//b?x=1&y=2"),
        ("https%3A%2F%2Fh.example%2Fa", "", "https://h.example/a"),
    ],
)
def test_destination_rebuild(path: str, query: str, url: str) -> None:
    """The destination keeps '//' in its path and gets QStash's query string back."""
    assert destination(path, query) == url


def test_destination_rejects_non_http() -> None:
    """Only http(s) destinations are accepted."""
    with pytest.raises(WireError):
        destination("ftp://x/y", "")


def test_parse_publish_headers() -> None:
    """Publish headers map onto the message: forwards, retries, timeout, callbacks, flow control."""
    headers = {
        "content-type": "application/json",
        "upstash-method": "put",
        "upstash-forward-x-task": "t1",
        "upstash-retries": "5",
        "upstash-timeout": "30s",
        "upstash-delay": "10s",
        "upstash-callback": "http://h/cb",
        "upstash-failure-callback": "http://h/failed",
        "upstash-failure-callback-forward-x-why": "f",
        "upstash-callback-x-cb": "c",
        "upstash-flow-control-key": "deepseek-chat.paid",
        "upstash-flow-control-value": "parallelism=5",
    }
    req = parse_publish("http://h/x", headers, b"{}", now_ms=1000, time_scale=0.5)
    msg = req.message
    assert (msg.method, msg.max_retries, msg.timeout_s) == ("PUT", 5, 30.0)
    assert msg.headers == {"x-task": "t1"}
    assert msg.failure_callback_headers == {"x-why": "f"}
    assert msg.callback_headers == {"x-cb": "c"}
    assert (msg.fc_key, msg.fc_parallelism) == ("deepseek-chat.paid", 5)
    assert req.due_ms == 1000 + 5000  # 10 s delay x 0.5
    assert req.dedup_id is None
    with_nb = parse_publish(
        "http://h/x", {**headers, "upstash-not-before": "7"}, b"", now_ms=1000, time_scale=1
    )
    assert with_nb.due_ms == 7000


@pytest.mark.parametrize(
    "headers",
    [
        {"upstash-retries": "-1"},
        {"upstash-method": "FETCH"},
        {"upstash-retry-delay": "os()"},
        {"upstash-timeout": "soon"},
    ],
)
def test_parse_publish_rejects(headers: dict[str, str]) -> None:
    """Invalid publish headers are WireErrors (answered 400)."""
    with pytest.raises(WireError):
        parse_publish("http://h/x", headers, b"", now_ms=0, time_scale=1)
