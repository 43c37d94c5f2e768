"""The local QStash server against the official SDK and a loopback receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from qstash import AsyncQStash, QStash
from qstash.errors import QStashError
from qstash.message import PublishResponse

from lib.clock import now_ms
from lib.local.qstash import LocalQStashHandle, start_local_qstash
from lib.local.qstash.store import LqsKeys
from lib.qstash.verify import Verifier
from lib.redis.tcp import TcpRedis
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY
from tests.support.qstash import Behaviour, Received, Receiver, wait_for

FAST = 0.001

StartServer = Callable[..., LocalQStashHandle]


@pytest.fixture
def start_server(valkey_url: str, tcp_redis: TcpRedis) -> Iterator[StartServer]:
    """Start local QStash servers on the flushed Valkey; all stopped at teardown."""
    handles: list[LocalQStashHandle] = []

    def start(time_scale: float = FAST, max_in_flight: int = 64, **kw: Any) -> LocalQStashHandle:
        handle = start_local_qstash(
            valkey_url, time_scale=time_scale, max_in_flight=max_in_flight, **kw
        )
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def lqs(start_server: StartServer) -> LocalQStashHandle:
    """One local QStash server at a fast time scale."""
    return start_server()


@pytest.fixture
def receiver(lqs: LocalQStashHandle) -> Iterator[Receiver]:
    """A destination that verifies signatures with the server's keys."""
    rec = Receiver(Verifier(lqs.current_key, lqs.next_key)).start()
    yield rec
    rec.stop()


@pytest.fixture
async def client(lqs: LocalQStashHandle) -> AsyncIterator[AsyncQStash]:
    """The official async SDK pointed at the local server."""
    sdk = AsyncQStash(lqs.token, base_url=lqs.url, retry=False)
    yield sdk
    await sdk.http._client.aclose()


@contextlib.asynccontextmanager
async def sdk_for(lqs: LocalQStashHandle) -> AsyncIterator[AsyncQStash]:
    """The official async SDK for one server, closed on exit."""
    sdk = AsyncQStash(lqs.token, base_url=lqs.url, retry=False)
    try:
        yield sdk
    finally:
        await sdk.http._client.aclose()


def status_then_ok(
    status: int, headers: dict[str, str] | None = None, failures: int = 1
) -> Behaviour:
    """A behaviour failing `failures` times with `status`, then answering 200."""

    def behave(_: Received, before: int) -> tuple[int, dict[str, str]]:
        return (status, headers or {}) if before < failures else (200, {})

    return behave


async def test_publish_json_is_delivered_signed(client: AsyncQStash, receiver: Receiver) -> None:
    """publish_json arrives once with a valid signature, the headers QStash sets and the body."""
    reply = await client.message.publish_json(
        url=receiver.url("/hook?a=1&b=2"),
        body={"hello": "wörld"},
        headers={"X-Trace": "t1"},
        callback=receiver.url("/cb"),
    )
    await wait_for(lambda: len(receiver.at("/hook")) == 1)
    got = receiver.at("/hook")[0]
    assert got.verdict == "ok"
    assert got.method == "POST"
    assert got.body == b'{"hello": "w\\u00f6rld"}'
    assert got.headers["upstash-message-id"] == reply.message_id  # type: ignore[union-attr]
    assert got.headers["upstash-retried"] == "0"
    assert got.headers["user-agent"] == "Upstash-QStash"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-trace"] == "t1"
    assert got.headers["upstash-caller-ip"] == "127.0.0.1"
    await wait_for(lambda: len(receiver.at("/cb")) == 1)
    callback = json.loads(receiver.at("/cb")[0].body)
    assert (callback["status"], callback["sourceMessageId"]) == (200, got_id(reply))


async def test_sync_sdk_publish_and_method(lqs: LocalQStashHandle, receiver: Receiver) -> None:
    """The sync SDK works unchanged; Upstash-Method and raw bytes bodies are honoured."""
    sdk = QStash(lqs.token, base_url=lqs.url, retry=False)
    try:
        body = bytes(range(256))
        sdk.message.publish(url=receiver.url("/raw"), body=body, method="PUT")
        assert sdk.signing_key.get().current == lqs.current_key
    finally:
        sdk.http._client.close()
    await wait_for(lambda: len(receiver.at("/raw")) == 1)
    got = receiver.at("/raw")[0]
    assert (got.method, got.body, got.verdict) == ("PUT", body, "ok")


