"""The local QStash server's Redis state and Lua scripts, driven directly."""

from __future__ import annotations

from lib.local.qstash.message import Message, PublishRequest, new_message_id
from lib.local.qstash.store import QStashStore
from lib.redis.tcp import TcpRedis

NOW = 1_800_000_000_000


def pooled(parallelism: int = 1) -> Message:
    """A message on flow-control key `pool`."""
    return Message(id=new_message_id(), url="http://h/x", fc_key="pool", fc_parallelism=parallelism)


async def test_waitlist_is_released_when_a_slot_frees(tcp_redis: TcpRedis) -> None:
    """With parallelism=1 the second message waits, then becomes due when the first settles."""
    store = QStashStore(tcp_redis)
    first, second = pooled(), pooled()
    for msg in (first, second):
        await store.publish(PublishRequest(msg, NOW, None))
    assert (await store.claim(first, now_ms=NOW, lease_ms=60_000)).status == "claimed"
    assert (await store.claim(second, now_ms=NOW, lease_ms=60_000)).status == "waiting"
    assert await store.due_messages(NOW, 10) == []
    assert await store.settle(first, "done", now_ms=NOW + 1) == 1
    assert [m.id for m in await store.due_messages(NOW + 1, 10)] == [second.id]
    assert await store.get(first.id) is None


async def test_expired_lease_is_reclaimed(tcp_redis: TcpRedis) -> None:
    """An attempt whose server died is handed back (at-least-once) and frees its slot."""
    store = QStashStore(tcp_redis)
    msg = pooled()
    await store.publish(PublishRequest(msg, NOW, None))
    assert (await store.claim(msg, now_ms=NOW, lease_ms=1_000)).status == "claimed"
    assert await store.expired_leases(NOW + 500) == []
    assert await store.settle(msg, "reclaim", now_ms=NOW + 500, due_ms=NOW + 500) == 0
    assert await store.expired_leases(NOW + 1_000) == [msg.id]
    assert await store.settle(msg, "reclaim", now_ms=NOW + 1_000, due_ms=NOW + 1_000) == 1
    again = await store.due_messages(NOW + 1_000, 10)
    assert [m.id for m in again] == [msg.id]
    claim = await store.claim(again[0], now_ms=NOW + 1_000, lease_ms=1_000)
    assert claim.status == "claimed"


async def test_cancel_in_flight_is_never_retried(tcp_redis: TcpRedis) -> None:
    """Cancelling during an attempt deletes the message; the retry settle then finds it gone."""
    store = QStashStore(tcp_redis)
    msg = Message(id=new_message_id(), url="http://h/x")
    await store.publish(PublishRequest(msg, NOW, None))
    await store.claim(msg, now_ms=NOW, lease_ms=60_000)
    assert await store.cancel(msg.id) is True
    assert await store.settle(msg, "retry", now_ms=NOW, due_ms=NOW, retried=1) == -1
    assert await store.due_messages(NOW + 10, 10) == []


async def test_message_round_trips_through_redis(tcp_redis: TcpRedis) -> None:
    """Every message field, binary body included, survives the hash encoding."""
    store = QStashStore(tcp_redis)
    msg = Message(
        id=new_message_id(),
        url="http://h/x?y=1",
        body=bytes(range(256)),
        method="PUT",
        headers={"X-A": "1"},
        failure_callback_headers={"X-B": "2"},
        retry_delay="1000 * retried",
        timeout_s=12.5,
        fc_key="k",
        fc_rate=3,
        fc_period_s=60.0,
    )
    await store.publish(PublishRequest(msg, NOW, None))
    assert await store.get(msg.id) == msg
