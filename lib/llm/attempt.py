"""Shared by the runners: call context, retry policy, error kinds, one usage record per attempt."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import openai
from pydantic import ValidationError

from lib.llm.cost import PriceTable, cost
from lib.llm.providers import ModelEndpoint
from lib.settings import Settings
from lib.usage.record import UsageRecord

logger = logging.getLogger(__name__)

Message = Mapping[str, Any]
Recorder = Callable[[UsageRecord], None]
FailureKind = Literal["invalid", "transient", "rejected", "unexpected"]

_ERROR_CHARS = 500


@dataclass(frozen=True)
class CallContext:
    """Who a call is for: the fields every usage record carries."""

    user_id: str
    service_id: str
    template: str


@dataclass(frozen=True)
class RetryPolicy:
    """Retries per model, backoff, and time limits.

    `retries` more attempts follow a retryable failure on the same model, after
    `backoff_s`, doubled each time (capped at `backoff_max_s`). `timeout_s` bounds
    each provider request (and the silence between streamed chunks);
    `deadline_s` bounds one whole attempt, streaming included.
    """

    retries: int = 2
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 60.0
    deadline_s: float = 280.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The policy configured for this deployment."""
        return cls(
            retries=settings.llm_retries,
            backoff_s=settings.llm_backoff_s,
            timeout_s=settings.llm_timeout_s,
            deadline_s=settings.worker_time_limit_s,
        )

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return float(min(self.backoff_s * 2 ** (retry - 1), self.backoff_max_s))


def failure_kind(exc: BaseException) -> FailureKind:
    """What a failed attempt means for the next one.

    `invalid`: the output did not parse or validate (retry the same model).
    `transient`: 5xx, 408, 429, a timeout or a broken connection (retry).
    `rejected`: any other provider error, e.g. a 4xx for a bad key or model
    (next model at once). `unexpected`: not a provider failure (a bug, a
    cancellation, a failing callback): recorded, then re-raised.
    """
    from langchain_core.exceptions import OutputParserException

    from lib.errors import OutputInvalid

    if isinstance(exc, OutputParserException | ValidationError | OutputInvalid):
        return "invalid"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 429):
            return "transient"
        return "rejected"
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError | TimeoutError):
        return "transient"
    if isinstance(exc, openai.OpenAIError):
        return "rejected"
    return "unexpected"


def describe(exc: BaseException) -> str:
    """A short error message for the usage log (class and first line, bounded)."""
    if isinstance(exc, openai.APIStatusError):
        return f"{type(exc).__name__}: HTTP {exc.status_code}"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}"[:_ERROR_CHARS]


def usage_of(metadata: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """(input, output, total) tokens as the provider reported them; zeros when it did not."""
    if not metadata:
        return 0, 0, 0
    input_tokens = int(metadata.get("input_tokens") or 0)
    output_tokens = int(metadata.get("output_tokens") or 0)
    total = int(metadata.get("total_tokens") or input_tokens + output_tokens)
    return input_tokens, output_tokens, total


class Attempt:
    """One call to one endpoint: times it and turns its outcome into one usage record."""

    def __init__(
        self,
        ctx: CallContext,
        endpoint: ModelEndpoint,
        *,
        stream: bool,
        record: Recorder,
        prices: PriceTable | None = None,
    ) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.stream = stream
        self._record = record
        self._prices = prices
        self._started = time.perf_counter()
        # The provider's token counts, set by the call as soon as it knows them.
        self.usage: Mapping[str, Any] | None = None
        self.done: UsageRecord | None = None

    def finish(self, usage: Mapping[str, Any] | None, error: BaseException | None) -> UsageRecord:
        """Emit this attempt's record (exactly once; later calls return the first)."""
        if self.done is not None:
            return self.done
        input_tokens, output_tokens, total = usage_of(usage)
        if self.endpoint.provider == "offline":
            amount, currency = cost(self.endpoint.model_name, 0, 0, prices=self._prices)
        else:
            amount, currency = cost(
                self.endpoint.model_name, input_tokens, output_tokens, prices=self._prices
            )
        self.done = UsageRecord(
            user_id=self.ctx.user_id,
            service_id=self.ctx.service_id,
            task_template_id=self.ctx.template,
            provider=self.endpoint.provider,
            model_id=self.endpoint.model_name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=total,
            latency_ms=round((time.perf_counter() - self._started) * 1000),
            cost=amount,
            currency=currency,
            is_stream=self.stream,
            is_success=error is None,
            error_message=None if error is None else describe(error),
        )
        try:
            self._record(self.done)
        except Exception:
            # The caller's sink failing must not turn a good answer into a failure.
            logger.exception("usage record callback failed")
        return self.done