async def test_bad_token_rejected(lqs: LocalQStashHandle) -> None:
    """A publish without the right bearer token answers 401."""
    sdk = AsyncQStash("wrong", base_url=lqs.url, retry=False)
    try:
        with pytest.raises(QStashError, match="401"):
            await sdk.message.publish_json(url="http://127.0.0.1:9/x", body={})
    finally:
        await sdk.http._client.aclose()


async def test_retry_with_backoff_until_success(client: AsyncQStash, receiver: Receiver) -> None:
    """A 500 is retried after the default backoff; Upstash-Retried counts the attempts."""
    receiver.behaviours["/flaky"] = status_then_ok(500, failures=2)
    await client.message.publish_json(url=receiver.url("/flaky"), body={})
    await wait_for(lambda: len(receiver.at("/flaky")) == 3)
    got = receiver.at("/flaky")
    assert [r.headers["upstash-retried"] for r in got] == ["0", "1", "2"]
    # e^2.5 s and e^5 s, times the 0.001 time scale.
    assert got[1].at - got[0].at >= 0.012
    assert got[2].at - got[1].at >= 0.148
    # Settled after the last answer: the message is gone.
    message_id = got[0].headers["upstash-message-id"]
    await wait_for(lambda: _message_status(client, message_id) == 404)


async def test_retry_after_is_honoured(start_server: StartServer) -> None:
    """A Retry-After on a failing response sets the next attempt in real seconds (not scaled)."""
    server = start_server(time_scale=0.01)
    receiver = Receiver(Verifier(server.current_key, server.next_key)).start()
    sdk = QStash(server.token, base_url=server.url, retry=False)
    try:
        receiver.behaviours["/busy"] = status_then_ok(429, {"Retry-After": "1"})
        sdk.message.publish_json(url=receiver.url("/busy"), body={})
        await wait_for(lambda: len(receiver.at("/busy")) == 2, timeout=10)
        got = receiver.at("/busy")
        # The destination asked for 1 s: honoured as is. The scaled default first backoff
        # would have been 0.12 s, a scaled Retry-After 0.01 s.
        assert got[1].at - got[0].at >= 0.95
    finally:
        sdk.http._client.close()
        receiver.stop()


async def test_non_retryable_489_goes_to_dlq(client: AsyncQStash, receiver: Receiver) -> None:
    """489 with Upstash-NonRetryable-Error is dead-lettered after a single attempt."""
    receiver.behaviours["/fatal"] = status_then_ok(
        489, {"Upstash-NonRetryable-Error": "true"}, failures=99
    )
    reply = await client.message.publish_json(url=receiver.url("/fatal"), body={"n": 1})
    await wait_for(lambda: bool(_dlq_ids(client)))
    listing = await client.dlq.list()
    assert len(listing.messages) == 1
    entry = listing.messages[0]
    assert entry.message_id == reply.message_id  # type: ignore[union-attr]
    assert entry.response_status == 489
    assert entry.response_body == "answer"
    assert len(receiver.at("/fatal")) == 1


def got_id(reply: object) -> str:
    """The message id of a single-destination publish reply."""
    assert isinstance(reply, PublishResponse)
    return reply.message_id


def _message_status(client: AsyncQStash, message_id: str) -> int:
    """GET /v2/messages/{id} status via a sync request (usable inside `wait_for`)."""
    reply = httpx.get(
        f"{client.http._base_url}/v2/messages/{message_id}",
        headers={"Authorization": client.http._token},
    )
    return reply.status_code


def _dlq_ids(client: AsyncQStash) -> list[str]:
    """DLQ ids via a sync request (usable inside `wait_for`)."""
    reply = httpx.get(
        client.http._base_url + "/v2/dlq", headers={"Authorization": client.http._token}
    )
    return [m["dlqId"] for m in reply.json()["messages"]]


async def test_exhausted_retries_dead_letter_and_failure_callback(
    client: AsyncQStash, receiver: Receiver
) -> None:
    """After 1 + retries failed attempts: DLQ, and the failure callback fires."""
    receiver.behaviours["/down"] = status_then_ok(503, failures=99)
    reply = await client.message.publish_json(
        url=receiver.url("/down"),
        body={"task": 1},
        retries=2,
        failure_callback=receiver.url("/failed"),
        failure_callback_headers={"X-Why": "cb"},
    )
    await wait_for(lambda: len(receiver.at("/failed")) == 1)
    assert len(receiver.at("/down")) == 3
    callback = receiver.at("/failed")[0]
    assert callback.verdict == "ok"
    assert callback.headers["x-why"] == "cb"
    payload = json.loads(callback.body)
    assert payload["sourceMessageId"] == reply.message_id  # type: ignore[union-attr]
    assert payload["status"] == 503
    assert payload["dlqId"] in _dlq_ids(client)


