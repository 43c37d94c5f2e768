"""The worker's runner: render the task's prompt and call the LLM layer on the leased model."""

from __future__ import annotations

from typing import Any, cast

from lib.llm.attempt import CallContext, RetryPolicy
from lib.llm.providers import ChatModels, ModelEndpoint, resolve_endpoints
from lib.llm.streaming import run_stream
from lib.llm.structured import run_structured, source_text
from lib.redis.port import RedisPort
from lib.routing import ModelId
from lib.settings import Settings
from lib.tasks.message import TaskMessage
from lib.templates.prompts import render
from lib.templates.schemas import OUTPUT_MODELS
from lib.templates.variables import validate_variables
from worker.delivery import Delta, Fallback, Record, Restart, RunOutput


def model_label(endpoint: ModelEndpoint | None, fallback: str) -> str:
    """The model name shown to users; the offline baseline says what it is."""
    if endpoint is None:
        return fallback
    if endpoint.provider == "offline":
        return f"{endpoint.model_name} (offline keyword baseline)"
    return endpoint.model_name


class LLMRunner:
    """Runs tasks through LangChain; one `ChatModels` cache per worker process."""

    def __init__(
        self, settings: Settings, redis: RedisPort, *, http_async_client: Any | None = None
    ) -> None:
        self.settings = settings
        self.policy = RetryPolicy.from_settings(settings)
        self._owned_http: Any = None
        if http_async_client is None:
            # One HTTP client for every model call of this process, closed with the worker.
            from openai import DefaultAsyncHttpxClient

            http_async_client = self._owned_http = DefaultAsyncHttpxClient()
        self.models = ChatModels(timeout=self.policy.timeout_s, http_async_client=http_async_client)

    async def aclose(self) -> None:
        """Close the HTTP client this runner created."""
        if self._owned_http is not None:
            await self._owned_http.aclose()
            self._owned_http = None

    async def run(
        self,
        msg: TaskMessage,
        model: ModelId,
        *,
        on_delta: Delta,
        on_restart: Restart,
        on_fallback: Fallback,
        record: Record,
    ) -> RunOutput:
        """Run `msg` on the leased `model`, then the route's later fallbacks if it fails.

        Before the first call on a fallback model, `on_fallback` moves the task to it.

        Raises:
            OutputInvalid: a streamed answer did not validate.
            LLMError: every model failed (streaming tasks).
            ConfigError: nothing can serve the model.
        """
        variables = validate_variables(msg.template, msg.variables)
        messages = render(msg.template, msg.lang, variables)
        schema = OUTPUT_MODELS[msg.template]
        models = msg.models[msg.models.index(model) :] if model in msg.models else (model,)
        endpoints = resolve_endpoints(models, self.settings)
        ctx = CallContext(user_id=msg.user_id, service_id=msg.service_id, template=msg.template)

        async def switch(endpoint: ModelEndpoint) -> None:
            # Endpoints are resolved from the route's model ids: the name is one of them.
            await on_fallback(cast(ModelId, endpoint.model_name))

        if msg.mode == "stream":
            streamed = await run_stream(
                messages,
                schema,
                endpoints,
                ctx=ctx,
                on_delta=on_delta,
                on_restart=on_restart,
                record=record,
                on_switch=switch,
                policy=self.policy,
                models=self.models,
                prices=self.settings.prices,
            )
            return RunOutput(
                streamed.value.model_dump(mode="json"), model_label(streamed.endpoint, model)
            )
        answer = await run_structured(
            messages,
            schema,
            endpoints,
            ctx=ctx,
            record=record,
            on_switch=switch,
            policy=self.policy,
            models=self.models,
            degraded_source=source_text(msg.template, variables.model_dump()),
            prices=self.settings.prices,
        )
        # A degraded result names the last model tried: the one the task hash is on.
        last = answer.usage[-1].model_id if answer.usage else model
        return RunOutput(
            answer.value.model_dump(mode="json"),
            model_label(answer.endpoint, last),
            degraded=answer.degraded,
        )
