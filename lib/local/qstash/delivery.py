"""The delivery loop: claim due messages, send signed requests, retry, dead-letter, call back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import httpx

from lib.clock import now_ms
from lib.local.http11 import Http11Client, Http11ConnectError, Http11Error
from lib.local.qstash.message import Message, PublishRequest, new_message_id
from lib.local.qstash.signing import sign
from lib.local.qstash.store import QStashStore
from lib.local.qstash.wire import WireError, default_backoff_s, eval_retry_delay_ms, retry_after_s

logger = logging.getLogger(__name__)

# An attempt's lease, renewed every third of it while the attempt runs: a server that
# dies mid-delivery leaves leases that run out within this, whatever the message timeout.
LEASE_S = 15.0
RECLAIM_EVERY_S = 1.0
MAX_RESPONSE_BODY = 64 * 1024
# A destination that has not answered since the server started and refuses the
# connection is not up yet: try again this soon, without spending a retry...
NOT_UP_RETRY_S = 0.5
# ...during this long after the server started (then a refusal counts, so a destination
# that never comes up still ends in the DLQ).
STARTUP_GRACE_S = 60.0


def origin(url: str) -> str:
    """`scheme://host:port` of a URL: what "the destination has answered" is kept per."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


class Attempt:
    """What one delivery attempt got back: a response, or a transport error (status 0)."""

    def __init__(
        self,
        status: int,
        headers: httpx.Headers,
        body: bytes,
        error: str = "",
        *,
        refused: bool = False,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.error = error
        self.refused = refused  # the connection was refused: nobody listens there

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def non_retryable(self) -> bool:
        flag = self.headers.get("upstash-nonretryable-error", "")
        return self.status == 489 and flag.strip().lower() == "true"

    def multi_headers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.headers.multi_items():
            out.setdefault(name, []).append(value)
        return out


class Deliverer:
    """Runs in the server's event loop; every decision is settled in Redis by a script."""

    def __init__(
        self,
        store: QStashStore,
        *,
        signing_key: str,
        time_scale: float = 1.0,
        max_in_flight: int = 64,
        poll_s: float = 0.05,
        lease_s: float = LEASE_S,
        startup_grace_s: float = STARTUP_GRACE_S,
    ) -> None:
        self.store = store
        self.signing_key = signing_key
        self.time_scale = time_scale
        self.max_in_flight = max_in_flight
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.startup_grace_s = startup_grace_s
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._http: Http11Client | None = None
        self._last_reclaim = 0.0
        self._last_renew = 0.0
        self._stopping = False
        self._started = time.monotonic()
        # Messages this server has in flight (their leases are renewed) and the origins
        # that have answered an attempt since it started.
        self._inflight: dict[str, Message] = {}
        self._answered: set[str] = set()

    def wake(self) -> None:
        """Look at the due set now (a message was published or a slot freed)."""
        self._wake.set()

    def offer(self, msg: Message, due_ms: int) -> None:
        """A message was just published: if it is due, claim it now, without a scan.

        The claim script decides as it does for the loop (flow control, a claim that
        raced the loop); a message it holds back stays due and the loop finds it.
        """
        if self._stopping or due_ms > now_ms() or len(self._tasks) >= self.max_in_flight:
            self.wake()
            return
        self._spawn(self._claim_and_deliver(msg), f"lqs-offer-{msg.id}")

    async def start(self) -> None:
        """Hand back what a dead predecessor left in flight, then start the loop."""
        self._http = Http11Client(max_body=MAX_RESPONSE_BODY)
        self._started = time.monotonic()
        await self._hand_back_orphans()
        self._loop_task = asyncio.create_task(self._run(), name="lqs-delivery")

    async def _hand_back_orphans(self) -> None:
        """Make every message in flight due now: a server that starts has no attempt under way.

        A server killed mid-delivery leaves its attempts in flight under a lease of the
        delivery timeout plus a margin (minutes), holding their flow-control slots all that
        time; its connections died with it, so their replies will never come. One server per
        Redis is the local setup; were two sharing one, the other's attempts in flight would
        be delivered again, which at-least-once delivery allows.
        """
        now = now_ms()
        for message_id in await self.store.inflight_ids():
            msg = await self.store.get(message_id) or Message(id=message_id, url="")
            if await self.store.settle(msg, "release", now_ms=now, due_ms=now) == 1:
                logger.warning(
                    "message %s: left in flight by a stopped server, redelivering", msg.id
                )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop claiming; let attempts under way finish for `grace_s`, then release the rest."""
        # A flag, not cancel(): a cancellation that lands inside a Redis call can be lost.
        self._stopping = True
        self.wake()
        if self._loop_task is not None:
            done, _ = await asyncio.wait({self._loop_task}, timeout=2.0)
            if not done:
                self._loop_task.cancel()
                await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                busy = await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("delivery loop tick failed")
                busy = False
                await asyncio.sleep(0.5)
            if busy or self._stopping:
                continue
            await self._sleep()

    async def _sleep(self) -> None:
        timeout = self.poll_s
        if self._wake.is_set():
            self._wake.clear()
            return
        # At capacity a due message must wait for an attempt to end (its done callback
        # wakes the loop): asking Redis when the next one is due would spin on "now".
        if len(self._tasks) < self.max_in_flight:
            next_due = await self.store.next_due_ms()
            if next_due is not None:
                timeout = min(timeout, max(0.0, (next_due - now_ms()) / 1000))
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()

    async def _tick(self) -> bool:
        """Claim and start what is due; True when there may be more right away."""
        if time.monotonic() - self._last_renew > self.lease_s / 3:
            self._last_renew = time.monotonic()
            await self._renew()
        if time.monotonic() - self._last_reclaim > RECLAIM_EVERY_S:
            self._last_reclaim = time.monotonic()
            await self._reclaim()
        capacity = self.max_in_flight - len(self._tasks)
        if capacity <= 0:
            return False
        now = now_ms()
        due = await self.store.due_messages(now, capacity)
        started = 0
        for msg in due:
            if self._stopping:
                break
            if not await self._claim(msg, now):
                continue
            self._spawn(self._deliver(msg), f"lqs-deliver-{msg.id}")
            started += 1
        return len(due) == capacity and started > 0

    async def _claim(self, msg: Message, now: int) -> bool:
        """Move `msg` in flight under a lease; False when it is gone or held back."""
        claim = await self.store.claim(msg, now_ms=now, lease_ms=int(self.lease_s * 1000))
        if claim.status != "claimed":
            return False
        msg.retried = claim.retried
        self._inflight[msg.id] = msg
        return True

    async def _renew(self) -> None:
        """Extend the lease of every attempt under way (one round trip)."""
        if self._inflight:
            until = now_ms() + int(self.lease_s * 1000)
            await self.store.renew(list(self._inflight.values()), until_ms=until)

    async def _claim_and_deliver(self, msg: Message) -> None:
        try:
            claimed = await self._claim(msg, now_ms())
        except Exception:
            logger.exception("message %s: claim failed; the loop will retry", msg.id)
            claimed = False
        if claimed:
            await self._deliver(msg)

    def _spawn(self, attempt: Coroutine[Any, Any, None], name: str) -> None:
        """Run an attempt as a tracked task: it counts against `max_in_flight` until done."""
        task = asyncio.create_task(attempt, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.wake()

    async def _reclaim(self) -> None:
        now = now_ms()
        for message_id in await self.store.expired_leases(now):
            msg = await self.store.get(message_id) or Message(id=message_id, url="")
            if await self.store.settle(msg, "reclaim", now_ms=now, due_ms=now) == 1:
                logger.warning("message %s: lease expired, redelivering", message_id)

    async def _deliver(self, msg: Message) -> None:
        try:
            attempt = await self._attempt(msg)
            await self._settle(msg, attempt)
        except asyncio.CancelledError:
            # The server is stopping: hand the message back, so the next server delivers it.
            await self.store.settle(msg, "release", now_ms=now_ms(), due_ms=now_ms())
            raise
        except Exception:
            logger.exception("message %s: settling the attempt failed", msg.id)
        finally:
            self._inflight.pop(msg.id, None)

    async def _attempt(self, msg: Message) -> Attempt:
        assert self._http is not None
        headers = dict(msg.headers)
        if msg.content_type:
            headers["Content-Type"] = msg.content_type
        headers.update(
            {
                "Upstash-Signature": sign(self.signing_key, url=msg.url, body=msg.body),
                "Upstash-Message-Id": msg.id,
                "Upstash-Retried": str(msg.retried),
                "Upstash-Caller-Ip": msg.caller_ip,
                "User-Agent": "Upstash-QStash",
            }
        )
        try:
            response = await self._http.request(
                msg.method, msg.url, body=msg.body, headers=headers, timeout_s=msg.timeout_s
            )
        except Http11Error as exc:
            refused = isinstance(exc, Http11ConnectError) and isinstance(
                exc.__cause__, ConnectionRefusedError
            )
            logger.info("message %s: attempt %d failed: %s", msg.id, msg.retried, exc)
            return Attempt(0, httpx.Headers(), b"", error=str(exc), refused=refused)
        return Attempt(response.status, httpx.Headers(response.headers), response.body)

    def _not_up_yet(self, msg: Message, attempt: Attempt) -> bool:
        """A refusal from a destination that has not answered since this server started."""
        where = origin(msg.url)
        if attempt.status:
            self._answered.add(where)
            return False
        return (
            attempt.refused
            and where not in self._answered
            and time.monotonic() - self._started < self.startup_grace_s
        )

    async def _settle(self, msg: Message, attempt: Attempt) -> None:
        now = now_ms()
        if self._not_up_yet(msg, attempt):
            # Not a failure of the message: the app behind it is still starting (a
            # restarted `slotline dev`). Back in the due set shortly, `retried` unchanged.
            due = now + int(NOT_UP_RETRY_S * 1000)
            await self.store.settle(msg, "release", now_ms=now, due_ms=due)
            logger.debug("message %s: %s is not up yet; again shortly", msg.id, origin(msg.url))
            return
        if attempt.ok:
            await self.store.settle(msg, "done", now_ms=now)
            logger.debug("message %s delivered (status %d)", msg.id, attempt.status)
            if msg.callback:
                await self._call_back(msg.callback, msg, attempt, msg.callback_headers)
            return
        if not attempt.non_retryable and msg.retried < msg.max_retries:
            delay_s = self._retry_delay_s(msg, attempt)
            due = now + int(delay_s * 1000)
            await self.store.settle(msg, "retry", now_ms=now, due_ms=due, retried=msg.retried + 1)
            logger.info(
                "message %s: status %d, retry %d in %.3f s",
                msg.id,
                attempt.status,
                msg.retried + 1,
                delay_s,
            )
            return
        dlq_id = await self.store.dead_letter(
            msg,
            now_ms=now,
            status=attempt.status,
            headers=attempt.multi_headers(),
            body=attempt.body or attempt.error.encode(),
        )
        logger.warning("message %s dead-lettered (status %d)", msg.id, attempt.status)
        if dlq_id is not None and msg.failure_callback:
            await self._call_back(
                msg.failure_callback, msg, attempt, msg.failure_callback_headers, dlq_id=dlq_id
            )

    def _retry_delay_s(self, msg: Message, attempt: Attempt) -> float:
        """Delay before the next attempt: the response's ask, or the scaled expression/backoff.

        A `Retry-After` (or reset header) is the destination's own ask in real seconds
        (e.g. what a slot lease has left), so it is honoured as is; only QStash's own
        schedule is scaled by `time_scale`.
        """
        asked = retry_after_s(attempt.headers, time.time())
        if asked is not None:
            return asked
        delay = None
        if msg.retry_delay:
            try:
                delay = eval_retry_delay_ms(msg.retry_delay, msg.retried) / 1000
            except WireError:
                delay = None
        if delay is None:
            delay = default_backoff_s(msg.retried + 1)
        return delay * self.time_scale

    async def _call_back(
        self,
        url: str,
        msg: Message,
        attempt: Attempt,
        headers: dict[str, str],
        *,
        dlq_id: str = "",
    ) -> None:
        """Publish a (failure) callback as a message of its own, signed and retried."""
        payload = {
            "status": attempt.status,
            "header": attempt.multi_headers(),
            "body": base64.b64encode(attempt.body).decode(),
            "retried": msg.retried,
            "maxRetries": msg.max_retries,
            "sourceMessageId": msg.id,
            "url": msg.url,
            "method": msg.method,
            "sourceHeader": {k: [v] for k, v in msg.headers.items()},
            "sourceBody": base64.b64encode(msg.body).decode(),
            "notBefore": msg.not_before_ms,
            "createdAt": msg.created_at_ms,
            "callerIP": msg.caller_ip,
        }
        if dlq_id:
            payload["dlqId"] = dlq_id
        now = now_ms()
        callback = Message(
            id=new_message_id(),
            url=url,
            body=json.dumps(payload).encode(),
            content_type="application/json",
            headers=dict(headers),
            not_before_ms=now,
            created_at_ms=now,
            caller_ip=msg.caller_ip,
        )
        await self.store.publish(PublishRequest(callback, now, None))
        self.wake()