async def test_dlq_get_delete_and_retry(
    client: AsyncQStash, receiver: Receiver, lqs: LocalQStashHandle
) -> None:
    """DLQ entries can be read, deleted, and retried as a new message that gets delivered."""
    receiver.behaviours["/once"] = status_then_ok(500, failures=2)
    for _ in range(2):
        await client.message.publish_json(url=receiver.url("/once"), body={}, retries=0)
    await wait_for(lambda: len(_dlq_ids(client)) == 2)
    first, second = _dlq_ids(client)
    entry = await client.dlq.get(first)
    assert (entry.dlq_id, entry.url, entry.response_status) == (first, receiver.url("/once"), 500)
    await client.dlq.delete(first)
    with pytest.raises(QStashError, match="404"):
        await client.dlq.get(first)
    auth = {"Authorization": f"Bearer {lqs.token}"}
    async with httpx.AsyncClient(base_url=lqs.url, headers=auth) as http:
        retried = await http.post(f"/v2/dlq/retry/{second}")
        assert retried.status_code == 201
        assert (await http.post(f"/v2/dlq/retry/{second}")).status_code == 404
    await wait_for(lambda: len(receiver.at("/once")) == 3)
    assert receiver.at("/once")[2].headers["upstash-message-id"] == retried.json()["messageId"]
    assert _dlq_ids(client) == []


async def test_deduplication_id(lqs: LocalQStashHandle, receiver: Receiver) -> None:
    """A second publish with the same Upstash-Deduplication-Id answers 202 with the first id."""
    auth = {"Authorization": f"Bearer {lqs.token}", "Upstash-Deduplication-Id": "task-1"}
    async with httpx.AsyncClient(base_url=lqs.url, headers=auth) as http:
        first = await http.post(f"/v2/publish/{receiver.url('/d')}", content=b"1")
        second = await http.post(f"/v2/publish/{receiver.url('/d')}", content=b"2")
    assert first.status_code == 201
    assert first.json()["deduplicated"] is False
    assert second.status_code == 202
    assert second.json() == {"messageId": first.json()["messageId"], "deduplicated": True}
    await wait_for(lambda: len(receiver.at("/d")) == 1)
    time.sleep(0.1)
    assert [r.body for r in receiver.at("/d")] == [b"1"]


async def test_content_based_deduplication(client: AsyncQStash, receiver: Receiver) -> None:
    """Content-based dedup merges identical publishes and keeps different bodies apart."""
    url = receiver.url("/c")
    a = await client.message.publish_json(url=url, body={"x": 1}, content_based_deduplication=True)
    b = await client.message.publish_json(url=url, body={"x": 1}, content_based_deduplication=True)
    c = await client.message.publish_json(url=url, body={"x": 2}, content_based_deduplication=True)
    assert b.message_id == a.message_id and b.deduplicated  # type: ignore[union-attr]
    assert c.message_id != a.message_id and not c.deduplicated  # type: ignore[union-attr]
    await wait_for(lambda: len(receiver.at("/c")) == 2)


@pytest.mark.parametrize("spaces", [True, False])
async def test_flow_control_parallelism_across_urls(
    lqs: LocalQStashHandle, receiver: Receiver, spaces: bool
) -> None:
    """parallelism=1 on one key delivers one message at a time, across two URLs."""
    receiver.hold_s.update({"/a": 0.05, "/b": 0.05})
    value = "parallelism=1, rate=100, period=1s" if spaces else "parallelism=1,rate=100,period=1s"
    headers = {
        "Authorization": f"Bearer {lqs.token}",
        "Upstash-Flow-Control-Key": "pool",
        "Upstash-Flow-Control-Value": value,
    }
    async with httpx.AsyncClient(base_url=lqs.url, headers=headers) as http:
        for i in range(6):
            path = "/a" if i % 2 else "/b"
            reply = await http.post(f"/v2/publish/{receiver.url(path)}", content=str(i))
            assert reply.status_code == 201
    await wait_for(lambda: len(receiver.received) == 6)
    assert receiver.max_active == 1


