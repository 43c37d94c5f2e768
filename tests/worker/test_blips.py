"""A running attempt rides out a short Redis outage: tokens wait, finish is retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal

from lib import keys
from lib.errors import RedisUnavailable
from lib.redis.port import Arg, KeyedEntry, RedisPort, StreamEntry, pairs_to_dict
from worker.blips import through_blips
from worker.tokens import Attempt, Fenced, TokenBatcher


class Outage:
    """A real Redis port that is unreachable while `down` is set (fault injection)."""

    def __init__(self, inner: RedisPort) -> None:
        self.inner = inner
        self.kind: Literal["tcp", "rest"] = inner.kind
        self.down = False
        self.refused = 0

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            raise RedisUnavailable("redis: ConnectionError: injected outage")

    async def execute(self, *args: Arg) -> Any:
        self._check()
        return await self.inner.execute(*args)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        self._check()
        return await self.inner.pipeline(commands)

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        self._check()
        return await self.inner.evalsha(sha, keys, args)

    async def xread(
        self, key: str, after_id: str, *, count: int, block_ms: int | None
    ) -> list[StreamEntry]:
        self._check()
        return await self.inner.xread(key, after_id, count=count, block_ms=block_ms)

    async def xread_streams(
        self, streams: Sequence[tuple[str, str]], *, count: int, block_ms: int | None
    ) -> list[KeyedEntry]:
        self._check()
        return await self.inner.xread_streams(streams, count=count, block_ms=block_ms)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def owning(redis: RedisPort, name: str, lease: str = "L1") -> Attempt:
    """An attempt that owns task `name` (its lease is on the task hash)."""
    await redis.execute("HSET", keys.task(name), "lease", lease)
    return Attempt(keys.task(name), keys.events("u", "s", name), lease)


async def test_token_batches_wait_out_an_outage_without_losing_text(redis: RedisPort) -> None:
    """Deltas written while Redis is down are kept and land, in order, once it is back."""
    port = Outage(redis)
    attempt = await owning(redis, "t")
    key = attempt.stream_key
    async with TokenBatcher(port, attempt, flush_ms=20, max_chars=10_000) as batcher:
        await batcher.add("a")
        port.down = True
        for part in "bcdef":
            await batcher.add(part)
            await asyncio.sleep(0.03)
        assert port.refused >= 1
        port.down = False
        await batcher.add("g")
    entries = await redis.execute("XRANGE", key, "-", "+")
    fields = [pairs_to_dict(e[1]) for e in entries]
    assert "".join(f["data"][9:-2] for f in fields) == "abcdefg"  # {"text":"…"}
    assert fields[-1]["n"] == "7"  # deltas so far: the row of a dead attempt uses it


async def test_the_last_batch_waits_for_redis_to_come_back(redis: RedisPort) -> None:
    """Closing the batcher during an outage retries the last write instead of failing."""
    port = Outage(redis)
    attempt = await owning(redis, "t2")
    key = attempt.stream_key

    async def recover() -> None:
        await asyncio.sleep(0.3)
        port.down = False

    async with TokenBatcher(port, attempt, flush_ms=1000, max_chars=10_000) as batcher:
        await batcher.add("first")
        await batcher.add("last")
        port.down = True
        healer = asyncio.create_task(recover())
    await healer
    texts = [pairs_to_dict(e[1])["data"] for e in await redis.execute("XRANGE", key, "-", "+")]
    assert texts == ['{"text":"first"}', '{"text":"last"}']


async def test_through_blips_gives_up_after_its_budget(redis: RedisPort) -> None:
    """A Redis that stays away is reported after the budget, not waited on forever."""
    port = Outage(redis)
    port.down = True
    started = time.monotonic()
    try:
        await through_blips(lambda: port.execute("PING"), budget_s=0.3)
    except RedisUnavailable:
        pass
    else:
        raise AssertionError("expected RedisUnavailable")
    assert 0.3 <= time.monotonic() - started < 5.0
    assert port.refused >= 2


async def test_a_delivery_survives_an_outage_mid_stream_and_at_finish(redis: RedisPort) -> None:
    """Redis goes away during the stream and is still away at finish: the task ends done once."""
    import httpx

    from lib.qstash.verify import Verifier
    from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY
    from tests.support.producer import RecordingPublisher
    from tests.worker.test_app import BASE, ScriptedRunner, admit, event_types, held, make_settings
    from tests.worker.test_app import signed as sign_delivery
    from worker.app import create_app

    settings = make_settings(token_flush_ms=20)
    port = Outage(redis)
    runner = ScriptedRunner([f"t{i} " for i in range(20)], delay=0.02)
    app = create_app(
        settings,
        redis=port,
        runner=runner,
        verifier=Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY),
        publisher=RecordingPublisher(),
    )
    msg = await admit(redis, settings)
    path, body, headers = sign_delivery(msg)

    async def outage() -> None:
        while await redis.execute("HGET", keys.task(msg.task_id), "status") != "running":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        port.down = True  # until after the runner's last delta: finish meets the outage too
        await asyncio.sleep(0.8)
        port.down = False

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        blip = asyncio.create_task(outage())
        response = await c.post(path, content=body, headers=headers)
        await blip
    assert response.status_code == 200 and response.json()["status"] == "done"
    assert port.refused > 0
    events = await event_types(redis, msg)
    types = [e["type"] for e in events]
    assert "restart" not in types and types.count("done") == 1
    text = "".join(e["data"][9:-2] for e in events if e["type"] == "token")
    assert text == "".join(f"t{i} " for i in range(20))
    assert await held(redis) == {"pending": None, "lock": None, "leases": 0}


async def test_deltas_that_arrive_during_a_write_are_not_lost(redis: RedisPort) -> None:
    """Deltas added while a batch is being written land in the next batch, in order."""

    class Slow(Outage):
        async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
            await asyncio.sleep(0.02)  # each write takes a while: adds race it
            return await super().evalsha(sha, keys, args)

        async def execute(self, *args: Arg) -> Any:
            await asyncio.sleep(0.02)
            return await super().execute(*args)

    port = Slow(redis)
    attempt = await owning(redis, "t3")
    key = attempt.stream_key
    parts = [f"{i}," for i in range(60)]
    async with TokenBatcher(port, attempt, flush_ms=5, max_chars=10_000) as batcher:

        async def add_all() -> None:
            for part in parts:
                await batcher.add(part)
                await asyncio.sleep(0.002)

        await asyncio.gather(add_all(), add_all())
    entries = await redis.execute("XRANGE", key, "-", "+")
    text = "".join(pairs_to_dict(e[1])["data"][9:-2] for e in entries)
    assert sorted(text.split(",")[:-1], key=int) == sorted([p[:-1] for p in parts] * 2, key=int)
    assert pairs_to_dict(entries[-1][1])["n"] == str(2 * len(parts))


class ReplyLost(Outage):
    """Writes go through, but while `down` their reply is lost (a timeout after sending)."""

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        reply = await self.inner.evalsha(sha, keys, args)
        self._check()
        return reply

    async def execute(self, *args: Arg) -> Any:
        reply = await self.inner.execute(*args)
        self._check()
        return reply


async def test_a_write_whose_reply_was_lost_is_not_written_twice(redis: RedisPort) -> None:
    """The batch is sent again after a lost reply; the stream holds it once, in order."""
    port = ReplyLost(redis)
    attempt = await owning(redis, "t4")
    async with TokenBatcher(port, attempt, flush_ms=10, max_chars=10_000) as batcher:
        await batcher.add("a")
        port.down = True
        await batcher.add("b")  # written, but the batcher hears it failed
        await asyncio.sleep(0.02)
        await batcher.flush()
        port.down = False
        await batcher.add("c")
    entries = await redis.execute("XRANGE", attempt.stream_key, "-", "+")
    assert port.refused >= 1
    assert [pairs_to_dict(e[1])["data"] for e in entries] == [
        '{"text":"a"}',
        '{"text":"b"}',
        '{"text":"c"}',
    ]


async def test_a_zombie_attempt_writes_nothing_after_a_takeover(redis: RedisPort) -> None:
    """Once another attempt owns the task, the old one's writes are fenced off and it stops."""
    attempt = await owning(redis, "t5", lease="old")
    async with TokenBatcher(redis, attempt, flush_ms=10, max_chars=10_000) as batcher:
        await batcher.add("mine")
        await redis.execute("HSET", attempt.task_key, "lease", "new")  # taken over
        try:
            await batcher.add("late")
            await batcher.flush()  # the write (here, or the timer's first) is fenced off
            await batcher.add("later")
            await batcher.flush()
        except Fenced:
            pass
        else:
            raise AssertionError("the zombie was not fenced")
    texts = [
        pairs_to_dict(e[1])["data"]
        for e in await redis.execute("XRANGE", attempt.stream_key, "-", "+")
    ]
    assert texts == ['{"text":"mine"}']
