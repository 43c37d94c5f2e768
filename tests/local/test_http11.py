"""`lib.local.http11`: the client against raw loopback servers."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from lib.local.embedded import free_port
from lib.local.http11 import (
    Http11BodyTooLarge,
    Http11Client,
    Http11ConnectError,
    Http11Error,
    Http11Timeout,
)

TLS = Path(__file__).parent / "tls"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One request: its first line, headers (lowercased names) and body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return head[0], headers, body


class Server:
    """A loopback TCP server running `handler` per connection; counts connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def fixed(status: int, body: bytes) -> Handler:
    """Answer every request on the connection with a Content-Length response."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()

    return handle


@pytest.fixture
async def client() -> AsyncIterator[Http11Client]:
    http = Http11Client(max_body=64)
    yield http
    await http.aclose()


async def test_request_and_keep_alive(client: Http11Client) -> None:
    """Status, headers (repeats kept) and body; the second request reuses the connection."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok")

    async with Server(handle) as server:
        for _ in range(2):
            reply = await client.request(
                "POST",
                f"{server.url}/api/worker/x?q=1",
                body=b'{"a": 1}',
                headers={"Upstash-Signature": "sig", "Host": "ignored"},
                timeout_s=2,
            )
            assert (reply.status, reply.body) == (201, b"ok")
            assert [v for k, v in reply.headers if k == "x-a"] == ["1", "2"]
    assert server.connections == 1
    line, headers, body = seen[0]
    assert line == "POST /api/worker/x?q=1 HTTP/1.1"
    assert headers["upstash-signature"] == "sig" and headers["host"] == server.url[7:]
    assert body == b'{"a": 1}'


async def test_chunked_and_close_delimited_bodies(client: Http11Client) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()

    async with Server(chunked) as a, Server(until_close) as b:
        one = await client.request("POST", a.url, body=b"", headers={}, timeout_s=2)
        two = await client.request("POST", b.url, body=b"", headers={}, timeout_s=2)
    assert (one.status, one.body) == (200, b"abcde")
    assert (two.status, two.body) == (200, b"all of it")


async def test_body_is_capped(client: Http11Client) -> None:
    async with Server(fixed(500, b"x" * 1000)) as server:
        reply = await client.request("POST", server.url, body=b"", headers={}, timeout_s=2)
    assert reply.status == 500 and reply.body == b"x" * 64


async def test_connection_closed_while_idle_is_retried_on_a_new_one(
    client: Http11Client,
) -> None:
    """The server closes a kept-alive connection after each answer; the next request still works."""

    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # closes after answering, without saying so

    async with Server(one_then_close) as server:
        for _ in range(3):
            reply = await client.request("POST", server.url, body=b"", headers={}, timeout_s=2)
            assert reply.status == 200
            await asyncio.sleep(0.1)
    assert server.connections == 3


async def test_timeout_and_refused_are_errors_of_their_kind(client: Http11Client) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with Server(silent) as server:
        started = time.monotonic()
        with pytest.raises(Http11Timeout, match="timed out"):
            await client.request("POST", server.url, body=b"", headers={}, timeout_s=0.2)
        assert time.monotonic() - started < 2.5  # cut at 0.2 s, not the peer's 5 s: room for load
    with pytest.raises(Http11ConnectError, match="connect"):
        await client.request(
            "POST", f"http://127.0.0.1:{free_port()}/", body=b"", headers={}, timeout_s=2
        )
    with pytest.raises(Http11Error, match="unsupported"):
        await client.request("POST", "ftp://example/", body=b"", headers={}, timeout_s=2)


async def test_reset_mid_response_is_an_error(client: Http11Client) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    async with Server(half) as server:
        with pytest.raises(Http11Error):
            await client.request("POST", server.url, body=b"", headers={}, timeout_s=2)


async def test_head_answer_has_no_body(client: Http11Client) -> None:
    """A HEAD answer ends with its headers, even with a Content-Length; the connection is reused."""

    async def head_then_post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, _ = await read_request(reader)
            if line.startswith("HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 201 OK\r\nContent-Length: 2\r\n\r\nok")

    async with Server(head_then_post) as server:
        head = await client.request("HEAD", server.url, body=b"", headers={}, timeout_s=1)
        post = await client.request("POST", server.url, body=b"", headers={}, timeout_s=1)
    assert (head.status, head.body) == (200, b"")
    assert (post.status, post.body) == (201, b"ok")
    assert server.connections == 1


async def test_body_over_the_limit_fails_when_not_truncating() -> None:
    """`truncate=False` is for callers that need the whole answer: a longer one is an error."""
    strict = Http11Client(max_body=64, truncate=False)
    try:
        async with Server(fixed(200, b"x" * 64)) as server:
            reply = await strict.request("GET", server.url, body=b"", headers={}, timeout_s=2)
            assert reply.body == b"x" * 64
        async with Server(fixed(200, b"x" * 65)) as server:
            with pytest.raises(Http11BodyTooLarge):
                await strict.request("GET", server.url, body=b"", headers={}, timeout_s=2)
    finally:
        await strict.aclose()


def server_tls() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "loopback-cert.pem", TLS / "loopback-key.pem")
    return context


async def test_https_verifies_the_server_certificate() -> None:
    """A server the client's trust store vouches for is reached; one it does not, refused."""
    trusting = Http11Client(
        ssl_context=ssl.create_default_context(cafile=TLS / "loopback-cert.pem")
    )
    default = Http11Client()  # certifi's CA bundle: the self-signed certificate is not in it
    try:
        async with Server(fixed(201, b"ok"), tls=server_tls()) as server:
            assert server.url.startswith("https://")
            for _ in range(2):
                reply = await trusting.request(
                    "POST", server.url, body=b"", headers={}, timeout_s=2
                )
                assert (reply.status, reply.body) == (201, b"ok")
            assert server.connections == 1
            with pytest.raises(Http11ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await default.request("POST", server.url, body=b"", headers={}, timeout_s=2)
    finally:
        await trusting.aclose()
        await default.aclose()


async def test_connect_timeout_bounds_a_new_connection() -> None:
    """A peer that takes the TCP connection but never answers the TLS handshake."""

    released = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await released.wait()

    client = Http11Client()
    try:
        async with Server(mute) as server:
            url = server.url.replace("http://", "https://")
            started = time.monotonic()
            with pytest.raises(Http11ConnectError, match=r"timed out after 0\.2 s"):
                await client.request(
                    "POST", url, body=b"", headers={}, timeout_s=5, connect_timeout_s=0.2
                )
            # Cut at the 0.2 s connect timeout, not the 5 s one: the rest is room for load.
            assert time.monotonic() - started < 2.0
            released.set()
            await asyncio.sleep(0.05)  # the handlers close their side
    finally:
        await client.aclose()