async def test_flow_control_allows_parallelism(client: AsyncQStash, receiver: Receiver) -> None:
    """With parallelism=3 deliveries do overlap (the concurrency measure can see it)."""
    receiver.hold_s["/p"] = 0.1
    for i in range(6):
        await client.message.publish_json(
            url=receiver.url("/p"), body={"i": i}, flow_control={"key": "wide", "parallelism": 3}
        )
    await wait_for(lambda: len(receiver.received) == 6)
    assert receiver.max_active == 3


async def test_at_capacity_the_loop_waits_instead_of_polling(
    start_server: StartServer, tcp_redis: TcpRedis
) -> None:
    """With every delivery slot busy and messages due, the loop sleeps until one ends.

    A regression: it used to ask Redis for the next due time, got "now", and spun
    (tens of thousands of ZRANGE calls per second under load).
    """
    lqs = start_server(max_in_flight=1)
    receiver = Receiver(Verifier(lqs.current_key, lqs.next_key)).start()
    try:
        # The held delivery outlasts the 0.3 s window by 1.2 s, however late the window
        # starts on a loaded machine; the other two are not held, so the test stays short.
        receiver.hold_s["/slow"] = 1.5
        async with sdk_for(lqs) as sdk:
            await sdk.message.publish_json(url=receiver.url("/slow"), body={"i": 0})
            await wait_for(lambda: receiver.active == 1)
            for i in (1, 2):
                await sdk.message.publish_json(url=receiver.url("/fast"), body={"i": i})
            await tcp_redis.execute("CONFIG", "RESETSTAT")
            await asyncio.sleep(0.3)  # one delivery held, two due: nothing for the loop to do
            raw = await tcp_redis.execute("INFO", "commandstats")
            assert receiver.active == 1 and receiver.at("/fast") == []
        stats = raw.decode() if isinstance(raw, bytes) else str(raw)
        calls = sum(
            int(part.split("=", 1)[1])
            for line in stats.splitlines()
            if line.startswith("cmdstat_")
            and not line.startswith(("cmdstat_info", "cmdstat_config"))
            for part in line.split(":", 1)[1].split(",")
            if part.startswith("calls=")
        )
        # poll_s is 50 ms: a handful of looks in 300 ms, not thousands.
        assert calls < 30, stats
        await wait_for(lambda: len(receiver.at("/fast")) == 2, timeout=5)
        assert receiver.max_active == 1
    finally:
        receiver.stop()


async def test_flow_control_rate(client: AsyncQStash, receiver: Receiver) -> None:
    """rate=2 per 1 s period: the third message waits for the next period (never rejected)."""
    for i in range(3):
        reply = await client.message.publish_json(
            url=receiver.url("/r"), body={"i": i}, flow_control={"key": "r", "rate": 2, "period": 1}
        )
        assert not reply.deduplicated  # type: ignore[union-attr]
    await wait_for(lambda: len(receiver.at("/r")) == 3)
    got = receiver.at("/r")
    # Arrival times carry each delivery's latency, which load stretches unevenly (the first
    # one also opens the connection): 0.5 s for "at once", and 0.75 s for "a period later"
    # (the window slides from the first claim; at once would be a few ms).
    assert got[1].at - got[0].at < 0.5
    assert got[2].at - got[0].at >= 0.75


async def test_delay_and_not_before(lqs: LocalQStashHandle, receiver: Receiver) -> None:
    """Upstash-Delay (scaled) and Upstash-Not-Before (absolute) hold a message back."""
    sdk = QStash(lqs.token, base_url=lqs.url, retry=False)
    try:
        start = time.monotonic()
        sdk.message.publish_json(url=receiver.url("/delay"), body={}, delay="300s")
        not_before = int(time.time()) + 1
        sdk.message.publish_json(
            url=receiver.url("/nb"), body={}, not_before=not_before, delay="1s"
        )
    finally:
        sdk.http._client.close()
    await wait_for(lambda: len(receiver.at("/delay")) == 1)
    assert receiver.at("/delay")[0].at - start >= 0.29  # 300 s x 0.001
    await wait_for(lambda: len(receiver.at("/nb")) == 1)
    # Not-Before is absolute and wins over the (scaled, 1 ms) delay.
    assert receiver.at("/nb")[0].wall >= not_before


