"""Start the local QStash server on loopback for `slotline dev`, the tests and the bench."""

from __future__ import annotations

from dataclasses import dataclass

from lib.local.qstash.app import create_app
from lib.local.qstash.delivery import LEASE_S, STARTUP_GRACE_S
from lib.local.serve import ServerThread
from lib.settings import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, DEV_QSTASH_TOKEN


@dataclass
class LocalQStashHandle:
    """A running local QStash server: where it listens and the credentials it uses."""

    url: str
    token: str
    current_key: str
    next_key: str
    _thread: ServerThread

    def stop(self) -> None:
        """Stop serving; deliveries under way get a few seconds, the rest are handed back."""
        self._thread.stop()


def start_local_qstash(
    redis_url: str,
    *,
    time_scale: float = 1.0,
    port: int | None = None,
    token: str = DEV_QSTASH_TOKEN,
    current_key: str = DEV_CURRENT_SIGNING_KEY,
    next_key: str = DEV_NEXT_SIGNING_KEY,
    max_in_flight: int = 64,
    lease_s: float = LEASE_S,
    startup_grace_s: float = STARTUP_GRACE_S,
) -> LocalQStashHandle:
    """Run the server in a background thread (uvicorn on 127.0.0.1).

    Args:
        redis_url: where all its state lives (messages survive a restart).
        time_scale: multiplies retry delays, `Retry-After` and `Upstash-Delay`.
        port: the port to listen on (a free one when None).
        token: the bearer token publishers must send (Upstash's dev token by default).
        current_key: the signing key deliveries are signed with.
        next_key: the next signing key.
        max_in_flight: most deliveries under way at once.
        lease_s: an attempt's lease, renewed while it runs (a dead server's run out).
        startup_grace_s: how long after the start a refused connection to a destination
            that has not answered yet is retried soon, without spending a retry.

    Returns:
        The handle (`.url`, `.token`, `.current_key`, `.next_key`, `.stop()`).

    Raises:
        RuntimeError: the server did not come up.
    """
    app = create_app(
        redis_url,
        token=token,
        current_key=current_key,
        next_key=next_key,
        time_scale=time_scale,
        max_in_flight=max_in_flight,
        lease_s=lease_s,
        startup_grace_s=startup_grace_s,
    )
    thread = ServerThread(app, port=port)
    url = thread.start()
    return LocalQStashHandle(url, token, current_key, next_key, thread)
