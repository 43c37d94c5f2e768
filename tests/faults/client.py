"""What the fault tests and the contention bench observe, through public surfaces only.

The producer's HTTP API (submit, status, the long-poll event form), the local QStash
server's DLQ API, the Redis keys the design names (`lib/keys.py`) and the
`llm_usage_logs` table. Reads tolerate a part being down: a fault test polls through it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from lib import keys
from lib.clock import now_ms
from lib.settings import DEV_QSTASH_TOKEN

TERMINAL = frozenset({"done", "failed", "cancelled"})
JOB_MATCH: dict[str, Any] = {
    "template": "job_match",
    "variables": {
        "resume_text": "Python developer: asyncio, Redis, PostgreSQL.",
        "job_text": "Backend engineer: Python, Redis, PostgreSQL.",
    },
    "lang": "en",
}


@dataclass
class Task:
    """One submitted task and what was last seen of it."""

    task_id: str
    user: str
    token: str
    accepted: dict[str, Any]
    status: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return str(self.status.get("status", "unknown"))

    @property
    def error_code(self) -> str | None:
        error = self.status.get("error")
        return str(error["code"]) if isinstance(error, dict) else None


def outcome(tasks: Iterable[Task]) -> Counter[str]:
    """Statuses, failures by code (`failed:delivery_failed`), for assertion messages."""
    counts: Counter[str] = Counter()
    for task in tasks:
        counts[f"{task.state}:{task.error_code}" if task.error_code else task.state] += 1
    return counts


class Target(Protocol):
    """Where a stack answers: `ProcessStack`, or a `slotline dev` the bench started."""

    @property
    def app_url(self) -> str: ...

    @property
    def worker_url(self) -> str: ...

    @property
    def qstash_url(self) -> str: ...

    def token(self, user_id: str, ttl_s: int = 3600) -> str: ...


class Api:
    """The producer API as a signed-in user sees it (one bearer token per user)."""

    def __init__(self, stack: Target, *, timeout_s: float = 10.0) -> None:
        self.stack = stack
        self.http = httpx.AsyncClient(
            base_url=stack.app_url,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def submit(self, user: str, body: dict[str, Any] | None = None, **extra: Any) -> Task:
        """Submit one task as `user`.

        Raises:
            AssertionError: the producer did not answer 202.
        """
        token = self.stack.token(user)
        payload = {**(body or JOB_MATCH), **extra}
        response = await self.http.post("/api/tasks", json=payload, headers=self._auth(token))
        assert response.status_code == 202, (user, response.status_code, response.text)
        accepted = response.json()
        assert not accepted["existing"], (user, "an idempotent hit, not a new task")
        return Task(accepted["task_id"], user, token, accepted)

    async def submit_many(self, users: Sequence[str], **extra: Any) -> list[Task]:
        """One task per user, all at once."""
        return list(await asyncio.gather(*(self.submit(user, **extra) for user in users)))

    async def status(self, task: Task) -> dict[str, Any] | None:
        """`GET /api/tasks/{id}`, or None while the app (or its Redis) cannot answer."""
        try:
            response = await self.http.get(
                f"/api/tasks/{task.task_id}", headers=self._auth(task.token)
            )
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        data: dict[str, Any] = response.json()
        task.status = data
        return data

    async def refresh(self, tasks: Sequence[Task]) -> None:
        await asyncio.gather(*(self.status(task) for task in tasks))

    async def wait_terminal(
        self, tasks: Sequence[Task], *, timeout_s: float, poll_s: float = 0.2
    ) -> bool:
        """Poll until every task is terminal or `timeout_s` passed; True when all are."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = [t for t in tasks if t.state not in TERMINAL]
            if not left:
                return True
            if time.monotonic() > deadline:
                return False
            await self.refresh(left)
            await asyncio.sleep(poll_s)

    async def wait_running(
        self, tasks: Sequence[Task], count: int, *, timeout_s: float, poll_s: float = 0.05
    ) -> list[Task]:
        """Wait until at least `count` tasks have streamed a token; those tasks.

        Raises:
            TimeoutError: fewer were streaming after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            await self.refresh(tasks)
            running = [t for t in tasks if t.state == "running"]
            streaming = [t for t in running if await self._has_token(t)]
            if len(streaming) >= count:
                return streaming
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(streaming)} of {count} tasks streaming: {outcome(tasks)}")
            await asyncio.sleep(poll_s)

    async def _has_token(self, task: Task) -> bool:
        return any(e["type"] == "token" for e in await self.events(task))

    async def events(self, task: Task) -> list[dict[str, Any]]:
        """Every event of the task's stream so far, read from the start (JSON long-poll)."""
        out: list[dict[str, Any]] = []
        after = "0-0"
        while True:
            response = await self.http.get(
                f"/api/tasks/{task.task_id}/events",
                params={"after": after, "wait": 0},
                headers=self._auth(task.token),
            )
            response.raise_for_status()
            page = response.json()
            out.extend(page["events"])
            if not page["events"] or page["last_id"] == after:
                return out
            after = page["last_id"]

    async def dlq(self) -> list[dict[str, Any]]:
        """Every message in the local QStash server's dead-letter queue."""
        messages: list[dict[str, Any]] = []
        cursor = ""
        async with httpx.AsyncClient(base_url=self.stack.qstash_url, timeout=10.0) as http:
            while True:
                response = await http.get(
                    "/v2/dlq",
                    params={"cursor": cursor, "count": 100} if cursor else {"count": 100},
                    headers={"Authorization": f"Bearer {DEV_QSTASH_TOKEN}"},
                )
                response.raise_for_status()
                page = response.json()
                messages.extend(page.get("messages", []))
                cursor = page.get("cursor") or ""
                if not cursor:
                    return messages


