"""Session-wide real servers (Valkey, Postgres) and per-test clean state."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lib.local.embedded import EmbeddedPostgres, EmbeddedValkey
from lib.local.upstash_rest import LocalRest, start_local_rest
from lib.redis.port import RedisPort
from lib.redis.rest import RestRedis
from lib.redis.tcp import TcpRedis


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """One embedded Valkey for the whole session."""
    server = EmbeddedValkey()
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One embedded Postgres for the whole session."""
    server = EmbeddedPostgres()
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def pg_tmp() -> Iterator[Path]:
    """A temporary folder for a test that starts a Postgres with its data in it.

    Outside pytest's own temporary folders: run as root, the embedded Postgres runs as
    another user and opens its files through every folder above them, and any pytest
    session that starts meanwhile on the machine makes /tmp/pytest-of-root private again
    (seen on a shared machine: initdb failing with "Permission denied" on pg_control).
    """
    with tempfile.TemporaryDirectory(prefix="slotline-test-") as folder:
        yield Path(folder)


@pytest.fixture
async def tcp_redis(valkey_url: str) -> AsyncIterator[TcpRedis]:
    """A TCP adapter on a flushed database."""
    redis = TcpRedis.from_url(valkey_url)
    await redis.execute("FLUSHALL")
    await redis.execute("SCRIPT", "FLUSH")
    yield redis
    await redis.aclose()


@pytest.fixture(scope="session")
def local_rest(valkey_url: str) -> Iterator[LocalRest]:
    """The local Upstash REST server in front of the session Valkey."""
    server = start_local_rest(valkey_url)
    yield server
    server.stop()


@pytest.fixture(params=["tcp", "rest"])
async def redis(request: pytest.FixtureRequest, valkey_url: str) -> AsyncIterator[RedisPort]:
    """The same test body against every Redis adapter, on a flushed database."""
    port: RedisPort
    if request.param == "rest":
        rest: LocalRest = request.getfixturevalue("local_rest")
        port = RestRedis(rest.url, rest.token, retries=0)
    else:
        port = TcpRedis.from_url(valkey_url)
    await port.execute("FLUSHALL")
    await port.execute("SCRIPT", "FLUSH")
    yield port
    await port.aclose()
