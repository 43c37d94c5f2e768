"""One resumable event stream per service, read from the streams it already has.

A service writes its own stream (`service` status changes, `step` announcements, cached
`result`s); each step's task writes its task stream as any task does. A reader does not
copy anything: one XREAD takes the service stream and every announced task stream at
once, and each event it hands out carries a cursor with every stream's position, so
`Last-Event-ID` resumes all of them without a gap or a duplicate.

Cursor: the stream ids, dot-separated: the service stream's first, then the tasks' in the
order their `step` events stand in the service stream (a reader rebuilds that order from
the service stream up to its position). Task events are handed out as
`{"step", "task_id", "data": <the task event's data>}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from lib import keys
from lib.errors import InvalidRequest
from lib.events import START
from lib.redis.port import RedisPort
from lib.tasks.view import Field

BATCH = 200
_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_MAX = 2**64 - 1


@dataclass(frozen=True)
class ServiceEvent:
    """One event of a service's stream, as readers get it."""

    id: str  # the cursor after this event
    type: str
    raw: str  # the data, JSON

    @property
    def data(self) -> object:
        return json.loads(self.raw)

    @property
    def terminal(self) -> bool:
        if self.type != "service":
            return False
        status = json.loads(self.raw).get("status")
        return status in ("done", "error")


def parse_cursor(value: str | None) -> list[str]:
    """A cursor's stream ids (the service stream's first); `0-0` when there is none.

    Raises:
        InvalidRequest: not a cursor of this stream (`reason` event_id).
    """
    if not value:
        return [START]
    parts = value.split(".")
    for part in parts:
        ms, _, seq = part.partition("-")
        if not _ID.match(part) or int(ms) > _MAX or int(seq) > _MAX:
            raise InvalidRequest(f"not a service cursor: {value[:60]!r}", reason="event_id")
    return parts


