"""A loopback TCP proxy in front of the app that can cut an event stream in the middle.

The browser talks to the proxy (it is the page's origin); everything is passed through
byte for byte, except that an armed cut closes the next event-stream response right in
the middle of its n-th matching event, as a dropped connection would: the browser gets
an incomplete event (which it must drop) and reconnects with `Last-Event-ID`.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field

_REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")
_LAST_EVENT_ID = re.compile(rb"\r\nlast-event-id: *([^\r\n]*)", re.IGNORECASE)


@dataclass
class Cut:
    """Where to cut: the `count`-th event whose text matches `pattern` (a bytes regex)."""

    pattern: re.Pattern[bytes]
    count: int
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class EventsRequest:
    """An event-stream request that went through the proxy."""

    path: str
    last_event_id: str | None


class CutProxy:
    """Forwards `127.0.0.1:<port>` to `upstream` (host, port); see the module docstring."""

    def __init__(self, upstream: tuple[str, int], events_path: str = "/events") -> None:
        self.upstream = upstream
        self.events_path = events_path.encode()
        self.requests: list[EventsRequest] = []
        self._cut: Cut | None = None
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="cut-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.getsockname()[:2]
        return f"http://{host}:{port}"

    def arm(self, pattern: bytes, count: int) -> Cut:
        """Cut the next event-stream response inside its `count`-th event matching `pattern`."""
        cut = Cut(re.compile(pattern), count)
        with self._lock:
            self._cut = cut
        return cut

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        state: dict[str, Cut | None] = {"cut": None}
        threading.Thread(target=self._requests, args=(client, upstream, state), daemon=True).start()
        self._responses(upstream, client, state)

    def _requests(
        self, client: socket.socket, upstream: socket.socket, state: dict[str, Cut | None]
    ) -> None:
        """Client → app: note event-stream requests (and arm their cut) as they pass."""
        try:
            while data := client.recv(65536):
                line = _REQUEST_LINE.match(data)
                if line and self.events_path in line.group(2).split(b"?")[0]:
                    found = _LAST_EVENT_ID.search(data)
                    self.requests.append(
                        EventsRequest(
                            line.group(2).decode(), found.group(1).decode() if found else None
                        )
                    )
                    with self._lock:
                        state["cut"], self._cut = self._cut, None
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _responses(
        self, upstream: socket.socket, client: socket.socket, state: dict[str, Cut | None]
    ) -> None:
        """App → client, cutting an armed event stream mid-event."""
        seen = b""
        try:
            while data := upstream.recv(65536):
                cut = state["cut"]
                if cut is None:
                    client.sendall(data)
                    continue
                start = len(seen)
                seen += data
                matches = list(cut.pattern.finditer(seen))
                if len(matches) < cut.count:
                    client.sendall(data)
                    continue
                # Half-way into the event: its first bytes go out, the rest never does.
                at = matches[cut.count - 1].start() + 8
                client.sendall(seen[start:at] if at > start else b"")
                cut.done.set()
                break
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
