"""A queued message: built from a publish request, stored as a flat Redis hash, shown as JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lib.local.qstash.wire import (
    FlowControl,
    WireError,
    eval_retry_delay_ms,
    parse_duration,
    parse_flow_control,
    truthy,
)

DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT_S = 300.0
MAX_RETRIES = 20
DEDUP_WINDOW_MS = 10 * 60 * 1000
_METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"}


def new_message_id() -> str:
    """A fresh message id."""
    return f"msg_{secrets.token_urlsafe(18)}"


@dataclass
class Message:
    """Everything needed to deliver one message (immutable once published, except `retried`)."""

    id: str
    url: str
    body: bytes = b""
    method: str = "POST"
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    callback: str = ""
    failure_callback: str = ""
    callback_headers: dict[str, str] = field(default_factory=dict)
    failure_callback_headers: dict[str, str] = field(default_factory=dict)
    max_retries: int = DEFAULT_RETRIES
    retry_delay: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    not_before_ms: int = 0
    created_at_ms: int = 0
    fc_key: str = ""
    fc_parallelism: int = 0
    fc_rate: int = 0
    fc_period_s: float = 1.0
    caller_ip: str = ""
    label: str = ""
    retried: int = 0

    @property
    def flow_control(self) -> FlowControl | None:
        """The flow-control settings, if the message has a key."""
        if not self.fc_key:
            return None
        return FlowControl(self.fc_key, self.fc_parallelism, self.fc_rate, self.fc_period_s)

    def to_fields(self) -> list[str]:
        """Flat `[field, value, …]` for HSET (body base64, dicts JSON)."""
        out: list[str] = []
        for name, value in asdict(self).items():
            if name == "body":
                out += ["body_b64", base64.b64encode(self.body).decode()]
            elif isinstance(value, dict):
                out += [name, json.dumps(value)]
            else:
                out += [name, str(value)]
        return out

    @classmethod
    def from_fields(cls, data: Mapping[str, str]) -> Message:
        """Inverse of `to_fields` (unknown fields such as DLQ extras are ignored)."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "body":
                kwargs["body"] = base64.b64decode(data.get("body_b64", ""))
                continue
            if f.name not in data:
                continue
            raw = data[f.name]
            if f.type in ("int",):
                kwargs[f.name] = int(float(raw))
            elif f.type == "float":
                kwargs[f.name] = float(raw)
            elif f.type.startswith("dict"):
                kwargs[f.name] = json.loads(raw)
            else:
                kwargs[f.name] = raw
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        """The message as QStash's message API shows it."""
        out: dict[str, Any] = {
            "messageId": self.id,
            "url": self.url,
            "method": self.method,
            "header": {k: [v] for k, v in self.headers.items()},
            "maxRetries": self.max_retries,
            "retried": self.retried,
            "notBefore": self.not_before_ms,
            "createdAt": self.created_at_ms,
            "callerIP": self.caller_ip,
        }
        if self.content_type:
            out["header"]["Content-Type"] = [self.content_type]
        try:
            out["body"] = self.body.decode("utf-8")
        except UnicodeDecodeError:
            out["bodyBase64"] = base64.b64encode(self.body).decode()
        optional = {
            "callback": self.callback,
            "failureCallback": self.failure_callback,
            "retryDelayExpression": self.retry_delay,
            "label": self.label,
        }
        out.update({k: v for k, v in optional.items() if v})
        if self.callback_headers:
            out["callbackHeader"] = {k: [v] for k, v in self.callback_headers.items()}
        if self.failure_callback_headers:
            out["failureCallbackHeader"] = {
                k: [v] for k, v in self.failure_callback_headers.items()
            }
        if self.fc_key:
            out["flowControlKey"] = self.fc_key
            out["parallelism"] = self.fc_parallelism
            out["rate"] = self.fc_rate
            out["period"] = int(self.fc_period_s)
        return out


@dataclass(frozen=True)
class PublishRequest:
    """A parsed publish: the message, when it is due, and its deduplication key (if any)."""

    message: Message
    due_ms: int
    dedup_id: str | None


def _prefixed(headers: Mapping[str, str], prefix: str) -> dict[str, str]:
    """Headers under `prefix`, renamed without it (and without a following `forward-`)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower().startswith(prefix):
            rest = name[len(prefix) :]
            if rest.lower().startswith("forward-") and prefix != "upstash-forward-":
                rest = rest[len("forward-") :]
            out[rest] = value
    return out


def parse_publish(
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_ms: int,
    time_scale: float,
    caller_ip: str = "",
) -> PublishRequest:
    """Turn a publish request's `Upstash-*` headers into a message.

    `headers` must have lowercase names (as ASGI delivers them). `Upstash-Delay` is
    multiplied by `time_scale`; `Upstash-Not-Before` is absolute and wins over it.

    Raises:
        WireError: a header value is invalid.
    """
    get = headers.get
    method = (get("upstash-method") or "POST").upper()
    if method not in _METHODS:
        raise WireError(f"invalid method: {method!r}")
    try:
        retries = int(get("upstash-retries") or DEFAULT_RETRIES)
    except ValueError as exc:
        raise WireError("invalid Upstash-Retries") from exc
    if not 0 <= retries <= MAX_RETRIES:
        raise WireError(f"Upstash-Retries must be between 0 and {MAX_RETRIES}")
    retry_delay = get("upstash-retry-delay") or ""
    if retry_delay:
        eval_retry_delay_ms(retry_delay, 0)  # reject bad expressions at publish time
    timeout_s = parse_duration(get("upstash-timeout") or DEFAULT_TIMEOUT_S)
    due_ms = now_ms
    if delay := get("upstash-delay"):
        due_ms = now_ms + int(parse_duration(delay) * 1000 * time_scale)
    if not_before := get("upstash-not-before"):
        try:
            due_ms = int(float(not_before) * 1000)
        except ValueError as exc:
            raise WireError("invalid Upstash-Not-Before") from exc
    fc = None
    if fc_key := get("upstash-flow-control-key"):
        fc = parse_flow_control(fc_key, get("upstash-flow-control-value"))
    message = Message(
        id=new_message_id(),
        url=url,
        body=body,
        method=method,
        content_type=get("content-type") or "",
        headers=_prefixed(headers, "upstash-forward-"),
        callback=get("upstash-callback") or "",
        failure_callback=get("upstash-failure-callback") or "",
        callback_headers=_prefixed(headers, "upstash-callback-"),
        failure_callback_headers=_prefixed(headers, "upstash-failure-callback-"),
        max_retries=retries,
        retry_delay=retry_delay,
        timeout_s=timeout_s,
        not_before_ms=due_ms,
        created_at_ms=now_ms,
        fc_key=fc.key if fc else "",
        fc_parallelism=fc.parallelism if fc else 0,
        fc_rate=fc.rate if fc else 0,
        fc_period_s=fc.period_s if fc else 1.0,
        caller_ip=caller_ip,
        label=get("upstash-label") or "",
    )
    dedup_id = get("upstash-deduplication-id") or None
    if dedup_id is None and truthy(get("upstash-content-based-deduplication")):
        dedup_id = "content:" + content_digest(url, body, message.headers)
    return PublishRequest(message, due_ms, dedup_id)


def content_digest(url: str, body: bytes, headers: Mapping[str, str]) -> str:
    """Content-based deduplication: destination, body and forwarded headers."""
    digest = hashlib.sha256()
    digest.update(url.encode())
    digest.update(b"\0")
    digest.update(json.dumps(sorted(headers.items())).encode())
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()
