"""Figures of one fault run (`bench/faults.py`): outcomes, double runs, leftovers, usage, recovery.

Pure: computed from what the run observed (task statuses and event streams, the DLQ size,
the Redis leftovers read a lease length after the end, the `llm_usage_logs` rows) and the
instants of the fault. Event instants are stream ids, i.e. Valkey's clock in ms; the
bench takes the fault's instants with `time.time()` on the same host, the same clock.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.faults.client import TERMINAL, Task, final_text, outcome

END_EVENTS = frozenset({"done", "error", "cancelled"})


@dataclass
class Observed:
    """What one scenario saw; the instants are host ms (`time.time() * 1000`)."""

    scenario: str
    params: list[tuple[str, str]]
    tasks: list[Task]
    reference: str
    first_submit_ms: int
    fault_ms: int  # the part was killed (or hung)
    back_ms: int  # its restart was issued (or SIGCONT sent)
    ready_ms: int  # the restarted part answered
    lease_ms: int
    dlq: int = 0
    leftovers: dict[str, Any] = field(default_factory=dict)
    leftovers_at_ms: int = 0
    usage: list[dict[str, Any]] = field(default_factory=list)
    usage_pending: list[str] = field(default_factory=list)  # users of rows still in Redis
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    extra: list[tuple[str, str]] = field(default_factory=list)
    # Retry delays the local QStash server scheduled (its log), "12 s" → count; None: n/a.
    retry_delays: Counter[str] | None = None


def event_ms(event: dict[str, Any]) -> int:
    """The Redis time (ms) of a stream event, from its id."""
    return int(str(event["id"]).partition("-")[0])


@dataclass
class TaskFigures:
    """One task's stream read against the fault."""

    task: Task
    types: Counter[str]
    text_ok: bool
    at_fault: str  # "finished" | "streaming" | "started" | "queued"
    restart_after_ms: int | None  # fault → its first restart event after the fault
    gap_ms: int | None  # its last event before the fault → its first one after it
    done_ms: int | None

    @property
    def ran_twice(self) -> bool:
        """More than one completion, or a done task whose text is not the reference's."""
        wrong_text = self.task.state == "done" and not self.text_ok
        return self.types["done"] > 1 or self.types["result"] > 1 or wrong_text


def analyse(task: Task, reference: str, fault_ms: int) -> TaskFigures:
    """Where the task was at the fault, and how its stream went on."""
    events = task.events
    before = [e for e in events if event_ms(e) < fault_ms]
    after = [e for e in events if event_ms(e) >= fault_ms]
    kinds = {str(e["type"]) for e in before}
    if kinds & END_EVENTS:
        at_fault = "finished"
    elif "token" in kinds:
        at_fault = "streaming"
    elif "started" in kinds:
        at_fault = "started"
    else:
        at_fault = "queued"
    restarts = [event_ms(e) - fault_ms for e in after if e["type"] == "restart"]
    gap = None
    if at_fault in ("streaming", "started") and after:
        gap = event_ms(after[0]) - event_ms(before[-1])
    done = [event_ms(e) for e in events if e["type"] == "done"]
    return TaskFigures(
        task=task,
        types=Counter(str(e["type"]) for e in events),
        text_ok=final_text(events) == reference,
        at_fault=at_fault,
        restart_after_ms=restarts[0] if restarts else None,
        gap_ms=gap,
        done_ms=max(done) if done else None,
    )


@dataclass
class UsageCheck:
    """`llm_usage_logs` against the tasks' attempts (one user per task)."""

    rows: int
    attempts: int
    ok_rows: int
    lost_rows: int
    other_failed: int
    mismatched: list[str]  # task ids whose rows do not match their attempts
    other_users: int  # rows of users the run did not submit for (the reference task)


