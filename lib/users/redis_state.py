"""A user's live state in Redis, found and erased (`DELETE /api/me`).

Every task of a user has an event stream `cs:events:{user}:{service}:{task}`; the task
hashes (`task:{id}`) and idempotency keys are found through them. The streams are found
by `SCAN MATCH cs:events:{user}:*`, acceptable for a rare call: SCAN walks the whole
keyspace, so it costs ⌈keys in the database / SCAN_COUNT⌉ commands (1 for up to 1,000
keys, 100 for 100,000), plus one HMGET per stream (one pipelined round trip), two per
queued task (its cancel: HGETALL + the cancel script), and ⌈keys to delete / DEL_BATCH⌉
DELs. A user with 20 tasks in a database of 10,000 keys: 10 + 20 + 1 = 31 commands.

Erasing is two calls around the Postgres erase, so that a refusal changes nothing there:
`prepare()` finds the state and cancels what waits (a running task refuses the erase:
its worker would write the result back after us), `delete()` deletes the keys. Both are
safe to repeat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lib import keys
from lib.clock import now_ms
from lib.errors import AccountBusy, NotFound, TaskNotCancellable
from lib.redis.port import RedisPort
from lib.routing import TEMPLATES
from lib.tasks.store import TaskStore
from lib.tasks.view import Field

logger = logging.getLogger(__name__)

SCAN_COUNT = 1000
DEL_BATCH = 500
# A running task usually ends within this; the client is told to come back then.
BUSY_RETRY_AFTER_S = 10


@dataclass(frozen=True)
class RedisState:
    """What a user has in Redis: event streams, task hashes, and keys found through them."""

    user_id: str
    streams: tuple[str, ...]
    tasks: tuple[str, ...]  # task ids whose hash exists and is the user's
    idem: tuple[str, ...]  # their idempotency digests (and their services')
    cancelled: int  # queued tasks cancelled by `prepare()`
    services: tuple[str, ...] = ()  # service ids (their streams end in `:service`)

    def keys(self) -> list[str]:
        """Every key `delete()` removes (the user's quota and locks included)."""
        found = [*self.streams, *(keys.task(t) for t in self.tasks)]
        found.extend(keys.idem(digest) for digest in self.idem)
        found.append(keys.quota(self.user_id))
        found.extend(keys.user_lock(self.user_id, template) for template in TEMPLATES)
        found.extend(keys.service(s) for s in self.services)
        found.append(keys.services_pending(self.user_id))
        return found


async def scan(redis: RedisPort, match: str, *, count: int = SCAN_COUNT) -> list[str]:
    """Every key matching a SCAN pattern (the whole keyspace is walked once).

    Raises:
        RedisUnavailable: Redis cannot be reached.
    """
    cursor, found = "0", list[str]()
    while True:
        reply = await redis.execute("SCAN", cursor, "MATCH", match, "COUNT", count)
        cursor = str(reply[0])
        found.extend(str(key) for key in reply[1])
        if cursor == "0":
            return sorted(set(found))


async def prepare(redis: RedisPort, store: TaskStore, user_id: str) -> RedisState:
    """Find the user's Redis state and cancel their queued tasks (refunded as usual).

    Raises:
        AccountBusy: 409, a task of theirs is running (queued ones are cancelled
            already; nothing else changed). Try again when it has ended.
        RedisUnavailable: Redis cannot be reached.
    """
    streams = await scan(redis, keys.events_match(user_id))
    services = [keys.events_service_id(s) for s in streams if keys.is_service_events(s)]
    task_ids = [keys.events_task_id(s) for s in streams if not keys.is_service_events(s)]
    replies = (
        await redis.pipeline(
            [("HMGET", keys.task(t), Field.USER, Field.STATUS, Field.IDEM) for t in task_ids]
        )
        if task_ids
        else []
    )
    owned: list[str] = []
    digests: list[str] = []
    running: list[str] = []
    queued: list[str] = []
    for task_id, (owner, status, digest) in zip(task_ids, replies, strict=True):
        if owner != user_id:
            continue  # the stream outlived its task hash, or it is not a task's stream
        owned.append(task_id)
        if digest:
            digests.append(str(digest))
        if status == "running":
            running.append(task_id)
        elif status == "queued":
            queued.append(task_id)
    if running:
        raise AccountBusy(f"{len(running)} tasks running", retry_after=BUSY_RETRY_AFTER_S)
    cancelled = 0
    for task_id in queued:
        try:
            await store.cancel(task_id, user_id, now_ms())
            cancelled += 1
        except TaskNotCancellable:
            # It started meanwhile.
            raise AccountBusy("a task started", retry_after=BUSY_RETRY_AFTER_S) from None
        except NotFound:
            pass  # it expired meanwhile
    if services:
        found = await redis.pipeline([("HGET", keys.service(s), "idem") for s in services])
        digests.extend(str(d) for d in found if d)
    return RedisState(
        user_id, tuple(streams), tuple(owned), tuple(digests), cancelled, tuple(services)
    )


async def delete(redis: RedisPort, state: RedisState) -> int:
    """Delete the user's keys: streams, task hashes and their idempotency keys, quota, locks.

    Returns:
        How many keys existed and were deleted.

    Raises:
        RedisUnavailable: Redis cannot be reached (repeat the erase: it is idempotent).
    """
    doomed = state.keys()
    deleted = 0
    if state.services:
        # Their transitions (a cancel above recorded a fail) have nothing left to act on.
        await redis.execute("ZREM", keys.services_due(), *state.services)
    for start in range(0, len(doomed), DEL_BATCH):
        deleted += int(await redis.execute("DEL", *doomed[start : start + DEL_BATCH]))
    logger.info("erased redis state of %s: %d keys", state.user_id, deleted)
    return deleted
