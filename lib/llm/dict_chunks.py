"""Streamed chat chunks as the wire's JSON dicts: the per-chunk cost of the openai SDK, halved.

`ChatOpenAI._astream` calls `async_client.create(stream=True, ...)`, gets typed
`ChatCompletionChunk` objects from the openai SDK and turns each straight back into a
dict with `model_dump()` before reading it. Building those objects (`construct_type`
over every nested field) is most of the worker's CPU per token: ~0.28 ms of
LangChain + SDK work per chunk, about two thirds of it in that round trip.

`DictChunkCompletions` stands in for `root_async_client.chat.completions` on a chat
model. A streaming `create` goes through the SDK's own `post` with `cast_to=object`,
which the SDK documents for raw JSON: same request building, HTTP client, status
errors, SSE decoding and in-stream `error` handling, but each chunk arrives as the
dict LangChain wanted. Everything else (non-streaming calls, `with_raw_response`, the
`response_format` stream helper, which uses `root_async_client`) is the SDK's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from openai import AsyncOpenAI

# `create()` keyword arguments that are request options, not body fields.
_OPTIONS = (
    ("extra_headers", "headers"),
    ("extra_query", "params"),
    ("extra_body", "extra_json"),
    ("timeout", "timeout"),
)


class DictChunkCompletions:
    """`chat.completions` whose streams yield plain dicts (see the module docstring)."""

    def __init__(self, root: AsyncOpenAI) -> None:
        self._root = root
        self._completions = root.chat.completions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)

    async def create(self, **params: Any) -> Any:
        """As `AsyncCompletions.create`; a stream yields `dict` chunks.

        Raises:
            openai.APIStatusError, openai.APIConnectionError, openai.APITimeoutError:
                as the SDK raises them.
        """
        if not params.get("stream"):
            return await self._completions.create(**params)
        from openai import AsyncStream

        options: dict[str, Any] = {}
        for name, option in _OPTIONS:
            if name in params:
                options[option] = params.pop(name)
        return await self._root.post(
            "/chat/completions",
            body=params,
            cast_to=object,
            options=cast(Any, options),
            stream=True,
            stream_cls=AsyncStream[object],
        )