async def test_cancel_prevents_delivery(client: AsyncQStash, receiver: Receiver) -> None:
    """A message cancelled before its time is never delivered; GET then answers 404."""
    # Due in 1 s (x 0.001): the get and the cancel have that long, even on a loaded machine;
    # /y, due later, shows the loop would have delivered /x by then.
    reply = await client.message.publish_json(url=receiver.url("/x"), body={}, delay="1000s")
    msg = await client.message.get(reply.message_id)  # type: ignore[union-attr]
    assert msg.url == receiver.url("/x")
    await client.message.cancel(reply.message_id)  # type: ignore[union-attr]
    with pytest.raises(QStashError, match="404"):
        await client.message.cancel(reply.message_id)  # type: ignore[union-attr]
    await client.message.publish_json(url=receiver.url("/y"), body={}, delay="1500s")
    await wait_for(lambda: len(receiver.at("/y")) == 1)
    assert receiver.at("/x") == []
    with pytest.raises(QStashError, match="404"):
        await client.message.get(reply.message_id)  # type: ignore[union-attr]


async def test_cancel_many(client: AsyncQStash, receiver: Receiver) -> None:
    """DELETE /v2/messages cancels the listed ids and reports how many."""
    # 1 h x 0.001 = 3.6 s: all three are still pending when cancelled.
    replies = [
        await client.message.publish_json(url=receiver.url("/m"), body={}, delay="3600s")
        for _ in range(3)
    ]
    ids = [reply.message_id for reply in replies]  # type: ignore[union-attr]
    assert await client.message.cancel_many([*ids[:2], "msg_unknown"]) == 2
    assert await client.message.cancel_all() == 1


async def test_batch_with_a_bad_entry(lqs: LocalQStashHandle, receiver: Receiver) -> None:
    """A bad batch entry gets an error reply; the other entries are published and delivered."""
    entries = [
        {
            "destination": receiver.url("/b1"),
            "headers": {"Content-Type": "text/plain"},
            "body": "1",
        },
        {"destination": "not a url", "headers": {}, "body": "2"},
        {"destination": receiver.url("/b3?q=1"), "headers": {}, "body": "3"},
    ]
    auth = {"Authorization": f"Bearer {lqs.token}"}
    async with httpx.AsyncClient(base_url=lqs.url, headers=auth) as http:
        reply = await http.post("/v2/batch", json=entries)
    results = reply.json()
    assert reply.status_code == 200 and len(results) == 3
    assert "messageId" in results[0] and "messageId" in results[2]
    assert "error" in results[1]
    await wait_for(lambda: len(receiver.at("/b1")) == 1 and len(receiver.at("/b3")) == 1)
    assert receiver.at("/b3")[0].verdict == "ok"  # signed for the URL with its query


async def test_restart_keeps_pending_delayed_message(
    start_server: StartServer, valkey_url: str
) -> None:
    """A delayed message published before a stop is delivered by the next server on that Redis."""
    first = start_server(time_scale=0.01)
    receiver = Receiver(Verifier(first.current_key, first.next_key)).start()
    try:
        sdk = QStash(first.token, base_url=first.url, retry=False)
        # Due in 1 s (x 0.01): the first server is stopped well before it could deliver it.
        sdk.message.publish_json(url=receiver.url("/later"), body={"k": 1}, delay="100s")
        sdk.http._client.close()
        first.stop()
        time.sleep(0.5)
        assert receiver.at("/later") == []
        start_server(time_scale=0.01)
        await wait_for(lambda: len(receiver.at("/later")) == 1)
        assert receiver.at("/later")[0].verdict == "ok"
    finally:
        receiver.stop()


async def test_restart_redelivers_what_a_killed_server_left_in_flight(
    start_server: StartServer, tcp_redis: TcpRedis
) -> None:
    """Attempts a killed server had in flight (holding flow control) go out again at once."""
    from lib.local.qstash.message import Message, PublishRequest, new_message_id
    from lib.local.qstash.store import QStashStore

    store = QStashStore(tcp_redis)
    receiver = Receiver(Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)).start()
    try:
        now = now_ms()
        pooled = [
            Message(
                id=new_message_id(),
                url=receiver.url(f"/left/{i}"),
                body=b"{}",
                fc_key="pool",
                fc_parallelism=1,
            )
            for i in range(2)
        ]
        for msg in pooled:
            await store.publish(PublishRequest(msg, now, None))
        # What a server killed mid-delivery leaves: an attempt in flight under a long lease,
        # holding the key's only slot (the second message waits behind it).
        assert (await store.claim(pooled[0], now_ms=now, lease_ms=330_000)).status == "claimed"
        assert (await store.claim(pooled[1], now_ms=now, lease_ms=330_000)).status == "waiting"
        start_server(time_scale=0.01)
        await wait_for(lambda: len(receiver.received) == 2)
        assert sorted(r.path for r in receiver.received) == ["/left/0", "/left/1"]
        assert all(r.verdict == "ok" for r in receiver.received)
    finally:
        receiver.stop()


