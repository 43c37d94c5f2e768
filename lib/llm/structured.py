"""Structured runner: validated output, retries, fallback models, then a flagged degraded result."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from lib.errors import OutputInvalid
from lib.llm.attempt import Attempt, CallContext, Message, Recorder, RetryPolicy
from lib.llm.cost import PriceTable
from lib.llm.driver import OnSwitch, drive
from lib.llm.providers import ChatModels, ModelEndpoint
from lib.templates.prompts import extract_inputs
from lib.templates.schemas import DegradedSummary
from lib.usage.record import UsageRecord

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

DEGRADED_BULLETS = 8
_BULLET_CHARS = 200
# Lines, then sentences: ASCII punctuation ends one only before whitespace (an e-mail
# address, a URL, "3.5" or "Node.js" stay whole); CJK punctuation ends one at once.
_SPLIT = re.compile(r"[\r\n]+|(?<=[.!?;])\s+|(?<=[。！？；])")
_TRIM = " \t-*•·#>|=<`\"'"
# The source texts a degraded result is built from, per structured template: the
# user's own document, never the prompt around it.
DEGRADED_SOURCES: dict[str, tuple[str, ...]] = {
    "resume_summary": ("resume_text",),
    "detailed_resume_summary": ("detailed_resume_text",),
    "job_summary": ("job_text",),
    "resume_customize": ("resume_text",),
}


@dataclass(frozen=True)
class StructuredResult(Generic[T]):
    """A validated answer, or the degraded summary (`degraded` True, `endpoint` None)."""

    value: T | DegradedSummary
    degraded: bool
    endpoint: ModelEndpoint | None
    usage: tuple[UsageRecord, ...]

    @property
    def attempts(self) -> int:
        return len(self.usage)


async def run_structured(
    messages: Sequence[Message],
    schema: type[T],
    endpoints: Sequence[ModelEndpoint],
    *,
    ctx: CallContext,
    record: Recorder | None = None,
    policy: RetryPolicy | None = None,
    models: ChatModels | None = None,
    degraded_source: str | None = None,
    prices: PriceTable | None = None,
    on_switch: OnSwitch | None = None,
) -> StructuredResult[T]:
    """Ask each endpoint in turn for `schema`, validated; degrade when all fail.

    Per endpoint: an invalid output or a transient error (5xx, 429, timeout,
    connection) is retried up to `policy.retries` times with exponential backoff;
    any other provider refusal (4xx) moves on at once. When every endpoint has
    failed, the result is a `DegradedSummary` built from the input text.

    Args:
        messages: OpenAI-style chat messages (`role`, `content`).
        schema: the pydantic model the answer must validate against.
        endpoints: the route's models in order (primary first).
        ctx: user, service and template for the usage records.
        record: called with each attempt's usage record as soon as it ends.
        policy: retries, backoff and timeouts (defaults: `RetryPolicy()`).
        models: chat models to reuse (a process-wide cache); built when None.
        degraded_source: the source text the degraded summary is built from (see
            `source_text`); default: the delimited inputs of the user messages, never
            the prompt's own lines.
        prices: price table (default: settings).
        on_switch: awaited with each fallback endpoint before its first attempt.

    Returns:
        The answer (or the degraded summary) and one usage record per attempt.

    Raises:
        asyncio.CancelledError: the call was cancelled (the running attempt is
            recorded as failed first).
        Exception: an unexpected, non-provider error (recorded, then re-raised).
    """
    policy = policy or RetryPolicy()
    models = models or ChatModels(timeout=policy.timeout_s)

    async def call(endpoint: ModelEndpoint, attempt: Attempt) -> T:
        runnable = models.structured(endpoint, schema)
        async with asyncio.timeout(policy.timeout_s):
            out: dict[str, Any] = await runnable.ainvoke(list(messages))
        raw, parsed, error = out.get("raw"), out.get("parsed"), out.get("parsing_error")
        attempt.usage = getattr(raw, "usage_metadata", None)
        if error is None and isinstance(parsed, schema):
            return parsed
        raise error or OutputInvalid("the response held no structured output")

    driven = await drive(
        endpoints,
        call,
        ctx=ctx,
        stream=False,
        policy=policy,
        record=record,
        prices=prices,
        on_switch=on_switch,
    )
    if driven.value is not None:
        return StructuredResult(driven.value, False, driven.endpoint, driven.usage)
    logger.error("structured %s: every model failed, degraded result", ctx.template)
    text = degraded_source if degraded_source is not None else delimited_inputs(messages)
    summary = degraded_summary(text, driven.last_error)
    return StructuredResult(summary, True, None, driven.usage)


def source_text(template: str, variables: Mapping[str, Any]) -> str:
    """The user's own text a degraded `template` result is built from.

    Args:
        template: a structured template.
        variables: the task's validated variables (`model_dump()`).

    Returns:
        The template's source variables (`DEGRADED_SOURCES`; any other template: every
        text variable), joined; empty when there is none (an image-only job).
    """
    names = DEGRADED_SOURCES.get(template) or tuple(variables)
    values = [variables.get(name) for name in names]
    return "\n".join(v for v in values if isinstance(v, str) and not v.startswith("data:"))


def delimited_inputs(messages: Sequence[Message]) -> str:
    """The inputs between delimiters in the user messages (image parts skipped)."""
    texts: list[str] = []
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.extend(extract_inputs(str(part.get("text") or "")).values())
    return "\n".join(texts)


def degraded_summary(text: str, reason: str) -> DegradedSummary:
    """Bullet points taken verbatim from the source's first meaningful lines, flagged degraded."""
    bullets: list[str] = []
    for piece in _SPLIT.split(text):
        line = piece.strip(_TRIM)
        if len(line) < 3 or not any(ch.isalnum() for ch in line):
            continue
        bullets.append(line[:_BULLET_CHARS])
        if len(bullets) == DEGRADED_BULLETS:
            break
    return DegradedSummary(bullets=bullets, reason=f"all models failed: {reason}"[:1000])
