"""An OpenAI-compatible offline model server: the keyword baseline that runs without keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lib.local.offline.answers import ANSWERS, IMAGE_TEXT, MODEL_NAME, answer
from lib.local.offline.ocr import BadImage, OcrReader, OcrUnavailable
from lib.local.serve import ServerThread
from lib.templates.prompts import extract_inputs, parse_marker

logger = logging.getLogger(__name__)

CHUNK_CHARS = 16  # ≈ 4 tokens per streamed chunk
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
NO_MARKER = (
    "offline-keyword-baseline: no slotline task marker found. This offline server only "
    "answers slotline task prompts (first system line 'slotline-task: <template>; lang: <lang>')."
)


class RequestError(Exception):
    """A request the server refuses, answered in OpenAI's error shape."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param

    def response(self) -> JSONResponse:
        """The 400 response."""
        body = {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=400)


def approx_tokens(text: str) -> int:
    """Approximate token count: characters / 4 (no tokenizer tables needed)."""
    return max(1, math.ceil(len(text) / 4))


def _texts(messages: list[Any]) -> tuple[str, str, list[str]]:
    """(system text, all text, image URLs) of the messages."""
    system: list[str] = []
    every: list[str] = []
    images: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            raise RequestError("each message must be an object", code="invalid_messages")
        content = message.get("content")
        parts = content if isinstance(content, list) else [content]
        for part in parts:
            if isinstance(part, dict):
                if part.get("type") in _IMAGE_PARTS:
                    images.append(_image_url(part))
                    continue
                text = str(part.get("text") or "")
            else:
                text = str(part or "")
            every.append(text)
            if message.get("role") in ("system", "developer"):
                system.append(text)
    return "\n".join(system), "\n".join(every), images


def _image_url(part: dict[str, Any]) -> str:
    """The URL of an image part (`image_url: {url}` or `image_url: "..."`)."""
    value = part.get("image_url") or part.get("image") or ""
    return str(value.get("url", "") if isinstance(value, dict) else value)


ImageReader = Callable[[str], str]


@dataclass(frozen=True)
class Completion:
    """What the server answers to one request, before it is put on the wire."""

    text: str
    tool_name: str | None
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return approx_tokens(self.text)

    def usage(self) -> dict[str, int]:
        """OpenAI's usage object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def has_images(body: dict[str, Any]) -> bool:
    """Whether a request body carries image parts (reading them blocks: use a thread)."""
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, dict)
        and isinstance(m.get("content"), list)
        and any(isinstance(p, dict) and p.get("type") in _IMAGE_PARTS for p in m["content"])
        for m in messages
    )


def complete(body: dict[str, Any], read_image: ImageReader | None = None) -> Completion:
    """Answer a chat-completions request body (no I/O but `read_image`, no clock).

    Images are read with `read_image` (OCR) only when the task has no job text: the
    text read from them is the job description the answer is computed from.

    Raises:
        RequestError: malformed body, or an image that cannot be read.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", code="invalid_messages")
    system, every, images = _texts(messages)
    marker = parse_marker(system) or parse_marker(every)
    image_text = ""
    if marker is not None and marker[0] in ANSWERS:
        template, lang = marker
        inputs = extract_inputs(every)
        if images and "job_text" not in inputs:
            image_text = _read_images(images, read_image)
            inputs[IMAGE_TEXT] = image_text
        payload = answer(template, lang, inputs)
        text = json.dumps(payload, ensure_ascii=False)
    else:
        text = NO_MARKER
    tool_name = _tool_name(body)
    extra = json.dumps(body.get("tools") or body.get("response_format") or "")
    prompt_tokens = approx_tokens(every + image_text) + approx_tokens(extra) - 1
    return Completion(text, tool_name, prompt_tokens)


def _read_images(urls: list[str], read_image: ImageReader | None) -> str:
    """The text of every image, in order.

    Raises:
        RequestError: no reader, the OCR library is missing, or an image is unreadable.
    """
    if read_image is None:
        raise RequestError(
            "this offline-keyword-baseline has no image reader",
            code="image_not_supported",
            param="messages",
        )
    try:
        return "\n".join(read_image(url) for url in urls)
    except OcrUnavailable as exc:
        raise RequestError(str(exc), code="image_not_supported", param="messages") from exc
    except BadImage as exc:
        raise RequestError(str(exc), code="invalid_image", param="messages") from exc


def _tool_name(body: dict[str, Any]) -> str | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name"))
    first = tools[0].get("function", {}) if isinstance(tools[0], dict) else {}
    return str(first.get("name", "answer"))


def _pieces(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]


