"""A small HTTP/1.1 client on asyncio streams, parsed by httptools.

The local QStash server's deliveries (every task's way to its worker on the local
stack) use it: httpx's own transport (httpcore, h11, anyio) spends about a millisecond
of CPU per request; this client spends a fraction of that with the C parser uvicorn
uses. It does what those calls need and no more: absolute `http`/`https` URLs, a
request body of known length, a response with a status, headers and a body
(length-delimited, chunked or until close), one pool of idle connections per origin,
and a timeout over the whole exchange. No proxies, no HTTP/2, no redirects: a worker
needs none of them. Production code does not use it: the producer publishes through
the qstash SDK on its own httpx client (docs/decisions.md, "Producer").
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import certifi
import httptools

MAX_IDLE_PER_ORIGIN = 32
READ_SIZE = 64 * 1024

Origin = tuple[str, str, int]


class Http11Error(Exception):
    """The exchange failed before a whole response arrived (connect, send, read, timeout)."""


class Http11ConnectError(Http11Error):
    """No connection: refused, unreachable, TLS handshake failed."""


class Http11Timeout(Http11Error):
    """The whole exchange took longer than its timeout."""


class Http11BodyTooLarge(Http11Error):
    """The response body is longer than the client accepts (`truncate=False`)."""


@dataclass
class Response:
    """A whole response; `headers` keep their order and repeats (names lowercased)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class _Parse:
    """httptools callbacks collecting one response."""

    max_body: int
    truncate: bool = True
    head: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    headers_done: bool = False
    status: int = 0
    complete: bool = False
    keep_alive: bool = False
    too_large: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.parser is not None:
            self.status = self.parser.get_status_code()
            if self.head:  # the answer to HEAD has no body, whatever its headers say
                self.complete = True
                self.keep_alive = self.parser.should_keep_alive()

    def close_delimited(self) -> bool:
        """No length and not chunked: the body runs until the server closes."""
        return not any(n in ("content-length", "transfer-encoding") for n, _ in self.headers)

    def on_body(self, body: bytes) -> None:
        room = self.max_body - len(self.body)
        if len(body) > room and not self.truncate:
            self.too_large = True  # raised by the reader: httptools wraps callback errors
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        self.complete = True
        # Asked here: once the message is complete the parser resets for the next one.
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class Http11Client:
    """One per event loop and user (a delivery loop, a publisher); `aclose()` closes it.

    Args:
        max_body: the longest response body kept.
        truncate: `True` keeps the first `max_body` bytes of a longer body (deliveries
            store what a worker answered, capped); `False` fails the request.
        ssl_context: for `https` origins; certifi's CA bundle (as httpx's) by default.
    """

    def __init__(
        self,
        *,
        max_body: int = READ_SIZE,
        truncate: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_body = max_body
        self.truncate = truncate
        self._idle: dict[Origin, list[_Conn]] = {}
        self._ssl = ssl_context

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes,
        headers: Mapping[str, str] | Sequence[tuple[str, str]],
        timeout_s: float,
        connect_timeout_s: float | None = None,
    ) -> Response:
        """Send one request and read the whole response within `timeout_s`.

        A new connection (TCP and TLS) must be made within `connect_timeout_s` too,
        when given: an unreachable host fails fast even under a long `timeout_s`.

        A pooled connection that ends before any byte of the response (the server
        closed it while idle) is retried once on a new one. Only callers whose requests
        may arrive twice use this client: deliveries are at-least-once (the worker skips
        a task it has finished) and a publish carries its deduplication id.

        Raises:
            Http11Error: no whole response (refused, reset, timed out, malformed, or a
                body over `max_body` with `truncate=False`); the subclasses say which.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Http11Error(f"unsupported URL: {url[:80]}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin: Origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.netloc.rsplit("@", 1)[-1]
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        head += [f"{name}: {value}" for name, value in pairs if _allowed(name)]
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(timeout_s):
                return await self._exchange(
                    origin, payload, method.upper() == "HEAD", connect_timeout_s
                )
        except TimeoutError as exc:
            raise Http11Timeout(f"timed out after {timeout_s:g} s") from exc

    async def _exchange(
        self, origin: Origin, payload: bytes, head: bool, connect_timeout_s: float | None
    ) -> Response:
        conn = self._pooled(origin)
        if conn is not None:
            try:
                return await self._send(origin, conn, payload, head)
            except _StaleConnection:
                pass  # closed by the server while idle: once more on a new connection
        conn = await self._connect(origin, connect_timeout_s)
        try:
            return await self._send(origin, conn, payload, head)
        except _StaleConnection as exc:
            raise Http11Error("server closed the connection without a response") from exc

    def _pooled(self, origin: Origin) -> _Conn | None:
        """An idle connection to `origin` that has not visibly been closed, if any."""
        pooled = self._idle.get(origin, [])
        while pooled:
            conn = pooled.pop()
            if not (conn.reader.at_eof() or conn.writer.is_closing()):
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, timeout_s: float | None) -> _Conn:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                # httpx's trust store (certifi's bundle), so switching to this client
                # trusts what the SDK's own client trusted, on hosts without CA files too.
                self._ssl = ssl.create_default_context(cafile=certifi.where())
            context = self._ssl
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
        except TimeoutError as exc:
            raise Http11ConnectError(
                f"connect {host}:{port}: timed out after {timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise Http11ConnectError(f"connect {host}:{port}: {exc}") from exc
        return _Conn(reader, writer)

    async def _send(self, origin: Origin, conn: _Conn, payload: bytes, head: bool) -> Response:
        parse = _Parse(self.max_body, self.truncate, head)
        parser = parse.parser = httptools.HttpResponseParser(parse)
        received = False
        try:
            conn.writer.write(payload)
            await conn.writer.drain()
            while not parse.complete:
                data = await conn.reader.read(READ_SIZE)
                if not data:
                    if not received:
                        raise _StaleConnection
                    if parse.headers_done and parse.close_delimited():
                        break  # the close ends the body
                    raise Http11Error("connection closed mid-response")
                received = True
                parser.feed_data(data)
                if parse.too_large:
                    raise Http11BodyTooLarge(f"response body over {self.max_body} bytes")
        except _StaleConnection:
            conn.close()
            raise
        except (OSError, httptools.HttpParserError) as exc:
            conn.close()
            if not received and isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise _StaleConnection from exc
            raise Http11Error(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()  # cancelled or timed out mid-exchange: the connection is unusable
            raise
        response = Response(parse.status, parse.headers, bytes(parse.body))
        reusable = parse.complete and parse.keep_alive
        if reusable and len(self._idle.get(origin, ())) < MAX_IDLE_PER_ORIGIN:
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.close()
        return response

    async def aclose(self) -> None:
        """Close every idle connection."""
        conns = [c for pooled in self._idle.values() for c in pooled]
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()


class _StaleConnection(Exception):
    """The connection ended before any byte of the response (safe to retry)."""


def _allowed(name: str) -> bool:
    """Headers the client sets itself are not taken from the caller."""
    return name.lower() not in ("host", "content-length", "transfer-encoding", "connection")
