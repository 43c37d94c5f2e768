"""All state of the local QStash server in Redis: messages, due times, leases, flow control, DLQ."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lib.keys import qstash_namespace
from lib.local.qstash.message import DEDUP_WINDOW_MS, Message, PublishRequest, new_message_id
from lib.redis.port import Arg, RedisPort, load_script, pairs_to_dict, run_script

Outcome = Literal["done", "retry", "release", "dlq", "reclaim"]


class LqsKeys:
    """Every key of the local QStash server (all under `qstash_namespace()`)."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = qstash_namespace() if prefix is None else prefix

    def message(self, message_id: str) -> str:
        return f"{self.prefix}msg:{message_id}"

    @property
    def live(self) -> str:
        """SET of ids of messages not yet delivered, cancelled or dead-lettered."""
        return f"{self.prefix}live"

    @property
    def due(self) -> str:
        """ZSET: message id → when it may be delivered (ms)."""
        return f"{self.prefix}due"

    @property
    def inflight(self) -> str:
        """ZSET: message id → lease expiry (ms) of the delivery attempt under way."""
        return f"{self.prefix}inflight"

    def dedup(self, dedup_id: str) -> str:
        return f"{self.prefix}dedup:{dedup_id}"

    def fc_active(self, key: str) -> str:
        return f"{self.prefix}fc:{key}:active"

    def fc_starts(self, key: str) -> str:
        return f"{self.prefix}fc:{key}:starts"

    def fc_wait(self, key: str) -> str:
        return f"{self.prefix}fc:{key}:wait"

    @property
    def dlq(self) -> str:
        """ZSET: DLQ id → when it was dead-lettered (ms)."""
        return f"{self.prefix}dlq"

    def dlq_entry(self, dlq_id: str) -> str:
        return f"{self.prefix}dlq:{dlq_id}"


@dataclass(frozen=True)
class Claim:
    """The result of trying to start a delivery."""

    status: Literal["claimed", "gone", "waiting", "rate_limited"]
    retried: int = 0


@dataclass(frozen=True)
class DlqEntry:
    """A dead-lettered message and the last response it got."""

    dlq_id: str
    message: Message
    response_status: int
    response_headers: dict[str, list[str]]
    response_body: bytes
    dead_at_ms: int

    def to_json(self) -> dict[str, Any]:
        """As QStash's DLQ API shows it."""
        out = self.message.to_json()
        out.update(dlqId=self.dlq_id, responseStatus=self.response_status)
        out["responseHeader"] = self.response_headers
        try:
            out["responseBody"] = self.response_body.decode("utf-8")
        except UnicodeDecodeError:
            out["responseBodyBase64"] = base64.b64encode(self.response_body).decode()
        return out