def check_usage(tasks: Sequence[Task], rows: Sequence[dict[str, Any]]) -> UsageCheck:
    """Each task should have one row per attempt: one success if done, the rest `lost`."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_user.setdefault(str(row["user_id"]), []).append(row)
    users = {t.user for t in tasks}
    mine = [r for r in rows if str(r["user_id"]) in users]
    mismatched = []
    attempts = 0
    for task in tasks:
        n = int(task.status.get("attempts") or 0)
        attempts += n
        got = by_user.get(task.user, [])
        ok = sum(1 for r in got if r["success"])
        lost = sum(1 for r in got if _lost(r))
        if len(got) != n or ok != (1 if task.state == "done" else 0) or lost != n - ok:
            mismatched.append(task.task_id)
    return UsageCheck(
        rows=len(mine),
        attempts=attempts,
        ok_rows=sum(1 for r in mine if r["success"]),
        lost_rows=sum(1 for r in mine if _lost(r)),
        other_failed=sum(1 for r in mine if not r["success"] and not _lost(r)),
        mismatched=mismatched,
        other_users=len(rows) - len(mine),
    )


def _lost(row: dict[str, Any]) -> bool:
    return not row["success"] and str(row["error_message"] or "").lower().startswith("lost")


def _s(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def _ids(ids: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(ids[:limit])
    return f" [{shown}{', …' if len(ids) > limit else ''}]" if ids else ""


def _counts(mapping: dict[str, Any]) -> str:
    return str(sum(int(v) for v in mapping.values()))


def figures(run: Observed) -> list[tuple[str, str]]:
    """The rows of the scenario's table."""
    per = [analyse(t, run.reference, run.fault_ms) for t in run.tasks]
    states = Counter(t.state for t in run.tasks)
    failed = Counter(t.error_code or "?" for t in run.tasks if t.state == "failed")
    unfinished = [t for t in run.tasks if t.state not in TERMINAL]
    at_fault = Counter(f.at_fault for f in per)
    twice = [f.task.task_id for f in per if f.ran_twice]
    attempts = [int(t.status.get("attempts") or 0) for t in run.tasks]
    bounces = sum(int(t.status.get("bounces") or 0) for t in run.tasks)
    restarts = sum(f.types["restart"] for f in per)
    left = run.leftovers
    usage = check_usage(run.tasks, run.usage)
    done_at = [f.done_ms for f in per if f.done_ms is not None]
    last_done = max(done_at) if done_at and not unfinished else None
    restarted = [f.restart_after_ms for f in per if f.restart_after_ms is not None]
    gaps = [f.gap_ms for f in per if f.gap_ms is not None]
    n = len(run.tasks)
    after_restart = sorted(d - run.back_ms for d in done_at if d >= run.back_ms)
    rows = [
        *run.params,
        ("tasks accepted (202)", str(n)),
        (
            "at the fault",
            f"{at_fault['finished']} finished, {at_fault['streaming']} streaming, "
            f"{at_fault['started']} started (no token yet), {at_fault['queued']} queued",
        ),
        ("done", str(states.get("done", 0))),
        ("failed", f"{sum(failed.values())} {dict(failed) if failed else ''}".strip()),
        (
            "not finished",
            f"{len(unfinished)} {dict(outcome(unfinished)) if unfinished else ''}".strip()
            + _ids([t.task_id for t in unfinished]),
        ),
        ("dead-lettered (QStash DLQ)", str(run.dlq)),
        ("run to completion twice", f"{len(twice)}{_ids(twice)}"),
        (
            "attempts total / restarts",
            f"{sum(attempts)} attempts ({sum(1 for a in attempts if a > 1)} tasks with more "
            f"than one), {restarts} restart events",
        ),
        ("bounces per task", f"{bounces / n:.2f}" if n else "-"),
        (
            "left after the lease TTL",
            f"leases {_counts(left.get('leases', {}))}, pending counts "
            f"{_counts(left.get('pending', {}))}, user locks "
            f"{len(left.get('user_locks', []))} (read "
            f"{_s(run.leftovers_at_ms - (last_done or run.leftovers_at_ms))} after the last "
            f"done; lease {_s(run.lease_ms)})",
        ),
        (
            "  harmless leftovers",
            f"expired lease members {_counts(left.get('stale_leases', {}))}, waiting "
            f"{_counts(left.get('waiting', {}))}, specs {_counts(left.get('specs', {}))}",
        ),
        (
            "usage rows vs attempts",
            f"{usage.rows} rows for {usage.attempts} attempts (success {usage.ok_rows}, "
            f"lost {usage.lost_rows}, other failed {usage.other_failed}); tasks not matching "
            f"{len(usage.mismatched)}{_ids(usage.mismatched)}; still in Redis "
            f"{len(run.usage_pending)}{_ids(run.usage_pending)}",
        ),
        ("restart → answering again", _s(run.ready_ms - run.back_ms)),
        (
            "restart → last task done",
            _s(last_done - run.back_ms) if last_done else "- (not all finished)",
        ),
        ("fault → last task done", _s(last_done - run.fault_ms) if last_done else "-"),
        (
            "tasks done after the restart",
            f"{len(after_restart)}; restart → done median "
            f"{_s(after_restart[len(after_restart) // 2])}, worst {_s(after_restart[-1])}"
            if after_restart
            else "0",
        ),
        (
            "worst kill → restart event",
            f"{_s(max(restarted))} ({len(restarted)} tasks restarted; median "
            f"{_s(sorted(restarted)[len(restarted) // 2])})"
            if restarted
            else "- (no task restarted)",
        ),
        ("worst stream gap across the fault", _s(max(gaps)) if gaps else "-"),
        ("first submit → last done", _s(last_done - run.first_submit_ms) if last_done else "-"),
        (
            "QStash retry delays (its log)",
            ", ".join(f"{k} ×{v}" for k, v in sorted(run.retry_delays.items(), key=_delay))
            or "none"
            if run.retry_delays is not None
            else "- (in-process QStash, not logged)",
        ),
        *run.extra,
        ("load average at start", " ".join(f"{v:.2f}" for v in run.load_start)),
        ("load average at end", " ".join(f"{v:.2f}" for v in run.load_end)),
    ]
    return rows


