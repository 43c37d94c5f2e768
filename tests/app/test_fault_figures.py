"""The fault bench's figures (`bench/fault_figures.py`): pure, computed from what a run saw."""

from __future__ import annotations

from typing import Any

import pytest

from bench.fault_figures import (
    Observed,
    analyse,
    check_usage,
    figures,
    problems,
    retry_delays,
    sequence,
)
from tests.faults.client import Task

FAULT = 1_000_000


def ev(at_ms: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"id": f"{FAULT + at_ms}-0", "type": kind, "data": data}


def task(name: str, events: list[dict[str, Any]], status: str = "done", attempts: int = 1) -> Task:
    t = Task(f"id-{name}", name, "token", {})
    t.status = {"status": status, "attempts": attempts, "bounces": 0}
    t.events = events
    return t


def killed_and_restarted(name: str = "a") -> Task:
    return task(
        name,
        [
            ev(-900, "queued"),
            ev(-500, "started", attempt=1),
            ev(-400, "token", text="hel"),
            ev(29_000, "restart", attempt=2),
            ev(29_000, "started", attempt=2),
            ev(29_200, "token", text="hello"),
            ev(29_300, "result"),
            ev(29_300, "done"),
        ],
        attempts=2,
    )


def row(user: str, success: bool, error: str | None = None) -> dict[str, Any]:
    return {"user_id": user, "success": success, "error_message": error}


def test_a_task_killed_mid_stream_is_streaming_at_the_fault_and_restarts_after_it() -> None:
    """A token before the fault makes it `streaming`; the restart and the gap are measured
    from stream ids; the text after the last restart is the one compared."""
    figures_of = analyse(killed_and_restarted(), "hello", FAULT)
    assert figures_of.at_fault == "streaming"
    assert figures_of.restart_after_ms == 29_000
    assert figures_of.gap_ms == 29_400
    assert figures_of.done_ms == FAULT + 29_300
    assert not figures_of.ran_twice


@pytest.mark.parametrize(
    ("events", "at_fault"),
    [
        ([ev(-10, "queued")], "queued"),
        ([ev(-10, "queued"), ev(-5, "started", attempt=1)], "started"),
        ([ev(-10, "queued"), ev(-5, "done")], "finished"),
        ([ev(-10, "queued"), ev(-5, "error", code="x")], "finished"),
    ],
)
def test_where_a_task_was_at_the_fault(events: list[dict[str, Any]], at_fault: str) -> None:
    """Only events before the fault's instant decide where the task was."""
    assert analyse(task("a", events), "", FAULT).at_fault == at_fault


@pytest.mark.parametrize(
    "extra",
    [
        [ev(40_000, "done")],  # a second done
        [ev(40_000, "result")],  # a second result
        [ev(40_000, "token", text="!")],  # more text than the reference
    ],
)
def test_a_second_completion_or_a_different_text_counts_as_ran_twice(
    extra: list[dict[str, Any]],
) -> None:
    """Ran twice: more than one done or result event, or a done task's text differs."""
    t = killed_and_restarted()
    t.events += extra
    assert analyse(t, "hello", FAULT).ran_twice


def test_usage_rows_must_be_one_per_attempt_one_success_the_rest_lost() -> None:
    """A done task with 2 attempts needs a success and a `lost` row; fewer is a mismatch;
    rows of users the run did not submit for are counted apart."""
    a, b = killed_and_restarted("a"), killed_and_restarted("b")
    rows = [
        row("a", True),
        row("a", False, "lost: attempt 1 ended without finishing"),
        row("b", True),
        row("reference", True),
    ]
    check = check_usage([a, b], rows)
    assert (check.rows, check.attempts, check.ok_rows, check.lost_rows) == (3, 4, 2, 1)
    assert check.mismatched == ["id-b"]
    assert check.other_users == 1


def test_retry_delays_are_read_from_the_local_qstash_log() -> None:
    """`status N, retry k in X s` lines → counts by delay and cause."""
    log = (
        "message m1: status 0, retry 1 in 12.182 s\n"
        "message m2: status 429, retry 1 in 2.000 s\n"
        "message m1: status 0, retry 2 in 148.413 s\n"
        "message m3: status 0, retry 1 in 12.182 s\n"
    )
    assert retry_delays(log) == {"12 s (refused/cut)": 2, "2 s (429)": 1, "148 s (refused/cut)": 1}


def test_the_report_names_each_task_that_went_wrong_with_its_events() -> None:
    """A failed task and one whose row is still in Redis are listed, with their events
    relative to the fault; the table counts them."""
    ok = killed_and_restarted("ok")
    failed = task("bad", [ev(-10, "queued"), ev(50_000, "error", code="delivery_failed")], "failed")
    failed.status["error"] = {"code": "delivery_failed"}
    late = killed_and_restarted("late")
    rows = [row("ok", True), row("ok", False, "lost: …"), row("late", False, "lost: …")]
    run = Observed(
        "t",
        [],
        [ok, failed, late],
        "hello",
        first_submit_ms=FAULT - 1000,
        fault_ms=FAULT,
        back_ms=FAULT + 10_000,
        ready_ms=FAULT + 11_000,
        lease_ms=30_000,
        usage=rows,
        usage_pending=["late"],
        leftovers={"leases": {}, "pending": {}, "user_locks": []},
        leftovers_at_ms=FAULT + 90_000,
    )
    table = dict(figures(run))
    assert table["failed"] == "1 {'delivery_failed': 1}"
    assert table["worst kill → restart event"].startswith("29.0 s (2 tasks restarted")
    assert "still in Redis 1 [late]" in table["usage rows vs attempts"]
    lines = problems(run)
    assert [line.split(" ", 1)[0] for line in lines] == ["id-bad", "id-late"]
    assert "failed:delivery_failed" in lines[0] and "error:delivery_failed@+50.00" in lines[0]
    assert "(1 more still in Redis)" in lines[1]
    assert sequence(ok, FAULT).startswith("queued@-0.90 started#1@-0.50 token×1(-0.40..-0.40)")
