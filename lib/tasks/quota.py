"""User balances: grant and read (the admit and finish scripts debit and refund)."""

from __future__ import annotations

from lib import keys
from lib.redis.port import RedisPort


async def grant(redis: RedisPort, user_id: str, amount: int) -> int:
    """Add `amount` units to a user's balance.

    Returns:
        The new balance.
    """
    return int(await redis.execute("INCRBY", keys.quota(user_id), amount))


async def balance(redis: RedisPort, user_id: str) -> int:
    """The user's current balance (0 when never granted)."""
    value = await redis.execute("GET", keys.quota(user_id))
    return int(value) if value is not None else 0
