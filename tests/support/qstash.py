"""Test helpers for the push queue: a loopback receiver that records and verifies deliveries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lib.errors import InvalidSignature
from lib.local.serve import ServerThread
from lib.qstash.verify import Verifier


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic
    wall: float  # unix time
    verdict: str  # "ok" or the verifier's reason


# (request, how many requests this path got before it) → (status, headers)
Behaviour = Callable[[Received, int], tuple[int, dict[str, str]]]


@dataclass
class Receiver:
    """A destination app on loopback: verifies signatures, records, answers as told."""

    verifier: Verifier
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hold_s: dict[str, float] = field(default_factory=dict)
    # Paths whose answers wait until the test sets the event (10 s at most): a delivery
    # stays in flight for as long as the test needs, however slow the machine.
    gates: dict[str, threading.Event] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    base_url: str = ""
    port: int | None = None  # a free one when None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: ServerThread | None = None

    def start(self) -> Receiver:
        app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "DELETE"])]
        )
        self._thread = ServerThread(app, port=self.port)
        self.base_url = self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def url(self, path: str) -> str:
        return self.base_url + path

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        query = request.url.query
        body = await request.body()
        signed_url = self.base_url + path + (f"?{query}" if query else "")
        try:
            self.verifier.verify(request.headers.get("upstash-signature"), body, signed_url)
            verdict = "ok"
        except InvalidSignature as exc:
            verdict = exc.detail
        got = Received(
            path,
            request.method,
            dict(request.headers),
            body,
            time.monotonic(),
            time.time(),
            verdict,
        )
        with self._lock:
            before = len([r for r in self.received if r.path == path])
            self.received.append(got)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.hold_s.get(path, 0.0))
            gate = self.gates.get(path)
            deadline = time.monotonic() + 10
            while gate is not None and not gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            status, headers = 200, dict[str, str]()
            if path in self.behaviours:
                status, headers = self.behaviours[path](got, before)
            if verdict != "ok":
                status = 401
        finally:
            with self._lock:
                self.active -= 1
        return Response(b"answer", status_code=status, headers=headers)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `predicate()` holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
