"""A fake LLM provider speaking the OpenAI chat-completions wire protocol, scripted per model."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_WORD = re.compile(r"\S+\s*|\s+")


class Lockstep:
    """Holds a stream after each piece until its client says it has seen that piece.

    A test that pins "deltas reach the caller as they come" then needs no clock: were the
    caller to buffer the stream, the fake would wait in vain and mark the stream `stalled`
    (or the caller's own read timeout would end it first).
    """

    def __init__(self, timeout_s: float = 10.0) -> None:
        # Generous: a client's first chunk can take seconds on a loaded machine (the first
        # JSON-mode stream imports the SDK's helpers: 1.4 s here when idle).
        self.timeout_s = timeout_s
        self.stalled = False
        self._seen = 0
        self._lock = threading.Lock()

    def saw(self) -> None:
        """The client got one more piece (called from the client's side)."""
        with self._lock:
            self._seen += 1

    async def wait_seen(self, n: int) -> None:
        """Wait until the client has seen `n` pieces, or `timeout_s` (then `stalled`)."""
        deadline = time.monotonic() + self.timeout_s
        while not self.stalled:
            with self._lock:
                if self._seen >= n:
                    return
            if time.monotonic() > deadline:
                self.stalled = True
                return
            await asyncio.sleep(0.002)


@dataclass(frozen=True)
class Reply:
    """Answer with `content` (as a tool call when the request offers tools)."""

    content: str
    input_tokens: int = 11
    output_tokens: int | None = None  # default: one per streamed piece
    delay_s: float = 0.0  # before the response starts
    token_delay_s: float = 0.0  # between streamed pieces
    usage: bool = True  # send a usage block at all
    lockstep: Lockstep | None = None  # stream the next piece once the client saw the last
    together: int = 1  # answer once this many requests for the model arrived (or after 10 s)


@dataclass(frozen=True)
class Fail:
    """Answer with an HTTP error."""

    status: int = 500
    message: str = "scripted failure"


@dataclass(frozen=True)
class Break:
    """Stream `content`'s pieces, then drop the connection mid-body."""

    content: str


Step = Reply | Fail | Break


def pieces(content: str) -> list[str]:
    """How the fake splits content into streamed deltas (a word and its trailing space)."""
    return _WORD.findall(content) or [""]


@dataclass
class FakeProvider:
    """Scripted answers per model name; unscripted requests get the model's or the `default`."""

    default: Step = field(default_factory=lambda: Fail(500, "unscripted request"))
    defaults: dict[str, Step] = field(default_factory=dict)  # per model name
    keep_requests: bool = True  # off for long benchmark runs
    requests: list[dict[str, Any]] = field(default_factory=list)
    _scripts: dict[str, deque[Step]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, model: str, *steps: Step) -> None:
        """Queue answers for the next requests naming `model`."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(steps)

    def reset(self) -> None:
        """Forget scripts and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.defaults.clear()
            self.default = Fail(500, "unscripted request")

    def calls(self, model: str | None = None) -> int:
        """How many requests arrived (for one model, or all)."""
        with self._lock:
            return sum(1 for r in self.requests if model is None or r.get("model") == model)

    def _next(self, body: dict[str, Any]) -> Step:
        model = str(body.get("model"))
        with self._lock:
            if self.keep_requests:
                self.requests.append(body)
            queue = self._scripts.get(model)
            return queue.popleft() if queue else self.defaults.get(model, self.default)

    async def _gather(self, model: str, n: int) -> None:
        """Wait until `n` requests for `model` have arrived: they are then in flight together."""
        deadline = time.monotonic() + 10.0
        while self.calls(model) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    def app(self) -> Starlette:
        """The ASGI app (`POST /v1/chat/completions`)."""
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        step = self._next(body)
        if isinstance(step, Fail):
            error = {"error": {"message": step.message, "type": "server_error", "code": None}}
            return JSONResponse(error, status_code=step.status)
        if isinstance(step, Reply) and step.together > 1:
            await self._gather(str(body.get("model")), step.together)
        if isinstance(step, Reply) and step.delay_s:
            await asyncio.sleep(step.delay_s)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _stream(body, step, include_usage), media_type="text/event-stream"
            )
        assert isinstance(step, Reply), "Break only applies to streamed requests"
        return JSONResponse(_completion(body, step))


def _tool_name(body: dict[str, Any]) -> str | None:
    tools = body.get("tools") or []
    return str(tools[0]["function"]["name"]) if tools else None


def _usage(step: Reply, produced: int) -> dict[str, int]:
    output = produced if step.output_tokens is None else step.output_tokens
    return {
        "prompt_tokens": step.input_tokens,
        "completion_tokens": output,
        "total_tokens": step.input_tokens + output,
    }


def _completion(body: dict[str, Any], step: Reply) -> dict[str, Any]:
    tool = _tool_name(body)
    if tool is not None:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": tool, "arguments": step.content},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": step.content}, "stop"
    answer: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if step.usage:
        answer["usage"] = _usage(step, len(pieces(step.content)))
    return answer


def _chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None) -> str:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n"


async def _stream(body: dict[str, Any], step: Step, include_usage: bool) -> AsyncIterator[str]:
    assert not isinstance(step, Fail)
    parts = pieces(step.content)
    yield _chunk(body, {"role": "assistant", "content": ""}, None)
    lockstep = step.lockstep if isinstance(step, Reply) else None
    for seen, part in enumerate(parts, 1):
        if isinstance(step, Reply) and step.token_delay_s:
            await asyncio.sleep(step.token_delay_s)
        yield _chunk(body, {"content": part}, None)
        if lockstep is not None:
            await lockstep.wait_seen(seen)
    if isinstance(step, Break):
        raise ConnectionAbortedError("scripted connection drop")
    yield _chunk(body, {}, "stop")
    if include_usage and step.usage:
        final: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body.get("model"),
            "choices": [],
            "usage": _usage(step, len(parts)),
        }
        yield f"data: {json.dumps(final)}\n\n"
    yield "data: [DONE]\n\n"
