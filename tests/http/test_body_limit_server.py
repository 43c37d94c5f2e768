"""Body limits on a real uvicorn (loopback, the combined app): a 50 MB body is refused early, memory
stays bounded and the process keeps answering other requests while the body is still coming in."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from lib.app.asgi import create_app
from lib.local.serve import ServerThread
from lib.qstash.verify import Verifier
from lib.redis.tcp import TcpRedis
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, Settings
from tests.support.producer import SECRET, RecordingPublisher
from tests.support.redis_snapshot import snapshot
from tests.worker.test_app import BASE, ScriptedRunner, admit, signed

MIB = 1024 * 1024
LIMIT = 1 * MIB
TOTAL = 50 * MIB
CHUNK = 64 * 1024
# The client pauses here (below the limit: the server is mid-body) for the probes.
PAUSE_AT = LIMIT // 2
# /healthz while the big body is being sent (the bar; typically a few ms).
RESPONSIVE_S = 0.5


@pytest.fixture
def settings(tmp_path: Path, valkey_url: str) -> Settings:
    return Settings(
        app_secret=SecretStr(SECRET),
        state_dir=tmp_path / "state",
        redis_url=valkey_url,
        app_base_url=BASE,
        qstash_current_signing_key=SecretStr(DEV_CURRENT_SIGNING_KEY),
        qstash_next_signing_key=SecretStr(DEV_NEXT_SIGNING_KEY),
        body_limit_tasks_bytes=LIMIT,
        body_limit_worker_bytes=LIMIT,
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    """The combined producer + worker app on a loopback port, with its own Redis client."""
    app = create_app(
        settings,
        publisher=RecordingPublisher(),
        runner=ScriptedRunner(["hi"]),
        verifier=Verifier(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY),
    )
    with ServerThread(app) as thread:
        yield thread


@pytest.fixture
async def redis(valkey_url: str) -> AsyncIterator[TcpRedis]:
    client = TcpRedis.from_url(valkey_url)
    await client.execute("FLUSHALL")
    yield client
    await client.aclose()


@dataclass
class Upload:
    """One big POST over a raw socket: sent in chunks, the answer read by a second thread."""

    port: int
    path: str
    headers: dict[str, str]
    chunked: bool
    paused: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    status: int = 0
    body: bytes = b""
    headers_sent_at: float = 0.0
    answered_at: float = 0.0

    def run(self) -> None:
        """Send up to TOTAL bytes (pausing once at PAUSE_AT) until the server answers or closes."""
        block = memoryview(b"x" * CHUNK)
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        reader = threading.Thread(target=self._read, args=(sock,), daemon=True)
        try:
            lines = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1"]
            lines += [f"{k}: {v}" for k, v in self.headers.items()]
            lines.append(
                "Transfer-Encoding: chunked" if self.chunked else f"Content-Length: {TOTAL}"
            )
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            self.headers_sent_at = time.monotonic()
            reader.start()
            while self.sent < TOTAL and not self.answered.is_set():
                if self.chunked:
                    sock.sendall(f"{CHUNK:x}\r\n".encode())
                sock.sendall(block)
                if self.chunked:
                    sock.sendall(b"\r\n")
                self.sent += CHUNK
                if self.sent >= PAUSE_AT and not self.paused.is_set():
                    self.paused.set()
                    self.resume.wait(30)
            if self.chunked and self.sent >= TOTAL:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: expected once it has answered
        finally:
            self.paused.set()
            if reader.is_alive():
                reader.join(30)
            sock.close()

    def _read(self, sock: socket.socket) -> None:
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                piece = sock.recv(65536)
                if not piece:
                    return
                data += piece
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = next(
                int(line.split(":", 1)[1])
                for line in lines
                if line.lower().startswith("content-length:")
            )
            while len(rest) < length:
                piece = sock.recv(65536)
                if not piece:
                    break
                rest += piece
            self.status = int(lines[0].split()[1])
            self.body = rest[:length]
            self.answered_at = time.monotonic()
        except OSError:
            return
        finally:
            self.answered.set()


async def probe(base_url: str) -> float:
    """How long one GET /healthz takes, on a new connection."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        t0 = time.monotonic()
        resp = await client.get("/healthz")
        assert resp.status_code == 200
        return time.monotonic() - t0


async def wait_for(event: threading.Event, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not event.is_set():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("target", ["producer", "worker"])
async def test_50mb_body_refused_while_the_server_stays_responsive(
    server: ServerThread, redis: TcpRedis, settings: Settings, target: str, chunked: bool
) -> None:
    """50 MB is refused with 413 long before it is sent; /healthz answers meanwhile within
    0.5 s; the server never holds more than about the limit; Redis is left as it was."""
    if target == "worker":
        msg = await admit(redis, settings)
        path, _, headers = signed(msg)
    else:
        path, headers = "/api/tasks", {"Content-Type": "application/json"}
    before = await snapshot(redis)
    await probe(server.url)  # first-request costs (imports, connection setup) are not the point
    upload = Upload(server.port, path, headers, chunked)
    tracemalloc.start()
    try:
        sending = asyncio.create_task(asyncio.to_thread(upload.run))
        await wait_for(upload.paused)
        # The client is mid-body (below the limit when chunked): the server must answer.
        latencies = [await probe(server.url) for _ in range(3)]
        upload.resume.set()
        while not sending.done():
            latencies.append(await probe(server.url))
        await sending
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert upload.status == 413, (upload.status, upload.body)
    assert json.loads(upload.body)["error"] == "payload_too_large"
    assert json.loads(upload.body)["max_bytes"] == LIMIT
    assert upload.sent < TOTAL // 2, "the server read on instead of refusing early"
    assert upload.answered_at - upload.headers_sent_at < 10.0
    assert max(latencies) < RESPONSIVE_S, latencies
    assert peak < 8 * MIB, f"peak traced memory {peak / MIB:.1f} MiB for a 50 MiB body"
    assert await snapshot(redis) == before


async def test_unsigned_50mb_delivery_is_401_unread(server: ServerThread, redis: TcpRedis) -> None:
    """A worker call without a signature is answered 401 before its body is read."""
    upload = Upload(server.port, "/api/worker/free/text/stream", {}, chunked=False)
    upload.resume.set()
    await asyncio.to_thread(upload.run)
    assert upload.status == 401
    assert json.loads(upload.body)["error"] == "invalid_signature"
    assert upload.sent < TOTAL // 2
    assert await redis.execute("DBSIZE") == 0
