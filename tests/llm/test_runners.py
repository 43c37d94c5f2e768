"""Runners against a fake OpenAI-wire provider on loopback, driven by the real ChatOpenAI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest
from pydantic import BaseModel

from lib.db import migrate as db
from lib.errors import LLMError, OutputInvalid
from lib.i18n import Lang
from lib.llm.attempt import CallContext, RetryPolicy
from lib.llm.dict_chunks import DictChunkCompletions
from lib.llm.providers import ChatModels, EndpointProvider, ModelEndpoint, chat_model
from lib.llm.streaming import OnDelta, StreamResult, parse_output, run_stream
from lib.llm.structured import degraded_summary, run_structured, source_text
from lib.local.serve import ServerThread
from lib.redis.port import RedisPort
from lib.routing import Template
from lib.templates.prompts import render
from lib.templates.schemas import DegradedSummary
from lib.templates.variables import validate_variables
from lib.usage import store as usage
from lib.usage.store import UsageRecord
from tests.support.llm_samples import variables
from tests.support.pg import count, fresh_database, truncate
from tests.support.provider import Break, Fail, FakeProvider, Lockstep, Reply, pieces

CTX = CallContext(user_id="u1", service_id="svc", template="job_summary")
# Generous timeouts keep a loaded machine from failing good attempts; timeout tests use TIGHT.
POLICY = RetryPolicy(retries=2, backoff_s=0.001, timeout_s=5.0, deadline_s=20.0)
TIGHT = RetryPolicy(retries=2, backoff_s=0.001, timeout_s=1.0, deadline_s=20.0)
MESSAGES = [
    {"role": "system", "content": "Answer in JSON."},
    {
        "role": "user",
        "content": "Summarise this.\n\n<<<JOB DESCRIPTION>>>\n"
        "Senior Python engineer. Owns the billing platform.\nLeads 4.\n<<<END JOB DESCRIPTION>>>",
    },
]
VALID = '{"title": "Python engineer", "score": 87}'


class Job(BaseModel):
    title: str
    score: int


@pytest.fixture(scope="module")
def fake_server() -> Iterator[tuple[FakeProvider, str]]:
    """One fake provider on loopback for the module."""
    fake = FakeProvider()
    with ServerThread(fake.app()) as server:
        yield fake, f"{server.url}/v1"


@pytest.fixture(scope="module", autouse=True)
def warm_paths(fake_server: tuple[FakeProvider, str]) -> None:
    """Pay each call path's one-time cost before the tests, outside their 1 s and 5 s
    timeouts: the first call of a process imports LangChain and builds the SDK's pydantic
    types (the first JSON-mode stream took 1.4 s when idle here, over 5 s on a loaded
    machine, and so timed out in a test that expects one attempt)."""
    fake, base_url = fake_server
    patient = RetryPolicy(retries=0, backoff_s=0.001, timeout_s=60.0, deadline_s=60.0)

    async def ignore(_: str) -> None:
        return None

    async def warm() -> None:
        async with httpx2.AsyncClient() as http:
            models = ChatModels(timeout=60.0, http_async_client=http)
            providers: tuple[EndpointProvider, ...] = ("deepseek", "zhipu")
            for provider in providers:  # function calling, JSON mode
                fake.script("deepseek-chat", Reply(VALID))
                endpoints = [ep(base_url, provider=provider)]
                await run_structured(
                    MESSAGES, Job, endpoints, ctx=CTX, policy=patient, models=models
                )
            providers = ("deepseek", "openai_compat")
            for provider in providers:  # both stream paths
                fake.script("deepseek-chat", Reply(VALID))
                endpoints = [ep(base_url, provider=provider)]
                await run_stream(
                    MESSAGES,
                    Job,
                    endpoints,
                    ctx=CTX,
                    on_delta=ignore,
                    policy=patient,
                    models=models,
                )

    asyncio.run(warm())
    fake.reset()


@pytest.fixture
def fake(fake_server: tuple[FakeProvider, str]) -> FakeProvider:
    """The fake provider with no scripts and no recorded requests."""
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture
def base_url(fake_server: tuple[FakeProvider, str]) -> str:
    return fake_server[1]


@pytest.fixture
async def models() -> AsyncIterator[ChatModels]:
    """Chat models on an HTTP client owned by this test's event loop."""
    async with httpx2.AsyncClient() as http:
        yield ChatModels(timeout=POLICY.timeout_s, http_async_client=http)