RETRY_LINE = re.compile(r"status (\d+), retry \d+ in ([\d.]+) s")


def retry_delays(log_text: str) -> Counter[str]:
    """The local QStash server's scheduled retries by delay: "12 s (status 0)" → count."""
    return Counter(
        f"{float(delay):.0f} s ({'refused/cut' if status == '0' else status})"
        for status, delay in RETRY_LINE.findall(log_text)
    )


def _delay(item: tuple[str, int]) -> float:
    return float(item[0].split()[0])


def sequence(task: Task, fault_ms: int) -> str:
    """The task's events as `type@+s` relative to the fault, token runs folded."""
    out: list[str] = []
    run: list[int] = []

    def fold() -> None:
        if run:
            out.append(f"token×{len(run)}({run[0] / 1000:+.2f}..{run[-1] / 1000:+.2f})")
            run.clear()

    for event in task.events:
        at = event_ms(event) - fault_ms
        if event["type"] == "token":
            run.append(at)
            continue
        fold()
        data = event.get("data") or {}
        detail = f":{data.get('code')}" if event["type"] == "error" else ""
        if event["type"] in ("started", "restart") and "attempt" in data:
            detail = f"#{data['attempt']}"
        out.append(f"{event['type']}{detail}@{at / 1000:+.2f}")
    fold()
    return " ".join(out)


def problems(run: Observed) -> list[str]:
    """One line per task that failed, did not finish, ran twice or has wrong usage rows."""
    usage = check_usage(run.tasks, run.usage)
    lines = []
    for task in run.tasks:
        figures_of = analyse(task, run.reference, run.fault_ms)
        why = []
        if task.state == "failed":
            why.append(f"failed:{task.error_code}")
        elif task.state not in TERMINAL:
            why.append(f"not finished ({task.state})")
        if figures_of.ran_twice:
            why.append("ran twice" if figures_of.text_ok else "ran twice (text differs)")
        if task.task_id in usage.mismatched:
            rows = [r for r in run.usage if str(r["user_id"]) == task.user]
            kinds = ", ".join("ok" if r["success"] else str(r["error_message"])[:40] for r in rows)
            waiting = run.usage_pending.count(task.user)
            why.append(
                f"usage rows [{kinds}] for {task.status.get('attempts')} attempts"
                f" ({waiting} more still in Redis)"
            )
        if why:
            lines.append(
                f"{task.task_id} ({task.user}, attempts {task.status.get('attempts')}): "
                f"{'; '.join(why)}\n    {sequence(task, run.fault_ms)}"
            )
    return lines