async def test_keys_endpoint(client: AsyncQStash, lqs: LocalQStashHandle) -> None:
    """/v2/keys reports the current and next signing keys."""
    keys = await client.signing_key.get()
    assert (keys.current, keys.next) == (lqs.current_key, lqs.next_key)


async def test_transport_error_is_retried(start_server: StartServer) -> None:
    """Past the start-up grace an unreachable destination counts as an attempt: DLQ."""
    from lib.local.embedded import free_port

    server = start_server(startup_grace_s=0.0)
    async with sdk_for(server) as client:
        dead = f"http://127.0.0.1:{free_port()}/gone"
        await client.message.publish_json(url=dead, body={}, retries=1)
        await wait_for(lambda: len(_dlq_ids(client)) == 1)
        entry = (await client.dlq.list()).messages[0]
    assert entry.url == dead and entry.response_status == 0


async def test_refused_before_the_destination_answered_spends_no_retry(
    client: AsyncQStash, lqs: LocalQStashHandle
) -> None:
    """A destination not up yet (connection refused, never answered since the server
    started) is tried again every half second with no retry spent, and gets the message
    with Upstash-Retried 0 once it listens."""
    from lib.local.embedded import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/later"
    published = await client.message.publish_json(url=url, body={"k": 1}, retries=0)
    assert isinstance(published, PublishResponse)
    # retries=0: a refusal that counted would dead-letter the message at once.
    await asyncio.sleep(1.2)
    assert _dlq_ids(client) == []
    assert _message_status(client, published.message_id) == 200
    receiver = Receiver(Verifier(lqs.current_key, lqs.next_key), port=port).start()
    try:
        await wait_for(lambda: len(receiver.at("/later")) == 1)
        got = receiver.at("/later")[0]
        assert got.verdict == "ok" and got.headers["upstash-retried"] == "0"
        await wait_for(lambda: _message_status(client, published.message_id) == 404)
    finally:
        receiver.stop()
    assert _dlq_ids(client) == []


async def test_refused_after_the_destination_answered_counts(
    client: AsyncQStash, lqs: LocalQStashHandle
) -> None:
    """Once a destination has answered, a refusal is a failed attempt as usual (here: DLQ)."""
    receiver = Receiver(Verifier(lqs.current_key, lqs.next_key)).start()
    await client.message.publish_json(url=receiver.url("/first"), body={})
    await wait_for(lambda: len(receiver.at("/first")) == 1)
    receiver.stop()
    await client.message.publish_json(url=receiver.url("/second"), body={}, retries=0)
    await wait_for(lambda: len(_dlq_ids(client)) == 1)
    entry = (await client.dlq.list()).messages[0]
    assert entry.url == receiver.url("/second") and entry.response_status == 0


async def test_a_long_attempt_keeps_its_lease_by_renewing_it(
    start_server: StartServer, tcp_redis: TcpRedis
) -> None:
    """An attempt's lease is `lease_s`, renewed while it runs: one slow delivery outlives
    several leases and is delivered exactly once."""
    inflight = LqsKeys().inflight
    server = start_server(lease_s=1.2)
    receiver = Receiver(Verifier(server.current_key, server.next_key)).start()
    receiver.hold_s["/slow"] = 3.0
    try:
        async with sdk_for(server) as client:
            await client.message.publish_json(url=receiver.url("/slow"), body={})
            await wait_for(lambda: len(receiver.at("/slow")) == 1)
            leases: list[float] = []
            while receiver.active:
                reply = await tcp_redis.execute("ZRANGE", inflight, 0, -1, "WITHSCORES")
                if reply:
                    # Never more than one lease ahead of now, yet never run out.
                    lease_left = float(reply[1]) / 1000 - time.time()
                    assert lease_left < 1.2 + 0.2
                    leases.append(float(reply[1]))
                await asyncio.sleep(0.1)
            await wait_for(lambda: _dlq_ids(client) == [] and receiver.active == 0)
        await asyncio.sleep(1.5)  # a lease that had run out would be redelivered by now
        assert len(receiver.at("/slow")) == 1
        assert len(set(leases)) >= 3  # renewed (about every 0.4 s)
    finally:
        receiver.stop()
