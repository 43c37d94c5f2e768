"""LLM-layer benchmark: CPU per call and per streamed token vs the bare openai SDK; usage rows/s.

The fake provider (tests/support/provider.py, zero latency) runs in a child process so the
CPU measured here is the client's only: ChatOpenAI + our runners versus a bare `openai`
AsyncOpenAI call doing the same work (request, parse, pydantic validation). Usage
throughput appends records to a real Valkey stream and drains them into a real Postgres
(COPY). Cold imports are timed in fresh interpreters. Figures are printed; not a test.

    .venv/bin/python bench/llm_layer.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402

STREAM_WORDS = 400
LONG_MODEL = "glm-4.5"  # the fake streams LONG for it


class Answer(BaseModel):
    title: str
    score: int


SHORT = json.dumps({"title": "Senior Python engineer", "score": 87})
LONG = json.dumps({"title": " ".join(f"w{i}" for i in range(STREAM_WORDS)), "score": 87})
MESSAGES = [
    {"role": "system", "content": "Answer in JSON."},
    {"role": "user", "content": "Summarize the job."},
]


def serve(port: int) -> None:
    """Child process: the fake provider answering every model at zero latency."""
    import uvicorn

    from tests.support.provider import FakeProvider, Reply

    fake = FakeProvider(
        default=Reply(SHORT), defaults={LONG_MODEL: Reply(LONG)}, keep_requests=False
    )
    uvicorn.run(fake.app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("fake provider did not start")


async def cpu_per_call(n: int, call: Callable[[], Awaitable[object]]) -> float:
    """Client CPU ms per call (after a warm-up)."""
    for _ in range(min(20, n)):
        await call()
    start = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - start) * 1000 / n


async def llm_figures(base_url: str, n: int, n_stream: int) -> dict[str, float]:
    """CPU per structured call and per streamed token: layer vs bare SDK."""
    import httpx2
    import openai

    from lib.llm.attempt import CallContext, RetryPolicy
    from lib.llm.providers import ChatModels, ModelEndpoint
    from lib.llm.streaming import run_stream
    from lib.llm.structured import run_structured

    ctx = CallContext("bench", "svc", "job_summary")
    policy = RetryPolicy(retries=0, timeout_s=30)
    records: list[object] = []
    figures: dict[str, float] = {}
    async with httpx2.AsyncClient() as http:
        models = ChatModels(timeout=30, http_async_client=http)
        # The same chat models as their public constructor builds them (no dict-chunk hook).
        public = ChatModels(timeout=30, http_async_client=http, dict_chunks=False)
        client = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, http_client=http)
        create: Any = client.chat.completions.create  # untyped: plain dict messages and tools
        tool_ep = ModelEndpoint(base_url, "k", "deepseek", "deepseek-chat")
        json_ep = ModelEndpoint(base_url, "k", "openai_compat", "deepseek-chat")
        long_ep = ModelEndpoint(base_url, "k", "openai_compat", LONG_MODEL)
        tool = {
            "type": "function",
            "function": {"name": "Answer", "parameters": Answer.model_json_schema()},
        }

        async def layer_tool() -> object:
            result = await run_structured(
                MESSAGES,
                Answer,
                [tool_ep],
                ctx=ctx,
                record=records.append,
                policy=policy,
                models=models,
            )
            assert not result.degraded
            return result

        async def layer_json() -> object:
            return await run_structured(
                MESSAGES,
                Answer,
                [json_ep],
                ctx=ctx,
                record=records.append,
                policy=policy,
                models=models,
            )

        async def bare_tool() -> object:
            done = await create(
                model_id="deepseek-chat",
                messages=MESSAGES,
                tools=[tool],
                tool_choice={"type": "function", "function": {"name": "Answer"}},
            )
            calls = done.choices[0].message.tool_calls or []
            return Answer.model_validate_json(calls[0].function.arguments)

        async def bare_json() -> object:
            done = await create(
                model_id="deepseek-chat",
                messages=MESSAGES,
                response_format={"type": "json_object"},
            )
            return Answer.model_validate_json(done.choices[0].message.content or "")

        async def noop(_: str) -> None:
            return None

        async def layer_stream() -> object:
            return await run_stream(
                MESSAGES,
                Answer,
                [long_ep],
                ctx=ctx,
                on_delta=noop,
                record=records.append,
                policy=policy,
                models=models,
            )

        async def public_stream() -> object:
            return await run_stream(
                MESSAGES,
                Answer,
                [long_ep],
                ctx=ctx,
                on_delta=noop,
                record=records.append,
                policy=policy,
                models=public,
            )

        async def bare_stream() -> object:
            parts: list[str] = []
            stream = await create(
                model=LONG_MODEL,
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                    await noop(chunk.choices[0].delta.content)
            return Answer.model_validate_json("".join(parts))

        figures["structured_tool_layer"] = await cpu_per_call(n, layer_tool)
        figures["structured_tool_bare"] = await cpu_per_call(n, bare_tool)
        figures["structured_json_layer"] = await cpu_per_call(n, layer_json)
        figures["structured_json_bare"] = await cpu_per_call(n, bare_json)
        tokens = STREAM_WORDS + 6  # the fake's pieces for LONG
        figures["stream_token_layer"] = await cpu_per_call(n_stream, layer_stream) / tokens
        figures["stream_token_bare"] = await cpu_per_call(n_stream, bare_stream) / tokens
        public_token = await cpu_per_call(n_stream, public_stream) / tokens
        figures["stream_public_token_layer"] = public_token
        figures["stream_public_token_bare"] = figures["stream_token_bare"]
        await client.close()
    return figures


async def usage_figures(rows: int, per_entry: int) -> dict[str, float]:
    """Rows/s appended to the stream and drained into Postgres."""
    from lib.db import migrate as db
    from lib.local.embedded import EmbeddedPostgres, EmbeddedValkey
    from lib.redis.tcp import TcpRedis
    from lib.usage import store as usage
    from lib.usage.store import UsageRecord

    valkey, postgres = EmbeddedValkey(), EmbeddedPostgres()
    redis_url, pg_url = valkey.start(), postgres.start()
    redis = TcpRedis.from_url(redis_url)
    try:
        await db.migrate(pg_url)
        record = UsageRecord(
            user_id="u",
            service_id="s",
            task_template_id="job_summary",
            provider="deepseek",
            model_id="deepseek-chat",
            input_tokens=900,
            output_tokens=300,
            total_tokens=1200,
            latency_ms=1500,
            cost=Decimal("0.0042"),
            is_success=True,
        )
        start = time.perf_counter()
        for _ in range(rows // per_entry):
            await usage.append(redis, [record] * per_entry)
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        written = await usage.drain(redis, pg_url, batch=500, max_batches=10_000)
        drain_s = time.perf_counter() - start
        assert written == rows, (written, rows)
    finally:
        await redis.aclose()
        valkey.stop()
        postgres.stop()
    return {"usage_append_rows_s": rows / append_s, "usage_drain_rows_s": rows / drain_s}


def import_seconds(modules: str, runs: int = 3) -> float:
    """Median cold import time of `modules` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    n, n_stream, rows = (50, 10, 5_000) if args.quick else (300, 40, 50_000)

    port = _free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(port)
        llm = asyncio.run(llm_figures(f"http://127.0.0.1:{port}/v1", n, n_stream))
    finally:
        child.terminate()
        child.wait(10)
    use = asyncio.run(usage_figures(rows, per_entry=4))
    runners = import_seconds("lib.llm.structured, lib.llm.streaming")
    # LangChain's ChatOpenAI is imported on the first chat model built: the worker's real cost.
    first_model = import_seconds("lib.llm.structured, lib.llm.streaming, langchain_openai")
    light = import_seconds("lib.llm.providers, lib.llm.cost, lib.usage.store")

    print(f"\nLLM layer (fake provider on loopback, zero latency; n={n}, streams={n_stream})")
    print(f"{'figure':44} {'layer':>10} {'bare SDK':>10} {'overhead':>10}")
    for label, key, unit in (
        ("CPU ms / structured call (tool calling)", "structured_tool", "ms"),
        ("CPU ms / structured call (JSON mode)", "structured_json", "ms"),
        ("CPU µs / streamed token", "stream_token", "µs"),
        ("CPU µs / streamed token, no dict-chunk hook", "stream_public_token", "µs"),
    ):
        scale = 1000 if unit == "µs" else 1
        layer, bare = llm[f"{key}_layer"] * scale, llm[f"{key}_bare"] * scale
        print(f"{label:44} {layer:10.3f} {bare:10.3f} {layer / bare:9.2f}x")
    print(f"{'usage append to stream (rows/s, 4 per XADD)':44} {use['usage_append_rows_s']:10.0f}")
    print(f"{'usage drain into Postgres (rows/s, COPY)':44} {use['usage_drain_rows_s']:10.0f}")
    print(f"{'cold import lib.llm runners (s)':44} {runners:10.2f}")
    print(f"{'cold import runners + langchain_openai (s)':44} {first_model:10.2f}")
    print(f"{'cold import providers+cost+usage (s)':44} {light:10.2f}")


if __name__ == "__main__":
    main()
