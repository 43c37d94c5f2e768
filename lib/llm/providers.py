"""Model endpoints resolved from settings, and the LangChain chat models that call them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lib.errors import ConfigError
from lib.routing import PROVIDERS, ModelId
from lib.settings import Settings, secret

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

logger = logging.getLogger(__name__)

EndpointProvider = Literal["deepseek", "zhipu", "openai_compat", "offline"]
StructuredMethod = Literal["function_calling", "json_mode", "json_schema"]

# The SDK refuses an empty key; servers that need none (offline, self-hosted) ignore it.
_NO_KEY = "not-needed"


@dataclass(frozen=True)
class ModelEndpoint:
    """Where one model is served: base URL, key, who serves it, the model name on the wire."""

    base_url: str
    api_key: str = field(repr=False)
    provider: EndpointProvider
    model_name: str


def resolve_endpoint(model: ModelId, settings: Settings) -> ModelEndpoint:
    """The endpoint serving `model`.

    Order: an OpenAI-compatible base URL (serves every model), then the model's
    provider key (DeepSeek for `deepseek-*`, Zhipu for `glm-*`), then the offline
    model server.

    Raises:
        ConfigError: nothing is configured that can serve `model`.
    """
    if settings.openai_compat_base_url:
        key = secret(settings.openai_compat_api_key) or _NO_KEY
        return ModelEndpoint(settings.openai_compat_base_url, key, "openai_compat", model)
    provider = PROVIDERS[model]
    if provider == "deepseek" and settings.deepseek_api_key is not None:
        key = settings.deepseek_api_key.get_secret_value()
        return ModelEndpoint(settings.deepseek_base_url, key, "deepseek", model)
    if provider == "zhipu" and settings.zhipuai_api_key is not None:
        key = settings.zhipuai_api_key.get_secret_value()
        return ModelEndpoint(settings.zhipuai_base_url, key, "zhipu", model)
    if settings.offline_model_url:
        return ModelEndpoint(settings.offline_model_url, _NO_KEY, "offline", model)
    raise ConfigError(f"no endpoint for model {model}", model=model)


def resolve_endpoints(models: Sequence[ModelId], settings: Settings) -> list[ModelEndpoint]:
    """Endpoints for a route's models in order; fallbacks nothing can serve are skipped.

    Raises:
        ConfigError: the first (primary) model cannot be served.
    """
    endpoints: list[ModelEndpoint] = []
    for index, model in enumerate(models):
        try:
            endpoints.append(resolve_endpoint(model, settings))
        except ConfigError:
            if index == 0:
                raise
            logger.warning("fallback model %s has no endpoint; skipped", model)
    return endpoints


def structured_method(endpoint: ModelEndpoint) -> StructuredMethod:
    """How structured output is requested from an endpoint (always explicit).

    DeepSeek's chat model honours a forced tool choice; its reasoner and Zhipu
    (whose `tool_choice` only accepts `auto`) get JSON mode, as do
    self-hosted and offline servers, where JSON mode is the most widely served.
    """
    if endpoint.provider == "deepseek" and endpoint.model_name != "deepseek-reasoner":
        return "function_calling"
    return "json_mode"


def json_response_format(endpoint: ModelEndpoint) -> dict[str, Any] | None:
    """The `response_format` a streamed JSON answer is requested with (None: prompt only)."""
    if endpoint.provider in ("deepseek", "zhipu"):
        return {"type": "json_object"}
    return None


def chat_model(
    endpoint: ModelEndpoint,
    *,
    streaming: bool,
    timeout: float,
    http_async_client: Any | None = None,
    dict_chunks: bool = True,
) -> ChatOpenAI:
    """A LangChain chat model for one endpoint.

    Retries are ours (`max_retries=0`), usage is always requested on streams
    (`stream_usage=True`) and every request carries `timeout` (connect, read).

    Args:
        endpoint: where and what to call.
        streaming: whether `ainvoke` streams under the hood.
        timeout: seconds for the HTTP request (connect, read).
        http_async_client: an `httpx2.AsyncClient` to reuse (pooling, tests).
        dict_chunks: hand plain streams to LangChain as dicts (`lib/llm/dict_chunks.py`,
            the one private hook, kept for its measured cost: docs/decisions.md); False
            leaves the chat model exactly as its public constructor built it.
    """
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from lib.llm.dict_chunks import DictChunkCompletions

    model = ChatOpenAI(
        model=endpoint.model_name,
        base_url=endpoint.base_url,
        api_key=SecretStr(endpoint.api_key),
        streaming=streaming,
        stream_usage=True,
        max_retries=0,
        timeout=timeout,
        # LangChain's chunk timeout uses asyncio.wait_for, which on Python 3.11 can swallow
        # a cancellation; the streaming runner bounds the gap between chunks itself.
        stream_chunk_timeout=None,
        http_async_client=http_async_client,
    )
    if dict_chunks:
        # Streamed chunks reach LangChain as dicts, without the SDK's typed detour.
        model.async_client = DictChunkCompletions(model.root_async_client)
    return model


class ChatModels:
    """Builds one chat model per (endpoint, streaming) and keeps it (owned by a process or test)."""

    def __init__(
        self, *, timeout: float, http_async_client: Any | None = None, dict_chunks: bool = True
    ) -> None:
        self.timeout = timeout
        self._http = http_async_client
        self._dict_chunks = dict_chunks
        self._models: dict[tuple[ModelEndpoint, bool], ChatOpenAI] = {}
        self._structured: dict[tuple[ModelEndpoint, type[BaseModel]], Runnable[Any, Any]] = {}

    def get(self, endpoint: ModelEndpoint, *, streaming: bool) -> ChatOpenAI:
        """The chat model for `endpoint`, built on first use."""
        key = (endpoint, streaming)
        model = self._models.get(key)
        if model is None:
            model = chat_model(
                endpoint,
                streaming=streaming,
                timeout=self.timeout,
                http_async_client=self._http,
                dict_chunks=self._dict_chunks,
            )
            self._models[key] = model
        return model

    def structured(self, endpoint: ModelEndpoint, schema: type[BaseModel]) -> Runnable[Any, Any]:
        """`with_structured_output(schema, method=<the endpoint's>, include_raw=True)`, kept.

        The runnable answers `{"raw": AIMessage, "parsed": model | None,
        "parsing_error": Exception | None}`; `raw` carries the usage.
        """
        key = (endpoint, schema)
        runnable = self._structured.get(key)
        if runnable is None:
            model = self.get(endpoint, streaming=False)
            runnable = model.with_structured_output(
                schema, method=structured_method(endpoint), include_raw=True
            )
            self._structured[key] = runnable
        return runnable

    def streaming(self, endpoint: ModelEndpoint) -> Runnable[Any, Any]:
        """The streaming chat model, asked for a JSON object where the provider supports it."""
        model = self.get(endpoint, streaming=True)
        response_format = json_response_format(endpoint)
        return model.bind(response_format=response_format) if response_format else model