def ep(
    base_url: str, model: str = "deepseek-chat", provider: EndpointProvider = "deepseek"
) -> ModelEndpoint:
    return ModelEndpoint(base_url, "test-key", provider, model)


async def test_malformed_then_valid_is_one_retry(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """Malformed tool-call JSON, then valid: one retry, two usage records, a real answer."""
    fake.script("deepseek-chat", Reply('{"title": "Py'), Reply(VALID))
    seen: list[UsageRecord] = []
    result = await run_structured(
        MESSAGES, Job, [ep(base_url)], ctx=CTX, record=seen.append, policy=POLICY, models=models
    )
    assert result.value == Job(title="Python engineer", score=87) and not result.degraded
    assert [u.is_success for u in result.usage] == [False, True]
    assert list(result.usage) == seen and fake.calls() == 2
    assert fake.requests[0]["tool_choice"]["function"]["name"] == "Job"  # function calling


@pytest.mark.parametrize("provider", ["zhipu", "openai_compat", "offline"])
async def test_json_mode_providers_validate_and_retry(
    fake: FakeProvider, base_url: str, models: ChatModels, provider: EndpointProvider
) -> None:
    """JSON-mode endpoints: invalid JSON retried; a fenced valid answer is accepted."""
    fake.script("glm-4.5", Reply("{not json"), Reply(f"```json\n{VALID}\n```"))
    endpoint = ep(base_url, "glm-4.5", provider)
    result = await run_structured(MESSAGES, Job, [endpoint], ctx=CTX, policy=POLICY, models=models)
    assert result.value == Job(title="Python engineer", score=87)
    assert fake.requests[0]["response_format"] == {"type": "json_object"}
    assert "tools" not in fake.requests[0] and result.attempts == 2


async def test_schema_violation_counts_as_invalid(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """Well-formed JSON that breaks the schema is retried like malformed output."""
    fake.script("deepseek-chat", Reply('{"title": "x", "score": "high"}'), Reply(VALID))
    result = await run_structured(
        MESSAGES, Job, [ep(base_url)], ctx=CTX, policy=POLICY, models=models
    )
    assert result.value.model_dump() == {"title": "Python engineer", "score": 87}
    assert result.usage[0].error_message is not None and not result.usage[0].is_success


async def test_three_malformed_fall_back_to_next_model(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """Three invalid answers exhaust the primary; the fallback model answers."""
    fake.script("deepseek-chat", Reply("nope"), Reply("{"), Reply("[]"))
    fake.script("glm-4.5", Reply(VALID))
    endpoints = [ep(base_url), ep(base_url, "glm-4.5", "zhipu")]
    result = await run_structured(MESSAGES, Job, endpoints, ctx=CTX, policy=POLICY, models=models)
    assert result.endpoint == endpoints[1] and not result.degraded
    assert [(u.model_id, u.is_success) for u in result.usage] == [
        ("deepseek-chat", False),
        ("deepseek-chat", False),
        ("deepseek-chat", False),
        ("glm-4.5", True),
    ]
    assert result.usage[3].provider == "zhipu"


async def test_all_failing_gives_a_marked_degraded_result(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """All models failing: a DegradedSummary flagged `degraded: true`, built from the input."""
    fake.default = Reply("garbage")
    endpoints = [ep(base_url), ep(base_url, "glm-4.5", "zhipu")]
    result = await run_structured(MESSAGES, Job, endpoints, ctx=CTX, policy=POLICY, models=models)
    assert result.degraded and result.endpoint is None
    assert isinstance(result.value, DegradedSummary)
    dumped = result.value.model_dump()
    assert dumped["degraded"] is True
    assert dumped["bullets"] == [
        "Senior Python engineer.",
        "Owns the billing platform.",
        "Leads 4.",
    ]
    assert result.attempts == 6 and not any(u.is_success for u in result.usage)


async def test_5xx_and_timeouts_are_retried(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """A 503 and a too-slow answer are transient: retried on the same model, then success."""
    fake.script("deepseek-chat", Fail(503), Reply(VALID, delay_s=4.0), Reply(VALID))
    started = time.perf_counter()
    result = await run_structured(
        MESSAGES, Job, [ep(base_url)], ctx=CTX, policy=TIGHT, models=models
    )
    # Cut at the 1 s timeout, not after the 4 s answer: 2.5 s are left for the load.
    assert time.perf_counter() - started < 3.5
    assert not result.degraded
    errors = [u.error_message for u in result.usage]
    assert errors[0] is not None and "503" in errors[0]
    assert errors[1] is not None and "Timeout" in errors[1]
    assert errors[2] is None


async def test_client_error_skips_retries_and_goes_to_fallback(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """A 401 is not transient: no retry on that model, the fallback answers."""
    fake.script("deepseek-chat", Fail(401, "bad key"))
    fake.script("glm-4.5", Reply(VALID))
    endpoints = [ep(base_url), ep(base_url, "glm-4.5", "zhipu")]
    result = await run_structured(MESSAGES, Job, endpoints, ctx=CTX, policy=POLICY, models=models)
    assert [u.model_id for u in result.usage] == ["deepseek-chat", "glm-4.5"]
    assert fake.calls("deepseek-chat") == 1


async def test_usage_comes_from_the_provider_and_is_priced(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """Token counts are the provider's; cost follows the price table; none reported → 0."""
    fake.script("deepseek-chat", Reply(VALID, input_tokens=1000, output_tokens=500))
    first = await run_structured(
        MESSAGES, Job, [ep(base_url)], ctx=CTX, policy=POLICY, models=models
    )
    u = first.usage[0]
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (1000, 500, 1500)
    assert (u.cost, u.currency) == (Decimal("0.00600000"), "CNY")
    assert (u.user_id, u.service_id, u.task_template_id, u.is_stream) == (
        "u1",
        "svc",
        "job_summary",
        False,
    )
    fake.script("deepseek-chat", Reply(VALID, usage=False))
    second = await run_structured(
        MESSAGES, Job, [ep(base_url)], ctx=CTX, policy=POLICY, models=models
    )
    assert (second.usage[0].total_tokens, second.usage[0].cost) == (0, Decimal(0))


async def test_offline_endpoint_costs_nothing(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """The offline model is free whatever model name it answers for."""
    fake.script("deepseek-chat", Reply(VALID, input_tokens=1000, output_tokens=1000))
    endpoint = ep(base_url, provider="offline")
    result = await run_structured(MESSAGES, Job, [endpoint], ctx=CTX, policy=POLICY, models=models)
    assert result.usage[0].provider == "offline" and result.usage[0].cost == 0


async def test_structured_cancellation_stops_the_call_and_records_it(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """Cancelling the task raises CancelledError promptly and logs the attempt as cancelled."""
    # Cancelled once the request is at the provider, which holds its answer for 3 s.
    fake.script("deepseek-chat", Reply(VALID, delay_s=3.0))
    seen: list[UsageRecord] = []
    policy = RetryPolicy(backoff_s=0.001, timeout_s=5.0)
    task = asyncio.create_task(
        run_structured(
            MESSAGES, Job, [ep(base_url)], ctx=CTX, record=seen.append, policy=policy, models=models
        )
    )
    while fake.calls() == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(u.is_success, u.error_message) for u in seen] == [(False, "cancelled")]


def test_degraded_summary_takes_meaningful_lines_only() -> None:
    """Delimiters and punctuation-only lines are skipped; at most 8 bullets, each bounded."""
    text = "### Resume\n---\n- Built X。Led Y！\n" + "\n".join(f"item {i}" for i in range(20))
    summary = degraded_summary(text + "\n" + "z" * 500, "boom")
    assert summary.bullets[:3] == ["Resume", "Built X。", "Led Y！"]
    assert len(summary.bullets) == 8 and summary.degraded is True
    assert summary.reason == "all models failed: boom"


def test_degraded_summary_keeps_addresses_and_numbers_whole() -> None:
    """Sentences end at punctuation before a space: e-mails, URLs and versions stay whole."""
    text = (
        "Jane Doe · jane.doe@example.com · github.com/jane\nUses Node.js and Python 3.12. Leads 4."
    )
    assert degraded_summary(text, "x").bullets == [
        "Jane Doe · jane.doe@example.com · github.com/jane",
        "Uses Node.js and Python 3.12.",
        "Leads 4.",
    ]


PROMPT_LINES = (
    "The user",
    "RESUME",
    "JOB DESCRIPTION",
    "END ",
    "JSON",
    "slotline-task",
    "用户",
    "简历",
)


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize(
    "template", ["resume_summary", "detailed_resume_summary", "job_summary", "resume_customize"]
)
async def test_degraded_result_comes_from_the_source_never_the_prompt(
    fake: FakeProvider, base_url: str, models: ChatModels, template: Template, lang: Lang
) -> None:
    """A rendered prompt, every model failing: bullets are the document's own first lines."""
    fake.default = Reply("garbage")
    given = variables(template)
    messages = render(template, lang, given)
    source = source_text(template, validate_variables(template, given).model_dump())
    expected = degraded_summary(source, "x").bullets
    first_line = next(iter(given.values())).splitlines()[0]
    assert expected[0] == first_line  # the résumé's name, the job's title
    for explicit in (source, None):  # the worker passes the source; the default finds it too
        result = await run_structured(
            messages,
            Job,
            [ep(base_url)],
            ctx=CTX,
            policy=RetryPolicy(retries=0),
            models=models,
            degraded_source=explicit,
        )
        assert isinstance(result.value, DegradedSummary)
        assert result.value.bullets == expected
        text = " ".join(result.value.bullets)
        assert not any(line in text for line in PROMPT_LINES), text
    if "resume_text" in given:
        assert "jane@example.com | +1 555 123 4567 | github.com/jane" in expected


# --- streaming -------------------------------------------------------------------------


class Sink:
    """Collects deltas and restarts as a client would see them."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def delta(self, text: str) -> None:
        self.events.append(text)

    async def restart(self) -> None:
        self.events.append("<restart>")

    @property
    def text(self) -> str:
        return "".join(self.events).rsplit("<restart>", 1)[-1]


async def test_plain_streams_reach_langchain_as_wire_dicts(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """`DictChunkCompletions`: dict chunks, request options kept, SDK errors unchanged."""
    model = models.get(ep(base_url, provider="openai_compat"), streaming=True)
    assert isinstance(model.async_client, DictChunkCompletions)
    fake.script("deepseek-chat", Reply(VALID), Fail(503))
    stream = await model.async_client.create(
        model="deepseek-chat",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"user_tag": "t1"},
        extra_headers={"X-Trace": "abc"},
    )
    chunks = [chunk async for chunk in stream]
    assert all(type(chunk) is dict for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == VALID and chunks[-1]["usage"]["prompt_tokens"] == 11
    assert fake.requests[0]["user_tag"] == "t1"
    assert not {"extra_body", "extra_headers"} & set(fake.requests[0])
    with pytest.raises(openai.InternalServerError):
        await model.async_client.create(model="deepseek-chat", messages=MESSAGES, stream=True)


def test_the_private_hook_still_fits_langchain_and_the_sdk() -> None:
    """What `DictChunkCompletions` relies on, outside public APIs, is still there: a chat
    model's `async_client` is `root_async_client.chat.completions` (the hook swaps like for
    like), `create()`'s request options are the ones it maps onto the SDK's
    `RequestOptions`, and `post()` takes the arguments it passes. A LangChain or openai
    release that moves any of them fails here, not in production."""
    import inspect

    from langchain_openai import ChatOpenAI
    from openai import AsyncOpenAI
    from openai._types import RequestOptions
    from openai.resources.chat.completions import AsyncCompletions

    from lib.llm.dict_chunks import _OPTIONS

    model = ChatOpenAI(model="m", base_url="http://h/v1", api_key="k")  # type: ignore[arg-type]
    assert isinstance(model.root_async_client, AsyncOpenAI)
    assert type(model.async_client) is AsyncCompletions
    assert model.async_client._client is model.root_async_client
    create = inspect.signature(AsyncCompletions.create).parameters
    options = {p for p in create if p.startswith("extra_") or p == "timeout"}
    assert options == {name for name, _ in _OPTIONS}
    assert {field for _, field in _OPTIONS} <= set(RequestOptions.__annotations__)
    post = inspect.signature(AsyncOpenAI.post).parameters
    assert {"body", "cast_to", "options", "stream", "stream_cls"} <= set(post)
    hooked = chat_model(ep("http://h/v1", provider="openai_compat"), streaming=True, timeout=5)
    assert isinstance(hooked.async_client, DictChunkCompletions)
    plain = chat_model(
        ep("http://h/v1", provider="openai_compat"), streaming=True, timeout=5, dict_chunks=False
    )
    assert type(plain.async_client) is AsyncCompletions


async def test_langchain_streams_through_the_hook(
    fake: FakeProvider, base_url: str, models: ChatModels
) -> None:
    """A plain (non-JSON-mode) stream of `run_stream` goes through the hook's `create`:
    were LangChain to call another client, the hook would silently stop saving CPU."""
    endpoint = ep(base_url, provider="openai_compat")
    hook = models.get(endpoint, streaming=True).async_client
    assert isinstance(hook, DictChunkCompletions)
    calls: list[bool] = []
    original = hook.create

    async def counted(**params: Any) -> Any:
        calls.append(bool(params.get("stream")))
        return await original(**params)

    hook.create = counted  # type: ignore[method-assign]
    fake.script("deepseek-chat", Reply(VALID))
    result = await stream(models, [endpoint], Sink().delta)
    assert result.value.score == 87 and calls == [True]


async def stream(
    models: ChatModels,
    endpoints: Sequence[ModelEndpoint],
    on_delta: OnDelta,
    **options: Any,
) -> StreamResult[Job]:
    """`run_stream` on this file's messages, schema and context; `POLICY` unless given."""
    return await run_stream(
        MESSAGES,
        Job,
        endpoints,
        ctx=CTX,
        on_delta=on_delta,
        models=models,
        **({"policy": POLICY} | options),
    )


@pytest.fixture(params=["deepseek", "openai_compat"])
def primary(request: pytest.FixtureRequest) -> EndpointProvider:
    """The streaming tests run on both stream paths of `ChatOpenAI`: a JSON-mode provider
    (the SDK's `response_format` stream helper) and a plain one (`DictChunkCompletions`)."""
    return request.param  # type: ignore[no-any-return]


async def test_stream_delivers_deltas_as_they_come_and_captures_usage(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """Each delta reaches the caller before the provider sends the next piece (the fake
    waits for it: no clock involved); usage is the final chunk's."""
    lockstep = Lockstep()
    fake.script("deepseek-chat", Reply(VALID, input_tokens=40, lockstep=lockstep))
    sink = Sink()

    async def on_delta(text: str) -> None:
        await sink.delta(text)
        lockstep.saw()

    result = await stream(models, [ep(base_url, provider=primary)], on_delta)
    assert not lockstep.stalled, "a delta was held back until later pieces arrived"
    assert sink.events == pieces(VALID) and result.text == VALID
    assert result.value == Job(title="Python engineer", score=87)
    u = result.usage[0]
    assert (u.input_tokens, u.output_tokens, u.is_stream, u.is_success) == (
        40,
        len(pieces(VALID)),
        True,
        True,
    )
    assert fake.requests[0]["stream_options"] == {"include_usage": True}


async def test_stream_tolerates_a_json_fence(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """A ```json fenced answer validates once the stream is complete."""
    fake.script("deepseek-chat", Reply(f"```json\n{VALID}\n```"))
    sink = Sink()
    result = await stream(models, [ep(base_url, provider=primary)], sink.delta)
    assert result.value.score == 87


async def test_stream_invalid_output_raises_output_invalid(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """A complete but invalid output raises OutputInvalid (output_invalid), logged as failed."""
    fake.script("deepseek-chat", Reply('{"title": "x"}'))
    seen: list[UsageRecord] = []
    with pytest.raises(OutputInvalid) as caught:
        await stream(models, [ep(base_url, provider=primary)], Sink().delta, record=seen.append)
    assert caught.value.code == "output_invalid"
    assert [u.is_success for u in seen] == [False] and fake.calls() == 1


async def test_stream_broken_midway_restarts_cleanly(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """A dropped stream after some tokens signals a restart, then the retry's text stands alone."""
    fake.script("deepseek-chat", Break('{"title": "Pyth'), Reply(VALID))
    sink = Sink()
    result = await stream(
        models, [ep(base_url, provider=primary)], sink.delta, on_restart=sink.restart
    )
    assert sink.events.count("<restart>") == 1 and sink.text == VALID
    assert [u.is_success for u in result.usage] == [False, True]


async def test_stream_stall_times_out_and_falls_back(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """A stream silent past the timeout is retried, then the fallback model streams it."""
    slow = Reply(VALID, token_delay_s=4.0)
    fake.script("deepseek-chat", Fail(500), slow, Fail(502))
    fake.script("glm-4.5", Reply(VALID))
    sink = Sink()
    endpoints = [ep(base_url, provider=primary), ep(base_url, "glm-4.5", "zhipu")]
    started = time.perf_counter()
    result = await stream(models, endpoints, sink.delta, on_restart=sink.restart, policy=TIGHT)
    # Cut at the 1 s timeout, not after the 4 s stall: 2.5 s are left for the load.
    assert time.perf_counter() - started < 3.5
    assert result.usage[1].error_message == "TimeoutError"
    assert result.endpoint.model_name == "glm-4.5" and sink.text == VALID
    assert [u.is_success for u in result.usage] == [False, False, False, True]


async def test_stream_all_failing_raises_llm_error(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """Every model failing transiently ends in LLMError, with one record per attempt."""
    fake.default = Fail(500)
    seen: list[UsageRecord] = []
    with pytest.raises(LLMError) as caught:
        await stream(
            models,
            [ep(base_url, provider=primary), ep(base_url, "glm-4.5", "zhipu")],
            Sink().delta,
            record=seen.append,
        )
    assert caught.value.code == "llm_error" and len(seen) == 6 == fake.calls()


async def test_stream_cancellation_stops_the_stream(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """Cancelling mid-stream stops token delivery and records the attempt as cancelled."""
    # 0.2 s between pieces: the cancel lands long before the stream could end.
    fake.script("deepseek-chat", Reply(VALID, token_delay_s=0.2))
    sink, seen = Sink(), list[UsageRecord]()
    task = asyncio.create_task(
        stream(models, [ep(base_url, provider=primary)], sink.delta, record=seen.append)
    )
    while not sink.events:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    delivered = len(sink.events)
    await asyncio.sleep(0.5)  # two more pieces' time: none of them may reach the caller
    assert len(sink.events) == delivered < len(pieces(VALID))
    assert [(u.is_success, u.error_message, u.is_stream) for u in seen] == [
        (False, "cancelled", True)
    ]


async def test_stream_callback_failure_is_not_retried(
    fake: FakeProvider, base_url: str, models: ChatModels, primary: EndpointProvider
) -> None:
    """An on_delta error is the caller's: raised as is, not mistaken for a provider failure."""
    fake.default = Reply(VALID)

    async def broken(_: str) -> None:
        raise KeyError("sink down")

    seen: list[UsageRecord] = []
    with pytest.raises(KeyError):
        await stream(models, [ep(base_url, provider=primary)], broken, record=seen.append)
    assert fake.calls() == 1 and len(seen) == 1 and not seen[0].is_success


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (VALID, True),
        (f"```json\n{VALID}\n```", True),
        (f"```\n{VALID}```", True),
        (f"  {VALID}\n", True),
        ('{"title": "x"}', False),
        ("not json", False),
        ("", False),
    ],
)
def test_parse_output(text: str, ok: bool) -> None:
    """Whole-output parsing tolerates fences and whitespace, rejects anything invalid."""
    if ok:
        assert parse_output(text, Job).score == 87
    else:
        with pytest.raises(OutputInvalid):
            parse_output(text, Job)


@pytest.mark.parametrize(("retry", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0)])
def test_backoff_doubles_up_to_a_cap(retry: int, delay: float) -> None:
    """Retry n waits backoff × 2^(n-1), capped."""
    assert RetryPolicy(backoff_s=0.5, backoff_max_s=8.0).delay(retry) == delay


# --- every attempt is one row in Postgres ---------------------------------------------


@pytest.fixture(scope="module")
def runs_db_url(postgres_url: str) -> str:
    """A migrated database of its own for this module."""
    url = fresh_database(postgres_url, "runs")
    asyncio.run(db.migrate(url))
    return url


@pytest.fixture
def runs_db(runs_db_url: str) -> str:
    """That database with an empty `llm_usage_logs`."""
    truncate(runs_db_url)
    return runs_db_url


async def test_each_attempt_is_exactly_one_usage_row(
    fake: FakeProvider, base_url: str, models: ChatModels, redis: RedisPort, runs_db: str
) -> None:
    """Retries, fallbacks, a degraded run and a stream: as many rows in Postgres as requests."""
    fake.script("deepseek-chat", Reply("bad"), Fail(500), Reply("bad"))
    fake.script("glm-4.5", Reply(VALID))
    records: list[UsageRecord] = []
    endpoints = [ep(base_url), ep(base_url, "glm-4.5", "zhipu")]
    await run_structured(
        MESSAGES, Job, endpoints, ctx=CTX, record=records.append, policy=POLICY, models=models
    )
    await usage.append(redis, records)  # the worker's finish step: one XADD per task

    fake.default = Fail(500)
    records = []
    degraded = await run_structured(
        MESSAGES, Job, endpoints, ctx=CTX, record=records.append, policy=POLICY, models=models
    )
    assert degraded.degraded
    await usage.append(redis, records)

    fake.default = Reply(VALID)
    records = []
    await stream(models, endpoints, Sink().delta, record=records.append)
    await usage.append(redis, records)

    assert await usage.drain(redis, runs_db) == fake.calls() == 4 + 6 + 1
    assert count(runs_db) == fake.calls()
