"""Price table (per million tokens, from settings) and the cost of one call."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from lib.settings import get_settings

logger = logging.getLogger(__name__)

DEFAULT_CURRENCY = "CNY"
_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.00000001")  # matches numeric(18, 8) in llm_usage_logs


@dataclass(frozen=True)
class Price:
    """Input and output price per million tokens, in one currency."""

    input: Decimal
    output: Decimal
    currency: str


PriceTable = Mapping[str, Mapping[str, float | str]]


def price_of(model: str, prices: PriceTable | None = None) -> Price | None:
    """The price of `model` from the table (settings by default); None when unlisted."""
    table = get_settings().prices if prices is None else prices
    entry = table.get(model)
    if entry is None:
        return None
    return Price(
        input=Decimal(str(entry.get("input", 0))),
        output=Decimal(str(entry.get("output", 0))),
        currency=str(entry.get("currency", DEFAULT_CURRENCY)),
    )


def cost(
    model: str, input_tokens: int, output_tokens: int, *, prices: PriceTable | None = None
) -> tuple[Decimal, str]:
    """What a call cost: `(amount, currency)`; an unlisted model costs 0 (and is logged)."""
    price = price_of(model, prices)
    if price is None:
        logger.warning("no price for model %s; cost recorded as 0", model)
        return Decimal(0), DEFAULT_CURRENCY
    amount = (price.input * input_tokens + price.output * output_tokens) / _MILLION
    return amount.quantize(_QUANTUM), price.currency