class OfflineModelApp:
    """The request handlers, with the configured latency profile."""

    def __init__(self, ttft_ms: float = 0.0, tokens_per_s: float = 0.0) -> None:
        self.ttft_s = max(0.0, ttft_ms) / 1000
        self.tokens_per_s = max(0.0, tokens_per_s)
        self.ocr = OcrReader()  # builds its engine on the first image

    async def models(self, request: Request) -> Response:
        """`GET /v1/models`."""
        model = {"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "slotline"}
        return JSONResponse({"object": "list", "data": [model]})

    async def chat(self, request: Request) -> Response:
        """`POST /v1/chat/completions`, streaming or not.

        The configured time to first token counts from the request's arrival, so the
        baseline's own computing (a few ms) is part of it, as a real model's is.
        """
        arrived = time.monotonic()
        try:
            body = await request.json()
        except ValueError:
            return RequestError("the body is not JSON", code="invalid_json").response()
        if not isinstance(body, dict):
            return RequestError("the body must be an object", code="invalid_json").response()
        try:
            if has_images(body):
                # OCR takes seconds of CPU: off the event loop, so other requests go on.
                result = await asyncio.to_thread(complete, body, self.ocr.read)
            else:
                result = complete(body)
        except RequestError as exc:
            logger.info("offline model refused a request: %s", exc.code)
            return exc.response()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            options = body.get("stream_options") or {}
            include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            stream = self._stream(result, completion_id, include_usage, arrived)
            return StreamingResponse(stream, media_type="text/event-stream")
        await asyncio.sleep(self._ttft_left(arrived) + self._pace(result.completion_tokens))
        message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
        if result.tool_name is not None:
            message["content"] = None
            message["tool_calls"] = [_tool_call(completion_id, result)]
        finish = "tool_calls" if result.tool_name is not None else "stop"
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL_NAME,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                ],
                "usage": result.usage(),
            }
        )

    def _ttft_left(self, arrived: float) -> float:
        return max(0.0, self.ttft_s - (time.monotonic() - arrived))

    def _pace(self, tokens: int) -> float:
        return tokens / self.tokens_per_s if self.tokens_per_s else 0.0

    async def _stream(
        self, result: Completion, completion_id: str, include_usage: bool, arrived: float
    ) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL_NAME,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        await asyncio.sleep(self._ttft_left(arrived))
        tool = result.tool_name
        if tool is None:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
        else:
            call = _tool_call(completion_id, result) | {"index": 0}
            call["function"] = {"name": tool, "arguments": ""}
            yield chunk({"role": "assistant", "content": None, "tool_calls": [call]})
        for index, piece in enumerate(_pieces(result.text)):
            if index:
                await asyncio.sleep(self._pace(approx_tokens(piece)))
            if tool is None:
                yield chunk({"content": piece})
            else:
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls" if tool is not None else "stop")
        if include_usage:
            final = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL_NAME,
                "choices": [],
                "usage": result.usage(),
            }
            yield f"data: {json.dumps(final)}\n\n"
        yield "data: [DONE]\n\n"


def _tool_call(completion_id: str, result: Completion) -> dict[str, Any]:
    return {
        "id": f"call_{completion_id[-24:]}",
        "type": "function",
        "function": {"name": result.tool_name, "arguments": result.text},
    }


def create_app(ttft_ms: float = 0.0, tokens_per_s: float = 0.0) -> Starlette:
    """The offline model as an ASGI app.

    Args:
        ttft_ms: delay before the first token (or the whole answer when not streaming).
        tokens_per_s: output pace; 0 answers as fast as possible.

    Returns:
        A Starlette app serving `/v1/chat/completions` and `/v1/models` (also without `/v1`).
    """
    handlers = OfflineModelApp(ttft_ms, tokens_per_s)
    routes = []
    for prefix in ("/v1", ""):
        routes.append(Route(f"{prefix}/chat/completions", handlers.chat, methods=["POST"]))
        routes.append(Route(f"{prefix}/models", handlers.models, methods=["GET"]))
    return Starlette(routes=routes)


@dataclass
class OfflineModel:
    """A running offline model server; `url` is its OpenAI-style base URL (ends in `/v1`)."""

    server: ServerThread

    @property
    def url(self) -> str:
        return f"{self.server.url}/v1"

    def stop(self) -> None:
        """Stop the server."""
        self.server.stop()


def start_offline_model(
    *,
    ttft_ms: float = 0.0,
    tokens_per_s: float = 0.0,
    host: str = "127.0.0.1",
    port: int | None = None,
) -> OfflineModel:
    """Serve the offline model on loopback in a background thread.

    Args:
        ttft_ms: delay before the first token.
        tokens_per_s: output pace; 0 = as fast as possible.
        host: interface to bind (loopback by default).
        port: port to bind; a free one when None.

    Returns:
        The running server's handle (`.url`, `.stop()`).

    Raises:
        RuntimeError: the server did not start.
    """
    server = ServerThread(create_app(ttft_ms, tokens_per_s), host=host, port=port)
    server.start()
    logger.info("offline model (%s) on %s", MODEL_NAME, server.url)
    return OfflineModel(server)


def main(argv: list[str] | None = None) -> None:
    """Run the offline model server in the foreground (`python -m lib.local.offline.model`)."""
    import uvicorn

    from lib.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--ttft-ms", type=float, default=settings.offline_ttft_ms)
    parser.add_argument("--tokens-per-s", type=float, default=settings.offline_tokens_per_s)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logger.info("offline model base URL: http://%s:%s/v1", args.host, args.port)
    uvicorn.run(create_app(args.ttft_ms, args.tokens_per_s), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
