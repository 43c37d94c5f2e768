"""Contention benchmark (issue #8, profile 1): many users, few slots, a paced streaming provider.

Producer and worker run as two uvicorn processes (as two serverless functions would), with
the local QStash server delivering to the worker, the offline model paced like a provider
(200 ms to the first token, then as long as 100 tokens at 10 ms each) and two Valkeys.
`--users` signed-in users each submit a streaming job_match, wait until it ends and submit
the next, until `--tasks` were submitted; the free pool has `--slots` slots. A quarter of the
tasks ask for a higher priority, so the start order is tested on two bands.

Reported: tasks done / failed / dead-lettered, bounces per task (non-2xx deliveries),
start order violations, run time, tasks/s and the load average. Figures, not a test.

    .venv/bin/python bench/contention.py [--tasks 400] [--users 50] [--slots 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.faults.client import TERMINAL, Api, Task  # noqa: E402
from tests.faults.harness import ProcessStack, StackConfig  # noqa: E402

TTFT_MS = 200.0
# The offline job_match answer is ~260 tokens (4 characters each); paced so that it streams
# for as long as the 100 tokens at 10 ms a token.
ANSWER_TOKENS = 260
STREAM_S = 1.0
HIGH_PRIORITY = 5
ACCESS = re.compile(r'"POST /api/worker/[a-z]+/[a-z]+/[a-z]+ HTTP/[\d.]+" (\d{3})')


@dataclass
class Run:
    """What the load saw."""

    tasks: list[Task] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)  # non-202 submits by status
    wall_s: float = 0.0


async def _watch(stack: ProcessStack, pending: dict[str, asyncio.Event]) -> None:
    """Set each task's event once its hash says it is terminal (one Redis pipeline a tick)."""
    import redis.asyncio as aioredis

    from lib import keys

    client = aioredis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        while True:
            ids = list(pending)
            if ids:
                pipe = client.pipeline(transaction=False)
                for task_id in ids:
                    pipe.hget(keys.task(task_id), "status")
                for task_id, status in zip(ids, await pipe.execute(), strict=True):
                    if status in TERMINAL:
                        pending.pop(task_id).set()
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def load(stack: ProcessStack, *, tasks: int, users: int, stall_s: float) -> Run:
    """Each user submits, waits for the end, submits again, until `tasks` were submitted."""
    out = Run()
    pending: dict[str, asyncio.Event] = {}
    left = [tasks]
    started = time.monotonic()

    async def user(api: Api, index: int) -> None:
        name = f"bench-{index}"
        while left[0] > 0:
            left[0] -= 1
            # The server gives job_match HIGH_PRIORITY (TEMPLATE_PRIORITY); three tasks in
            # four ask for less (callers may only lower their priority).
            priority = HIGH_PRIORITY if left[0] % 4 == 0 else 0
            asked: dict[str, Any] = {} if priority == HIGH_PRIORITY else {"priority": 0}
            try:
                # A service of its own per task: the same body again would be an
                # idempotent hit on the user's previous task.
                task = await api.submit(name, service_id=f"s{left[0]}", **asked)
            except AssertionError as exc:
                out.refused[int(exc.args[0][1])] += 1
                await asyncio.sleep(1.0)
                continue
            task.accepted["priority"] = priority
            out.tasks.append(task)
            done = asyncio.Event()
            pending[task.task_id] = done
            try:
                await asyncio.wait_for(done.wait(), stall_s)
            except TimeoutError:
                return  # stuck: counted as not finished

    async with Api(stack, timeout_s=30.0) as api:
        watcher = asyncio.create_task(_watch(stack, pending))
        try:
            await asyncio.gather(*(user(api, i) for i in range(users)))
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        out.wall_s = time.monotonic() - started
        await api.refresh(out.tasks)
        for task in out.tasks:
            task.events = await api.events(task)
    return out


def bounces(run: Run, worker_log: Path) -> tuple[float, str]:
    """Non-2xx deliveries per task: the API's `bounces` when it has it, else the access log."""
    if run.tasks and all("bounces" in t.status for t in run.tasks):
        total = sum(int(t.status["bounces"] or 0) for t in run.tasks)
        return total / len(run.tasks), "GET /api/tasks/{id} bounces"
    statuses = Counter(ACCESS.findall(worker_log.read_text(errors="replace")))
    refused = sum(n for code, n in statuses.items() if not code.startswith("2"))
    detail = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    return refused / max(1, len(run.tasks)), f"worker access log ({detail})"


