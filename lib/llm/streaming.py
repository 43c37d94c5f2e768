"""Streaming runner: tokens out as they come, usage from the last chunk, whole output validated."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from langchain_core.messages.ai import UsageMetadata, add_usage
from pydantic import BaseModel, ValidationError

from lib.errors import LLMError, OutputInvalid
from lib.llm.attempt import Attempt, CallContext, Message, Recorder, RetryPolicy
from lib.llm.cost import PriceTable
from lib.llm.driver import CallerFailed, Final, OnSwitch, drive
from lib.llm.providers import ChatModels, ModelEndpoint
from lib.usage.record import UsageRecord

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)
OnDelta = Callable[[str], Awaitable[None]]
OnRestart = Callable[[], Awaitable[None]]

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class StreamResult(Generic[T]):
    """The validated answer, the raw text streamed, and one usage record per attempt."""

    value: T
    text: str
    endpoint: ModelEndpoint
    usage: tuple[UsageRecord, ...]

    @property
    def attempts(self) -> int:
        return len(self.usage)


async def run_stream(
    messages: Sequence[Message],
    schema: type[T],
    endpoints: Sequence[ModelEndpoint],
    *,
    ctx: CallContext,
    on_delta: OnDelta,
    on_restart: OnRestart | None = None,
    record: Recorder | None = None,
    policy: RetryPolicy | None = None,
    models: ChatModels | None = None,
    prices: PriceTable | None = None,
    on_switch: OnSwitch | None = None,
) -> StreamResult[T]:
    """Stream an answer token by token, then parse and validate all of it.

    A transient failure (5xx, 429, timeout, broken stream) is retried up to
    `policy.retries` times per endpoint with backoff, then the next endpoint is
    tried; `on_restart` is awaited before a new attempt whenever the previous
    one had already sent text, so clients can drop it. A complete output that
    does not validate is not retried: it raises `OutputInvalid`.

    Args:
        messages: OpenAI-style chat messages.
        schema: the pydantic model the whole output must validate against.
        endpoints: the route's models in order (primary first).
        ctx: user, service and template for the usage records.
        on_delta: awaited with each text delta as it arrives.
        on_restart: awaited before retrying once text was emitted.
        record: called with each attempt's usage record as soon as it ends.
        policy: retries, backoff, request timeout and per-attempt deadline.
        models: chat models to reuse; built when None.
        prices: price table (default: settings).
        on_switch: awaited with each fallback endpoint before its first attempt (after
            `on_restart`, when the previous attempt had sent text).

    Returns:
        The validated value, the streamed text and the usage records.

    Raises:
        OutputInvalid: the complete output did not parse or validate.
        LLMError: every endpoint failed.
        asyncio.CancelledError: the call was cancelled (attempt recorded first).
    """
    policy = policy or RetryPolicy()
    models = models or ChatModels(timeout=policy.timeout_s)
    emitted = False

    async def restart_if_emitted() -> None:
        nonlocal emitted
        if emitted:
            emitted = False
            if on_restart is not None:
                await on_restart()

    async def call(endpoint: ModelEndpoint, attempt: Attempt) -> tuple[T, str]:
        nonlocal emitted
        runnable = models.streaming(endpoint)
        parts: list[str] = []
        usage: UsageMetadata | None = None
        # An async generator: closed on the way out, so a cancel closes the HTTP stream.
        stream = cast(AsyncGenerator[Any, None], runnable.astream(list(messages)))
        async with asyncio.timeout(policy.deadline_s), aclosing(stream) as chunks:
            while True:
                # The longest silence between chunks (asyncio.timeout, unlike wait_for
                # on 3.11, never swallows a cancellation).
                async with asyncio.timeout(policy.timeout_s):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                if chunk.usage_metadata:
                    usage = attempt.usage = add_usage(usage, chunk.usage_metadata)
                text = chunk.text
                if text:
                    parts.append(text)
                    emitted = True
                    try:
                        await on_delta(text)
                    except Exception as exc:
                        raise CallerFailed from exc
        whole = "".join(parts)
        try:
            return parse_output(whole, schema), whole
        except OutputInvalid as exc:
            # A complete answer that does not validate is not retried.
            raise Final from exc

    driven = await drive(
        endpoints,
        call,
        ctx=ctx,
        stream=True,
        policy=policy,
        record=record,
        prices=prices,
        before_try=restart_if_emitted,
        on_switch=on_switch,
    )
    if driven.value is None or driven.endpoint is None:
        raise LLMError(f"every model failed: {driven.last_error}", template=ctx.template)
    value, text = driven.value
    return StreamResult(value, text, driven.endpoint, driven.usage)


def parse_output(text: str, schema: type[T]) -> T:
    """The whole streamed text as `schema` (a ```json fence around it is tolerated).

    Raises:
        OutputInvalid: not JSON, or JSON that does not validate.
    """
    match = _FENCE.match(text)
    body = match.group(1) if match else text.strip()
    try:
        return schema.model_validate(json.loads(body))
    except json.JSONDecodeError as exc:
        raise OutputInvalid(f"output is not JSON: {exc.msg} at {exc.pos}") from exc
    except ValidationError as exc:
        raise OutputInvalid(
            f"output does not match the schema ({exc.error_count()} errors)"
        ) from exc
