"""Pure parsing of QStash wire values: durations, flow control, retry delays, destinations."""

from __future__ import annotations

import ast
import email.utils
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

DAY_S = 86_400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3_600.0, "d": DAY_S}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class WireError(ValueError):
    """A publish request carries a value the server cannot accept (answered with 400)."""


def parse_duration(value: str | int | float) -> float:
    """`10s`, `1m`, `6m5s`, `3d5h12m`, `20ms` or a bare number of seconds → seconds.

    Raises:
        WireError: the value is not a duration.
    """
    if isinstance(value, int | float):
        return float(value)
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not text or _DURATION.sub("", text):
        raise WireError(f"invalid duration: {value!r}")
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))


@dataclass(frozen=True)
class FlowControl:
    """One message's flow-control settings (0 = no limit of that kind)."""

    key: str
    parallelism: int = 0
    rate: int = 0
    period_s: float = 1.0


def parse_flow_control(key: str, value: str | None) -> FlowControl:
    """`parallelism=5, rate=10, period=1m` (spaces optional) for one key.

    Raises:
        WireError: an unknown or malformed setting.
    """
    parallelism, rate, period = 0, 0, 1.0
    for part in (value or "").split(","):
        if not part.strip():
            continue
        name, sep, raw = part.partition("=")
        name, raw = name.strip().lower(), raw.strip()
        if not sep or not raw:
            raise WireError(f"invalid flow control value: {part.strip()!r}")
        try:
            if name == "parallelism":
                parallelism = int(raw)
            elif name == "rate":
                rate = int(raw)
            elif name == "period":
                period = parse_duration(raw)
            else:
                raise WireError(f"unknown flow control setting: {name!r}")
        except ValueError as exc:
            raise WireError(f"invalid flow control value: {part.strip()!r}") from exc
    if parallelism < 0 or rate < 0 or period <= 0:
        raise WireError("flow control values must be positive")
    return FlowControl(key, parallelism, rate, period)


def default_backoff_s(retried: int) -> float:
    """QStash's default delay before retry number `retried` (1-based): min(1 day, e^(2.5·n))."""
    return min(DAY_S, math.exp(2.5 * retried))


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "pow": math.pow,
    "sqrt": math.sqrt,
    "abs": abs,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
    "round": round,
    "min": min,
    "max": max,
}


def eval_retry_delay_ms(expression: str, retried: int) -> float:
    """Evaluate an `Upstash-Retry-Delay` expression (milliseconds) over `retried` (0-based).

    Only numbers, `retried`, + - * / % and the documented functions are allowed.

    Raises:
        WireError: the expression uses anything else.
    """

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id == "retried":
            return float(retried)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return float(_BINOPS[type(node.op)](walk(node.left), walk(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = walk(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCS
            and not node.keywords
        ):
            return float(_FUNCS[node.func.id](*(walk(arg) for arg in node.args)))
        raise WireError(f"unsupported retry delay expression: {expression!r}")

    try:
        tree = ast.parse(expression.strip(), mode="eval")
        return max(0.0, walk(tree))
    except (SyntaxError, TypeError, ValueError, ArithmeticError) as exc:
        raise WireError(f"invalid retry delay expression: {expression!r}") from exc


_RESET_HEADERS = (
    "retry-after",
    "x-ratelimit-reset",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


def _one_reset(value: str, now_s: float) -> float | None:
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        # Large numbers are unix timestamps (X-RateLimit-Reset style), small ones seconds.
        return number - now_s if number > 1e9 else number
    try:
        return parse_duration(text)
    except WireError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now_s


def retry_after_s(headers: Mapping[str, str], now_s: float) -> float | None:
    """The delay a failing response asks for (`Retry-After`, `X-RateLimit-Reset*`), in seconds.

    Returns None when no header is usable; values over a day fall back to the default.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    delays = [
        delay
        for name in _RESET_HEADERS
        if name in lowered and (delay := _one_reset(lowered[name], now_s)) is not None
    ]
    if not delays:
        return None
    delay = max(0.0, max(delays))
    return None if delay > DAY_S else delay


def destination(raw_path: str, query: str) -> str:
    """Rebuild the destination URL from what follows `/v2/publish/` and QStash's own query.

    Raises:
        WireError: the destination is not an http(s) URL.
    """
    url = raw_path
    if not url.lower().startswith(("http://", "https://")):
        url = unquote(url)
    if not re.match(r"^https?://[^/?#\s]+", url, flags=re.IGNORECASE):
        raise WireError(f"invalid destination url: {raw_path!r}")
    return f"{url}?{query}" if query else url


def truthy(value: str | None) -> bool:
    """Header booleans (`true`, `True`, `1`)."""
    return (value or "").strip().lower() in {"true", "1", "yes"}
