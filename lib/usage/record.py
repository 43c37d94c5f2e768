"""One LLM attempt's usage record and its wire form (psycopg-free: the LLM layer imports it).

The record travels typed from the runner that made the attempt to the finish script, which
queues it in the usage stream as JSON (`encode`); the drain (`lib/usage/store.py`) reads it back
(`decode`) into `llm_usage_logs` rows. Rows written by Lua (`lib/tasks/lua/attempt_row.lua`, an
attempt that died) use the same field names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

ERROR_CHARS = 500  # the specified bound of `error_message`
# Columns written by the drain (everything but the serial id), in the table's order:
# the specified ones, then this project's additions (migration 0002).
COLUMNS: tuple[str, ...] = (
    "user_id",
    "service_id",
    "task_template_id",
    "provider",
    "model_id",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "latency_ms",
    "cost",
    "is_stream",
    "is_success",
    "error_message",
    "created_at",
    "source_id",
    "currency",
    "task_id",
    "attempt",
    "is_degraded",
)


def _now() -> datetime:
    return datetime.now(UTC)


def _bounded(value: Any) -> Any:
    return value[:ERROR_CHARS] if isinstance(value, str) else value


class UsageRecord(BaseModel):
    """One LLM attempt (failed and fallback ones too), as the provider reported it.

    Field names are the `llm_usage_logs` columns. Rows queued by an older release
    (`template`, `model`, `success`) still validate: a deploy never strands the
    entries waiting in the usage stream.
    """

    model_config = ConfigDict(frozen=True)

    user_id: str
    service_id: str
    task_template_id: str = Field(validation_alias=AliasChoices("task_template_id", "template"))
    provider: str
    model_id: str = Field(validation_alias=AliasChoices("model_id", "model"))
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    latency_ms: int = 0
    cost: Decimal = Decimal(0)
    is_stream: bool = False
    is_success: bool = Field(validation_alias=AliasChoices("is_success", "success"))
    error_message: Annotated[str | None, BeforeValidator(_bounded)] = None
    created_at: datetime = Field(default_factory=_now)
    # Additions:
    currency: str = "CNY"
    task_id: str | None = None
    attempt: int | None = None
    is_degraded: bool = False  # an attempt of a task that ended with a degraded result

    def row(self, source_id: str) -> tuple[Any, ...]:
        """The values in `COLUMNS` order."""
        values = self.model_dump()
        values["source_id"] = source_id
        return tuple(values[column] for column in COLUMNS)


def encode(records: Sequence[UsageRecord]) -> str:
    """A batch of records as the JSON array one stream entry carries."""
    return json.dumps([r.model_dump(mode="json") for r in records], separators=(",", ":"))


def decode(entry_id: str, payload: str) -> list[tuple[Any, ...]]:
    """A stream entry's records as table rows (`source_id` = entry id + index).

    Raises:
        ValueError: the payload is not a JSON array of usage records.
    """
    items = json.loads(payload)
    if not isinstance(items, list):
        raise ValueError("usage entry is not a JSON array")
    return [
        UsageRecord.model_validate(item).row(f"{entry_id}:{index}")
        for index, item in enumerate(items)
    ]