def _stream_ms(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


def order_violations(tasks: list[Task]) -> tuple[int, int, str]:
    """Tasks started while a task ahead of them in their queue's order was waiting.

    Ahead = higher priority, or the same priority and an earlier place in the waiting
    order (`created_ms`, the score's time). Waiting = its `queued` event was written
    before the other task's first `started` event and its own `started` after it. The
    instants are stream ids: Redis's own clock, in the order the scripts ran.

    Returns:
        (tasks started out of order, pairs out of order, where the instants came from).
    """
    rows: list[tuple[str, int, int, tuple[int, int], tuple[int, int]]] = []
    for task in tasks:
        queued = [e["id"] for e in task.events if e["type"] == "queued"]
        started = [e["id"] for e in task.events if e["type"] == "started"]
        if not queued or not started:
            continue
        rows.append(
            (
                str(task.status.get("queue_id")),
                int(task.status.get("priority", 0)),
                int(task.status["created_ms"]),
                _stream_ms(queued[0]),
                _stream_ms(started[0]),
            )
        )
    out_of_order: set[int] = set()
    pairs = 0
    for i, (queue, prio, created, _, began) in enumerate(rows):
        for q2, prio2, created2, queued2, began2 in rows:
            ahead = prio2 > prio or (prio2 == prio and created2 < created)
            waiting = queued2 < began < began2
            if q2 == queue and ahead and waiting:
                pairs += 1
                out_of_order.add(i)
    return len(out_of_order), pairs, "stream ids of queued/started events"


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


async def main_async(args: argparse.Namespace) -> int:
    load_start = os.getloadavg()
    tmp = tempfile.TemporaryDirectory(prefix="slotline-contention-")
    config = StackConfig(
        app_env={
            "GLM_FLASH_MAX_WORKERS": str(args.slots),
            "TEMPLATE_PRIORITY": f'{{"job_match": {HIGH_PRIORITY}}}',
            "RATE_USER_LIMIT": "100000",
            "QUEUE_MAX_PENDING": "100000",
        },
        time_scale=args.time_scale,
        model_ttft_ms=TTFT_MS,
        model_tokens_per_s=ANSWER_TOKENS / STREAM_S,
        split=True,
        access_log=True,
        postgres=False,
        preload_llm=True,
    )
    print(
        f"contention: {args.tasks} tasks, {args.users} users, {args.slots} slots, "
        f"QStash time scale {args.time_scale:g}; starting the stack",
        flush=True,
    )
    stack = ProcessStack(Path(tmp.name), config)
    try:
        stack.start()
        run = await load(stack, tasks=args.tasks, users=args.users, stall_s=args.stall_s)
        async with Api(stack) as api:
            dlq = len(await api.dlq())
        per_task, bounce_source = bounces(run, stack.dir / "logs" / "worker.log")
    finally:
        stack.stop()
        tmp.cleanup()
    load_end = os.getloadavg()
    states = Counter(t.state for t in run.tasks)
    failures = Counter(
        str((t.status.get("error") or {}).get("code")) for t in run.tasks if t.state == "failed"
    )
    violators, pairs, prio_source = order_violations(run.tasks)
    done = states.get("done", 0)
    submitted = len(run.tasks)
    created = [int(t.status["created_ms"]) for t in run.tasks if t.status.get("created_ms")]
    finished = [int(t.status["finished_ms"]) for t in run.tasks if t.status.get("finished_ms")]
    span_s = (max(finished) - min(created)) / 1000 if finished and created else 0.0
    rows = [
        ("tasks submitted (202)", str(submitted)),
        ("submits refused", ", ".join(f"{k}: {v}" for k, v in run.refused.items()) or "0"),
        ("done", str(done)),
        ("failed", f"{states.get('failed', 0)} {dict(failures) if failures else ''}".strip()),
        ("not finished", str(submitted - sum(states[s] for s in TERMINAL))),
        ("dead-lettered (QStash DLQ)", str(dlq)),
        ("bounces per task", f"{per_task:.2f}  [{bounce_source}]"),
        ("start order violations", f"{violators} tasks, {pairs} pairs  [{prio_source}]"),
        ("run time", f"{run.wall_s:.1f} s (first submit to last finish {span_s:.1f} s)"),
        ("tasks done/s", f"{done / run.wall_s:.2f}" if run.wall_s else "-"),
        ("ideal tasks/s", f"{args.slots / (TTFT_MS / 1000 + STREAM_S):.2f} (slots / task time)"),
        ("load average at start", " ".join(f"{v:.2f}" for v in load_start)),
        ("load average at end", " ".join(f"{v:.2f}" for v in load_end)),
    ]
    print(f"\n== slotline contention bench ({os.cpu_count()} CPUs)")
    print(table(rows), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=0.05, help="local QStash clock")
    parser.add_argument(
        "--stall-s", type=float, default=60.0, help="give up on a task after this long"
    )
    parser.add_argument("--quick", action="store_true", help="120 tasks")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = min(args.tasks, 120)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