@dataclass
class ServiceReader:
    """Reads a service's events after a cursor: the service stream and its tasks' streams."""

    redis: RedisPort
    user_id: str
    service_id: str
    positions: list[str] = field(default_factory=lambda: [START])
    steps: list[tuple[str, str]] = field(default_factory=list)  # (step, task id) in order
    _stopped_at_announcement: bool = False
    # Steps whose task waits in its queue: task id -> (step, the queue's waiting key or '',
    # the position last handed out).
    _waiting: dict[str, tuple[str, str, int]] = field(default_factory=dict)

    @property
    def cursor(self) -> str:
        return ".".join(self.positions)

    @property
    def _service_key(self) -> str:
        return keys.service_events(self.user_id, self.service_id)

    def _task_key(self, task_id: str) -> str:
        return keys.events(self.user_id, self.service_id, task_id)

    async def open(self, cursor: str | None) -> None:
        """Place the reader at `cursor` (one XRANGE of the service stream when resuming).

        Raises:
            InvalidRequest: the cursor names more task streams than the service has.
        """
        self.positions = parse_cursor(cursor)
        if self.positions[0] != START:
            entries = await self.redis.execute("XRANGE", self._service_key, "-", self.positions[0])
            for _, flat in entries or []:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                self._learn(str(fields.get("type", "")), str(fields.get("data", "")))
        if len(self.positions) - 1 > len(self.steps):
            raise InvalidRequest("cursor names unknown task streams", reason="event_id")
        self.positions += [START] * (len(self.steps) + 1 - len(self.positions))

    def _learn(self, kind: str, raw: str) -> bool:
        """A `step` event announcing a task: follow its stream from now on."""
        if kind != "step":
            return False
        data = json.loads(raw)
        task_id = data.get("task_id")
        if not task_id or any(t == task_id for _, t in self.steps):
            return False
        self.steps.append((str(data.get("step", "")), str(task_id)))
        return True

    async def read(self, *, block_ms: int | None) -> list[ServiceEvent]:
        """The events after the cursor, oldest first (by Redis time across the streams).

        A read that stopped at an announcement reads on at once (the new task's stream
        included), so one call hands out everything there is.
        """
        out = await self._read_once(block_ms)
        while out and self._stopped_at_announcement:
            more = await self._read_once(None)
            if not more:
                break
            out += more
        return out

    async def _read_once(self, block_ms: int | None) -> list[ServiceEvent]:
        """One XREAD of every stream: the events up to the horizon.

        One XREAD for every stream. Events are handed out in Redis-time order up to a
        horizon: the last entry of a stream that filled its batch (it may have more
        before the others' next ones), and a `step` announcing a task, whose stream is
        read from its start by the next call before anything later is handed out. So a
        service's final `service` event comes after every event of its tasks.
        """
        streams = [(self._service_key, self.positions[0])] + [
            (self._task_key(task_id), self.positions[i + 1])
            for i, (_, task_id) in enumerate(self.steps)
        ]
        found = await self.redis.xread_streams(streams, count=BATCH, block_ms=block_ms)
        self._stopped_at_announcement = False
        index = {key: i for i, (key, _) in enumerate(streams)}
        counts: dict[str, int] = {}
        for key, _ in found:
            counts[key] = counts.get(key, 0) + 1
        horizon: tuple[int, int, int] | None = None
        for key, (entry_id, _) in found:
            if counts[key] >= BATCH:
                last = _rank(entry_id, index[key] == 0)
                horizon = last if horizon is None or last < horizon else horizon
        # Ids are Redis time; within one millisecond sequence numbers are per stream, so a
        # task's events go before the service's own (written after what it reports).
        ordered = sorted(found, key=lambda kv: _rank(kv[1][0], index[kv[0]] == 0))
        out: list[ServiceEvent] = []
        for key, (entry_id, fields) in ordered:
            if horizon is not None and _rank(entry_id, index[key] == 0) > horizon:
                break
            i = index[key]
            self.positions[i] = entry_id
            kind, raw = fields.get("type", ""), fields.get("data", "null")
            if i == 0:
                learned = self._learn(kind, raw)
                if learned:
                    self.positions.append(START)
                out.append(ServiceEvent(self.cursor, kind, raw))
                if learned:
                    self._stopped_at_announcement = True
                    break  # read the new task's stream before anything later
                continue
            step, task_id = self.steps[i - 1]
            self._track(step, task_id, kind, raw)
            raw = _wrap(step, task_id, raw)
            out.append(ServiceEvent(self.cursor, kind, raw))
        return out

    def _track(self, step: str, task_id: str, kind: str, raw: str) -> None:
        if kind == "queued":
            position = json.loads(raw).get("position", 0)
            queue = self._waiting.get(task_id, (step, "", 0))[1]
            self._waiting[task_id] = (step, queue, int(position or 0))
        elif kind != "backpressure":
            self._waiting.pop(task_id, None)  # started, or ended: no longer in its queue

    @property
    def waiting(self) -> bool:
        """Whether a step's task waits in its queue (its position may move)."""
        return bool(self._waiting)

    async def moved(self) -> list[ServiceEvent]:
        """Waiting steps whose position changed, as `queued` events without an id (they
        are not in any stream, so a cursor is not moved by them). One pipelined round
        trip (the first time for a task, one more to learn its queue)."""
        unknown = [t for t, (_, queue, _) in self._waiting.items() if not queue]
        if unknown:
            queues = await self.redis.pipeline(
                [("HGET", keys.task(t), Field.QUEUE) for t in unknown]
            )
            for task_id, queue in zip(unknown, queues, strict=True):
                step, _, shown = self._waiting[task_id]
                self._waiting[task_id] = (step, keys.queue_waiting(str(queue or "")), shown)
        ids = list(self._waiting)
        if not ids:
            return []
        ranks = await self.redis.pipeline([("ZRANK", self._waiting[t][1], t) for t in ids])
        out: list[ServiceEvent] = []
        for task_id, rank in zip(ids, ranks, strict=True):
            step, queue, shown = self._waiting[task_id]
            if rank is None:
                continue  # it left the queue: its `started` comes with the next read
            position = int(rank) + 1
            if position != shown:
                self._waiting[task_id] = (step, queue, position)
                data = json.dumps({"position": position})
                out.append(ServiceEvent("", "queued", _wrap(step, task_id, data)))
        return out


def _wrap(step: str, task_id: str, raw: str) -> str:
    return f'{{"step":{json.dumps(step)},"task_id":{json.dumps(task_id)},"data":{raw}}}'


def _rank(entry_id: str, service: bool) -> tuple[int, int, int]:
    ms, seq = _order(entry_id)
    return ms, 1 if service else 0, seq


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
