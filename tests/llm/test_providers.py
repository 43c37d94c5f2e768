"""Endpoint resolution from settings, the explicit structured-output method, chat model options."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import SecretStr

from lib.errors import ConfigError
from lib.llm.providers import (
    ChatModels,
    ModelEndpoint,
    chat_model,
    json_response_format,
    resolve_endpoint,
    resolve_endpoints,
    structured_method,
)
from lib.routing import ModelId
from lib.settings import Settings


def settings(**values: Any) -> Settings:
    """Settings with no provider configured except what the test passes (env ignored)."""
    base: dict[str, Any] = {
        "openai_compat_base_url": None,
        "openai_compat_api_key": None,
        "deepseek_api_key": None,
        "zhipuai_api_key": None,
        "offline_model_url": None,
    }
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


DS_KEY = SecretStr("ds-secret")
ZP_KEY = SecretStr("zp-secret")


@pytest.mark.parametrize(
    ("model", "values", "expected"),
    [
        # An OpenAI-compatible base URL serves every model, even with provider keys set.
        (
            "deepseek-chat",
            {"openai_compat_base_url": "http://h/v1", "deepseek_api_key": DS_KEY},
            ("http://h/v1", "not-needed", "openai_compat"),
        ),
        (
            "glm-4.5",
            {"openai_compat_base_url": "http://h/v1", "openai_compat_api_key": SecretStr("k")},
            ("http://h/v1", "k", "openai_compat"),
        ),
        (
            "deepseek-reasoner",
            {"deepseek_api_key": DS_KEY, "zhipuai_api_key": ZP_KEY},
            ("https://api.deepseek.com/v1", "ds-secret", "deepseek"),
        ),
        (
            "glm-4.5-flash",
            {"deepseek_api_key": DS_KEY, "zhipuai_api_key": ZP_KEY},
            ("https://open.bigmodel.cn/api/paas/v4", "zp-secret", "zhipu"),
        ),
        # A provider key does not serve the other provider's models: offline does.
        (
            "glm-4.5",
            {"deepseek_api_key": DS_KEY, "offline_model_url": "http://off/v1"},
            ("http://off/v1", "not-needed", "offline"),
        ),
        (
            "deepseek-chat",
            {"deepseek_api_key": DS_KEY, "deepseek_base_url": "http://proxy/v1"},
            ("http://proxy/v1", "ds-secret", "deepseek"),
        ),
    ],
)
def test_resolution_order(
    model: ModelId, values: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    """compat URL → provider key → offline model, with overridable base URLs."""
    endpoint = resolve_endpoint(model, settings(**values))
    assert (endpoint.base_url, endpoint.api_key, endpoint.provider) == expected
    assert endpoint.model_name == model


def test_nothing_configured_is_a_config_error() -> None:
    """No compat URL, key or offline server for a model: ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        resolve_endpoint("glm-4.5", settings(deepseek_api_key=DS_KEY))
    assert caught.value.params == {"model": "glm-4.5"}


def test_unservable_fallbacks_are_skipped_but_the_primary_is_required() -> None:
    """A fallback nothing serves is dropped; an unservable primary raises."""
    only_deepseek = settings(deepseek_api_key=DS_KEY)
    endpoints = resolve_endpoints(["deepseek-chat", "glm-4.5"], only_deepseek)
    assert [e.model_name for e in endpoints] == ["deepseek-chat"]
    with pytest.raises(ConfigError):
        resolve_endpoints(["glm-4.5", "deepseek-chat"], only_deepseek)


@pytest.mark.parametrize(
    ("provider", "model", "method", "json_format"),
    [
        ("deepseek", "deepseek-chat", "function_calling", True),
        ("deepseek", "deepseek-reasoner", "json_mode", True),
        ("zhipu", "glm-4.5", "json_mode", True),
        ("zhipu", "glm-4.1v-thinking-flash", "json_mode", True),
        ("openai_compat", "deepseek-chat", "json_mode", False),
        ("offline", "glm-4.5-flash", "json_mode", False),
    ],
)
def test_structured_method_is_explicit_per_provider(
    provider: Any, model: str, method: str, json_format: bool
) -> None:
    """Each provider/model gets a fixed structured-output method and stream response format."""
    endpoint = ModelEndpoint("http://h/v1", "k", provider, model)
    assert structured_method(endpoint) == method
    assert (json_response_format(endpoint) is not None) is json_format


def test_api_key_stays_out_of_repr() -> None:
    """An endpoint printed or logged never shows its key."""
    assert "ds-secret" not in repr(ModelEndpoint("http://h/v1", "ds-secret", "deepseek", "m"))


def test_chat_model_retries_nothing_and_always_asks_for_stream_usage() -> None:
    """ChatOpenAI: max_retries=0 (retries are ours), stream_usage on, explicit timeout."""
    model = chat_model(
        ModelEndpoint("http://h/v1", "k", "deepseek", "deepseek-chat"), streaming=True, timeout=7.5
    )
    assert (model.max_retries, model.stream_usage, model.request_timeout) == (0, True, 7.5)
    assert model.streaming is True and model.model_name == "deepseek-chat"


def test_chat_models_are_built_once_per_endpoint_and_mode() -> None:
    """The cache hands back the same model for the same endpoint and mode."""
    cache = ChatModels(timeout=5)
    endpoint = ModelEndpoint("http://h/v1", "k", "zhipu", "glm-4.5")
    assert cache.get(endpoint, streaming=False) is cache.get(endpoint, streaming=False)
    assert cache.get(endpoint, streaming=True) is not cache.get(endpoint, streaming=False)


def test_light_modules_do_not_import_langchain() -> None:
    """providers, cost and usage load without LangChain or openai (producer cold start)."""
    code = (
        "import sys, lib.llm.providers, lib.llm.cost, lib.usage.store, lib.db.migrate;"
        "heavy = [m for m in ('langchain_core', 'langchain_openai', 'openai') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_llm_layer_does_not_import_psycopg() -> None:
    """The runners and the usage record load without psycopg (the drain's, not theirs)."""
    code = (
        "import sys, lib.llm.structured, lib.llm.streaming, lib.llm.driver, lib.usage.record,"
        " worker.llm; print(','.join(m for m in ('psycopg', 'lib.usage.store', 'lib.db.migrate')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