class QStashStore:
    """The one class that talks to Redis for the local QStash server."""

    def __init__(self, redis: RedisPort, keys: LqsKeys | None = None) -> None:
        self.redis = redis
        self.keys = keys or LqsKeys()

    async def publish(self, request: PublishRequest) -> tuple[str, bool]:
        """Store and schedule a message, or find the one it duplicates.

        Returns:
            The message id and whether it was deduplicated (an existing id).
        """
        msg = request.message
        keys = [self.keys.message(msg.id), self.keys.due, self.keys.live]
        if request.dedup_id is not None:
            keys.append(self.keys.dedup(request.dedup_id))
        args: list[Arg] = [msg.id, request.due_ms, DEDUP_WINDOW_MS, *msg.to_fields()]
        reply = await run_script(
            self.redis, load_script("lib.local.qstash", "lqs_publish"), keys, args
        )
        return str(reply[0]), int(reply[1]) == 1

    async def get(self, message_id: str) -> Message | None:
        """A message not yet delivered (pending, waiting or in flight), or None."""
        data = pairs_to_dict(await self.redis.execute("HGETALL", self.keys.message(message_id)))
        return Message.from_fields(data) if data else None

    async def cancel(self, message_id: str) -> bool:
        """Delete a message before delivery; True if it existed."""
        fc_key = await self.redis.execute("HGET", self.keys.message(message_id), "fc_key")
        keys = [self.keys.message(message_id), self.keys.due, self.keys.live]
        if fc_key:
            keys.append(self.keys.fc_wait(str(fc_key)))
        reply = await run_script(
            self.redis, load_script("lib.local.qstash", "lqs_cancel"), keys, [message_id]
        )
        return int(reply) == 1

    async def live_ids(self) -> list[str]:
        """Ids of every message not yet settled."""
        return [str(m) for m in await self.redis.execute("SMEMBERS", self.keys.live)]

    async def due_messages(self, now_ms: int, limit: int) -> list[Message]:
        """Up to `limit` messages whose time has come, earliest first."""
        ids = await self.redis.execute(
            "ZRANGEBYSCORE", self.keys.due, "-inf", now_ms, "LIMIT", 0, limit
        )
        if not ids:
            return []
        replies = await self.redis.pipeline([("HGETALL", self.keys.message(i)) for i in ids])
        found = [Message.from_fields(pairs_to_dict(r)) for r in replies if r]
        gone = [str(i) for i, r in zip(ids, replies, strict=True) if not r]
        if gone:
            await self.redis.execute("ZREM", self.keys.due, *gone)
        return found

    async def next_due_ms(self) -> int | None:
        """When the earliest scheduled message falls due."""
        head = await self.redis.execute("ZRANGE", self.keys.due, 0, 0, "WITHSCORES")
        return int(float(head[1])) if head else None

    async def expired_leases(self, now_ms: int, limit: int = 100) -> list[str]:
        """In-flight messages whose lease ran out (their server died mid-delivery)."""
        ids = await self.redis.execute(
            "ZRANGEBYSCORE", self.keys.inflight, "-inf", now_ms, "LIMIT", 0, limit
        )
        return [str(i) for i in ids]

    async def inflight_ids(self) -> list[str]:
        """Every message with a delivery attempt under way (or left by a server that died)."""
        return [str(i) for i in await self.redis.execute("ZRANGE", self.keys.inflight, 0, -1)]

    async def claim(self, msg: Message, *, now_ms: int, lease_ms: int) -> Claim:
        """Move a due message in flight, unless its flow-control key holds it back."""
        keys = [self.keys.due, self.keys.inflight, self.keys.message(msg.id)]
        fc = msg.flow_control
        args: list[Arg] = [msg.id, now_ms, lease_ms, 0, 0, 1000]
        if fc is not None:
            keys += [self.keys.fc_active(fc.key), self.keys.fc_starts(fc.key)]
            keys.append(self.keys.fc_wait(fc.key))
            args[3:] = [fc.parallelism, fc.rate, int(fc.period_s * 1000)]
        reply = await run_script(
            self.redis, load_script("lib.local.qstash", "lqs_claim"), keys, args
        )
        code = int(reply[0])
        if code == 1:
            return Claim("claimed", int(reply[1]))
        return Claim({0: "gone", -1: "waiting"}.get(code, "rate_limited"))  # type: ignore[arg-type]

    async def renew(self, messages: list[Message], *, until_ms: int) -> None:
        """Extend the leases of attempts under way (and their flow-control slots) to `until_ms`.

        `ZADD XX` only updates: an attempt settled meanwhile is not put back.
        """
        commands: list[tuple[Arg, ...]] = []
        for msg in messages:
            commands.append(("ZADD", self.keys.inflight, "XX", until_ms, msg.id))
            if msg.fc_key:
                commands.append(("ZADD", self.keys.fc_active(msg.fc_key), "XX", until_ms, msg.id))
        await self.redis.pipeline(commands)

    async def settle(
        self,
        msg: Message,
        outcome: Outcome,
        *,
        now_ms: int,
        due_ms: int = 0,
        retried: int = 0,
        dlq_id: str = "",
        dlq_fields: Mapping[str, str] | None = None,
    ) -> int:
        """Settle an attempt (see `lqs_settle.lua`); returns the script's reply."""
        keys = [
            self.keys.inflight,
            self.keys.message(msg.id),
            self.keys.due,
            self.keys.live,
            self.keys.dlq,
            self.keys.dlq_entry(dlq_id or "none"),
        ]
        if msg.fc_key:
            keys += [self.keys.fc_active(msg.fc_key), self.keys.fc_wait(msg.fc_key)]
        args: list[Arg] = [msg.id, outcome, now_ms, due_ms, retried, msg.fc_parallelism, dlq_id]
        for name, value in (dlq_fields or {}).items():
            args += [name, value]
        return int(
            await run_script(self.redis, load_script("lib.local.qstash", "lqs_settle"), keys, args)
        )

    async def dead_letter(
        self,
        msg: Message,
        *,
        now_ms: int,
        status: int,
        headers: dict[str, list[str]],
        body: bytes,
    ) -> str | None:
        """Move an in-flight message to the DLQ; returns its DLQ id (None if cancelled)."""
        dlq_id = new_dlq_id(now_ms)
        fields = {
            "dlq_status": str(status),
            "dlq_headers": json.dumps(headers),
            "dlq_body_b64": base64.b64encode(body).decode(),
            "dlq_at_ms": str(now_ms),
            "retried": str(msg.retried),
        }
        reply = await self.settle(msg, "dlq", now_ms=now_ms, dlq_id=dlq_id, dlq_fields=fields)
        return dlq_id if reply == 1 else None

    async def dlq_ids(self) -> list[str]:
        """Every DLQ id, oldest first."""
        return [str(i) for i in await self.redis.execute("ZRANGE", self.keys.dlq, 0, -1)]

    async def dlq_get(self, dlq_id: str) -> DlqEntry | None:
        """One DLQ entry, or None."""
        data = pairs_to_dict(await self.redis.execute("HGETALL", self.keys.dlq_entry(dlq_id)))
        if not data:
            return None
        return DlqEntry(
            dlq_id=dlq_id,
            message=Message.from_fields(data),
            response_status=int(data.get("dlq_status", "0")),
            response_headers=json.loads(data.get("dlq_headers", "{}")),
            response_body=base64.b64decode(data.get("dlq_body_b64", "")),
            dead_at_ms=int(data.get("dlq_at_ms", "0")),
        )

    async def dlq_delete(self, dlq_id: str) -> bool:
        """Remove a DLQ entry; True if it existed."""
        replies = await self.redis.pipeline(
            [("DEL", self.keys.dlq_entry(dlq_id)), ("ZREM", self.keys.dlq, dlq_id)]
        )
        return int(replies[0]) == 1

    async def dlq_retry(self, dlq_id: str, *, now_ms: int) -> str | None:
        """Publish a DLQ entry again as a new message due now; its new id, or None."""
        new_id = new_message_id()
        keys = [
            self.keys.dlq_entry(dlq_id),
            self.keys.dlq,
            self.keys.message(new_id),
            self.keys.due,
            self.keys.live,
        ]
        reply = await run_script(
            self.redis,
            load_script("lib.local.qstash", "lqs_dlq_retry"),
            keys,
            [dlq_id, new_id, now_ms],
        )
        return str(reply) if reply else None


def new_dlq_id(now_ms: int) -> str:
    """A DLQ id in QStash's `{ms}-{n}` shape."""
    return f"{now_ms}-{secrets.randbelow(10**9)}"
