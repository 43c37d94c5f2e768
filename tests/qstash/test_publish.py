"""The Publisher (official SDK) against the local QStash server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from lib.errors import ConfigError, PublishFailed
from lib.local.embedded import free_port
from lib.local.qstash import LocalQStashHandle, start_local_qstash
from lib.qstash.publish import Publisher
from lib.qstash.verify import Verifier
from lib.redis.tcp import TcpRedis
from lib.routing import route
from lib.settings import Settings
from tests.support.qstash import Received, Receiver, wait_for

WORKER_PATH = "/api/worker/paid/text/stream"


@pytest.fixture
def lqs(valkey_url: str, tcp_redis: TcpRedis) -> Iterator[LocalQStashHandle]:
    """A local QStash server on the flushed Valkey."""
    handle = start_local_qstash(valkey_url, time_scale=0.01)
    yield handle
    handle.stop()


@pytest.fixture
def receiver(lqs: LocalQStashHandle) -> Iterator[Receiver]:
    """The app's worker endpoint stand-in, verifying signatures."""
    rec = Receiver(Verifier(lqs.current_key, lqs.next_key)).start()
    yield rec
    rec.stop()


def settings_for(qstash_url: str, token: str, app_base_url: str) -> Settings:
    """Settings pointing the publisher at a QStash and an app URL (no .env)."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        qstash_url=qstash_url,
        qstash_token=SecretStr(token),
        app_base_url=app_base_url,
    )


@pytest.fixture
async def publisher(lqs: LocalQStashHandle, receiver: Receiver) -> AsyncIterator[Publisher]:
    """A publisher for the local server, delivering to the receiver."""
    pub = Publisher.from_settings(settings_for(lqs.url, lqs.token, receiver.base_url), retry=False)
    yield pub
    await pub.aclose()


async def test_publish_task_reaches_the_worker_path(
    publisher: Publisher, receiver: Receiver, lqs: LocalQStashHandle
) -> None:
    """The task lands on its route's worker path, signed, with flow control and dedup applied."""
    # The delivery waits for the gate, so the stored message is inspected while in flight.
    gate = receiver.gates[WORKER_PATH] = threading.Event()
    r = route("job_match", "paid")
    message_id = await publisher.publish_task(r, {"task_id": "t1"}, task_id="t1", slot_limit=5)
    auth = {"Authorization": f"Bearer {lqs.token}"}
    async with httpx.AsyncClient(base_url=lqs.url, headers=auth) as http:
        stored = (await http.get(f"/v2/messages/{message_id}")).json()
    assert stored["url"] == receiver.url(WORKER_PATH)
    assert stored["flowControlKey"] == "deepseek-chat.paid"
    assert stored["parallelism"] == 5
    assert stored["maxRetries"] == Settings().qstash_retries == 5
    assert stored["retryDelayExpression"] == "min(900000, 10000 * pow(2, retried))"
    assert stored["failureCallback"] == receiver.url("/api/worker/failed")
    again = await publisher.publish_task(r, {"task_id": "t1"}, task_id="t1", slot_limit=5)
    assert again == message_id
    gate.set()
    await wait_for(lambda: len(receiver.at(WORKER_PATH)) == 1)
    got: Received = receiver.at(WORKER_PATH)[0]
    assert got.verdict == "ok"
    assert json.loads(got.body) == {"task_id": "t1"}
    assert got.headers["upstash-message-id"] == message_id


async def test_aclose_closes_the_sdks_client(lqs: LocalQStashHandle) -> None:
    """`aclose` closes the httpx client the SDK built (read at `http._client`, never replaced).

    Fails if a qstash SDK release moves its client: the close would then leak its pool.
    """
    pub = Publisher.from_settings(settings_for(lqs.url, lqs.token, "http://app.example"))
    sdk_client = pub._client.http._client
    assert isinstance(sdk_client, httpx.AsyncClient)
    assert not sdk_client.is_closed
    await pub.aclose()
    assert sdk_client.is_closed


async def test_publish_failed_when_unreachable() -> None:
    """An unreachable QStash raises PublishFailed (no 30 s of SDK retries)."""
    dead = f"http://127.0.0.1:{free_port()}"
    pub = Publisher.from_settings(settings_for(dead, "token", "http://app.example"))
    try:
        with pytest.raises(PublishFailed):
            await pub.publish_task(route("job_summary", "free"), {}, task_id="t3", slot_limit=2)
    finally:
        await pub.aclose()


async def test_publish_failed_on_rejection(lqs: LocalQStashHandle) -> None:
    """A publish QStash refuses (bad token) raises PublishFailed."""
    pub = Publisher.from_settings(settings_for(lqs.url, "wrong", "http://app.example"), retry=False)
    try:
        with pytest.raises(PublishFailed):
            await pub.publish_task(route("job_summary", "free"), {}, task_id="t4", slot_limit=2)
    finally:
        await pub.aclose()


async def test_publish_gives_up_after_its_timeout() -> None:
    """A QStash that takes the request and never answers: PublishFailed, not a 600 s wait."""

    released = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await released.wait()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    slow = settings_for(url, "token", "http://app.example")
    pub = Publisher.from_settings(
        slow.model_copy(update={"qstash_publish_timeout_s": 0.3}), retry=False
    )
    try:
        started = time.monotonic()
        with pytest.raises(PublishFailed):
            await pub.publish_task(route("job_summary", "free"), {}, task_id="t6", slot_limit=2)
        # Not before the 0.3 s timeout; well before the peer, which never answers (the
        # SDK's own default would be 600 s): the 2.7 s beyond it are room for load.
        assert 0.25 < time.monotonic() - started < 3.0
    finally:
        released.set()
        await pub.aclose()
        server.close()
        await asyncio.sleep(0.05)  # the handler closes its side


def test_missing_settings_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a token or public base URL the publisher cannot be built."""
    monkeypatch.delenv("QSTASH_TOKEN", raising=False)
    monkeypatch.delenv("APP_BASE_URL", raising=False)
    with pytest.raises(ConfigError):
        Publisher.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