def final_text(events: Sequence[dict[str, Any]]) -> str:
    """The streamed text a client shows at the end: tokens after the last `restart`."""
    text: list[str] = []
    for event in events:
        if event["type"] == "restart":
            text.clear()
        elif event["type"] == "token":
            text.append(str(event["data"].get("text", "")))
    return "".join(text)


def types(events: Sequence[dict[str, Any]]) -> Counter[str]:
    return Counter(str(e["type"]) for e in events)


async def leftovers(redis_url: str) -> dict[str, Any]:
    """What a quiet system must not hold: live slot leases, pending counts, user locks.

    Also what it may hold without harm, for the bench's report: expired lease members not
    yet purged (the next start purges them), waiting-order and spec entries.

    Returns:
        `{"leases": {pool: n}, "pending": {key: value}, "user_locks": [key, ...],
        "stale_leases": {pool: n}, "waiting": {key: n}, "specs": {key: n}}`, each with
        only the non-empty entries.
    """
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        leases: dict[str, int] = {}
        stale: dict[str, int] = {}
        now = now_ms()
        async for key in client.scan_iter(match=keys.model_pool("*", "*")):
            # Live leases only: an expired one holds no slot (every start purges them first).
            count = int(await client.zcount(key, f"({now}", "+inf"))
            if count:
                leases[key] = count
            expired = int(await client.zcount(key, "-inf", now))
            if expired:
                stale[key] = expired
        pending: dict[str, str] = {}
        async for key in client.scan_iter(match=keys.queue_pending("*")):
            value = await client.get(key)
            if value not in (None, "0"):
                pending[key] = str(value)
        locks = sorted([key async for key in client.scan_iter(match=keys.user_lock("*", "*"))])
        waiting: dict[str, int] = {}
        async for key in client.scan_iter(match=keys.queue_waiting("*")):
            if size := int(await client.zcard(key)):
                waiting[key] = size
        specs: dict[str, int] = {}
        async for key in client.scan_iter(match=keys.queue_specs("*")):
            if size := int(await client.hlen(key)):
                specs[key] = size
        return {
            "leases": leases,
            "pending": pending,
            "user_locks": locks,
            "stale_leases": stale,
            "waiting": waiting,
            "specs": specs,
        }
    finally:
        await client.aclose()


def is_clean(state: dict[str, Any]) -> bool:
    return not state["leases"] and not state["pending"] and not state["user_locks"]


async def usage_rows(database_url: str) -> list[dict[str, Any]]:
    """Every row of `llm_usage_logs` (user, template, success, error) in insertion order.

    Read under the specified column names, aliased to the short ones the tests use.
    """
    import psycopg
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as conn:
        cur = await conn.execute(
            "SELECT user_id, service_id, task_template_id AS template, model_id AS model,"
            " is_success AS success, error_message, output_tokens, task_id, attempt"
            " FROM llm_usage_logs ORDER BY id"
        )
        return list(await cur.fetchall())


async def usage_pending(redis_url: str) -> int:
    """Usage rows still in Redis, not yet drained to Postgres."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(await client.xlen(keys.usage_stream()))
    finally:
        await client.aclose()


async def usage_pending_users(redis_url: str) -> list[str]:
    """The user of every usage row still in Redis (one entry holds a JSON list of rows)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        entries: list[tuple[str, dict[str, str]]] = list(
            await client.xrange(keys.usage_stream())  # type: ignore[arg-type]
        )
    finally:
        await client.aclose()
    return [
        str(row.get("user_id"))
        for _, fields in entries
        for row in json.loads(fields.get("rows") or "[]")
    ]


async def drain_usage(stack: Target) -> int:
    """Call the worker's signed `POST /api/worker/drain` as QStash's schedule would."""
    from lib.local.qstash.signing import sign
    from lib.settings import DEV_CURRENT_SIGNING_KEY

    url = f"{stack.worker_url}/api/worker/drain"
    body = b"{}"
    headers = {
        "Upstash-Signature": sign(DEV_CURRENT_SIGNING_KEY, url=url, body=body),
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(timeout=30.0) as http:
        response = await http.post(url, content=body, headers=headers)
    response.raise_for_status()
    return int(json.loads(response.text).get("flushed", 0))
