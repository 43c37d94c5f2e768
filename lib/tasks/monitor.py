"""Queue monitoring: backpressure, slot pools and recent waits of every queue, in one pipeline."""

from __future__ import annotations

from typing import Any

from lib import keys
from lib.redis.port import Arg, RedisPort
from lib.routing import QUEUES, all_pools, slot_limit
from lib.settings import Settings


def wait_stats(samples: list[int]) -> dict[str, int | None]:
    """p50 / max / count of recent wait times (ms); None when there are none."""
    if not samples:
        return {"p50_ms": None, "max_ms": None, "count": 0}
    ordered = sorted(samples)
    return {
        "p50_ms": ordered[(len(ordered) - 1) // 2],
        "max_ms": ordered[-1],
        "count": len(ordered),
    }


def _ints(values: list[Any] | None) -> list[int]:
    out: list[int] = []
    for value in values or []:
        try:
            out.append(int(float(value)))
        except (TypeError, ValueError):
            continue
    return out


async def snapshot(redis: RedisPort, settings: Settings, now_ms: int) -> dict[str, Any]:
    """Every queue's waiting / in flight / limit and every slot pool's active leases / limit.

    Args:
        redis: the Redis port.
        settings: limits.
        now_ms: leases that expire before this are not counted as active.

    Returns:
        `{"queues": [...], "pools": [...]}`.

    Raises:
        RedisReplyError: Redis refused a command.
    """
    pools = all_pools()
    commands: list[list[Arg]] = []
    for queue in QUEUES:
        commands.append(["ZCARD", keys.queue_waiting(queue)])
        commands.append(["GET", keys.queue_pending(queue)])
        commands.append(["LRANGE", keys.queue_waits(queue), 0, -1])
    for model, tier in pools:
        commands.append(["ZCOUNT", keys.model_pool(model, tier), f"({now_ms}", "+inf"])
    replies = await redis.pipeline(commands)
    queues: list[dict[str, Any]] = []
    for i, queue in enumerate(QUEUES):
        waiting, pending, waits = replies[3 * i : 3 * i + 3]
        pending_n = int(pending or 0)
        queues.append(
            {
                "queue_id": queue,
                "waiting": int(waiting),
                "in_flight": max(0, pending_n - int(waiting)),
                "pending": pending_n,
                "limit": settings.queue_max_pending,
                "wait": wait_stats(_ints(waits)),
            }
        )
    base = 3 * len(QUEUES)
    pool_rows = [
        {
            "model_id": model,
            "tier": tier,
            "active": int(replies[base + j]),
            "limit": slot_limit(settings, model),
        }
        for j, (model, tier) in enumerate(pools)
    ]
    return {"queues": queues, "pools": pool_rows}
