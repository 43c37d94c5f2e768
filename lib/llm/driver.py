"""The attempt driver shared by the runners: endpoints × tries, backoff, one record, classify.

A runner gives the driver its call body (one call to one endpoint, returning the value
or raising) and keeps only what is its own: the structured runner degrades when every
model failed, the streaming runner raises. The driver owns the loop: per endpoint,
`policy.retries` more tries after an invalid output or a transient error, with backoff;
a refusal (4xx) moves on to the next endpoint at once; each try is one `Attempt`, so one
usage record, failed or not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from lib.llm.attempt import (
    Attempt,
    CallContext,
    FailureKind,
    Recorder,
    RetryPolicy,
    describe,
    failure_kind,
)
from lib.llm.cost import PriceTable
from lib.llm.providers import ModelEndpoint
from lib.usage.record import UsageRecord

logger = logging.getLogger(__name__)

R = TypeVar("R")
Body = Callable[[ModelEndpoint, Attempt], Awaitable[R]]
OnSwitch = Callable[[ModelEndpoint], Awaitable[None]]
BeforeTry = Callable[[], Awaitable[None]]


class CallerFailed(Exception):
    """A callback of the caller's raised inside a call body: not a provider failure.

    The body wraps the callback's exception in it (`raise CallerFailed from exc`); the
    driver records the attempt as failed with the original error and raises that error
    as it was, never retried (a `TimeoutError` of the caller's is not the provider's).
    """


class Final(Exception):
    """A failure the body wants recorded and raised at once, not retried (`__cause__`)."""


@dataclass(frozen=True)
class Driven(Generic[R]):
    """The outcome of the loop: the value and its endpoint, or (both None) every try failed.

    `usage` holds one record per try, in order; `last_error` describes the last failure.
    """

    value: R | None
    endpoint: ModelEndpoint | None
    usage: tuple[UsageRecord, ...]
    last_error: str


async def drive(
    endpoints: Sequence[ModelEndpoint],
    body: Body[R],
    *,
    ctx: CallContext,
    stream: bool,
    policy: RetryPolicy,
    record: Recorder | None = None,
    prices: PriceTable | None = None,
    before_try: BeforeTry | None = None,
    on_switch: OnSwitch | None = None,
) -> Driven[R]:
    """Call `body` on each endpoint in turn, with retries, until one returns a value.

    The body reports the provider's token counts on `attempt.usage` as soon as it knows
    them: they go into the try's record whether it then succeeds or fails.

    Args:
        endpoints: the route's models in order (primary first).
        body: one call to one endpoint: returns the value, or raises.
        ctx: user, service and template for the usage records.
        stream: whether the records are of streamed calls.
        policy: retries per endpoint and backoff.
        record: called with each try's usage record as soon as it ends.
        prices: price table (default: settings).
        before_try: awaited before every try, after its backoff.
        on_switch: awaited with the endpoint before the first try of each endpoint after
            the first (the task moves to a fallback model).

    Returns:
        The value and its endpoint, or `Driven(None, None, …)` when every try failed.

    Raises:
        asyncio.CancelledError: the call was cancelled (the running try is recorded first).
        Exception: a `CallerFailed`'s cause, a `Final`'s cause, or an unexpected
            (non-provider) error: recorded, then raised.
    """
    records: list[UsageRecord] = []

    def sink(usage: UsageRecord) -> None:
        records.append(usage)
        if record is not None:
            record(usage)

    last_error = "no endpoint"
    label = "stream" if stream else "structured"
    for index, endpoint in enumerate(endpoints):
        for try_no in range(policy.retries + 1):
            if try_no:
                await asyncio.sleep(policy.delay(try_no))
            if before_try is not None:
                await before_try()
            if index and not try_no and on_switch is not None:
                await on_switch(endpoint)
            attempt = Attempt(ctx, endpoint, stream=stream, record=sink, prices=prices)
            try:
                value = await body(endpoint, attempt)
            except BaseException as exc:
                kind = _failed(attempt, exc)
                last_error = describe(exc)
                logger.warning(
                    "%s %s on %s failed (%s, try %d): %s",
                    label,
                    ctx.template,
                    endpoint.model_name,
                    kind,
                    try_no + 1,
                    last_error,
                )
                if kind == "rejected":
                    break
                continue
            attempt.finish(attempt.usage, None)
            return Driven(value, endpoint, tuple(records), last_error)
    return Driven(None, None, tuple(records), last_error)


def _failed(attempt: Attempt, exc: BaseException) -> FailureKind:
    """Record a failed try; raise what must not be retried, else say what kind it was.

    Raises:
        Exception: a `CallerFailed`'s or `Final`'s cause; `exc` itself when it is a
            cancellation or not a provider failure.
    """
    cause = exc.__cause__ if isinstance(exc, CallerFailed | Final) else None
    attempt.finish(attempt.usage, cause or exc)
    if isinstance(exc, CallerFailed) and cause is not None:
        raise cause from None
    if isinstance(exc, Final) and cause is not None:
        raise cause from cause.__cause__
    kind = failure_kind(exc)
    if isinstance(exc, asyncio.CancelledError) or kind == "unexpected":
        raise exc
    return kind
