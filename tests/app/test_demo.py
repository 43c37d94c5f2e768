"""lib/app/demo.py's printing of a service's stream: timeline, blocks in the depth's order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lib.app.demo import Follower, SseEvent


class Stream:
    """Service events with cursors as the service stream's reader makes them."""

    def __init__(self) -> None:
        self.positions = ["1000-0"]
        self.tasks: list[str] = []

    def service(self, ms: int, kind: str, data: dict[str, Any]) -> SseEvent:
        self.positions[0] = f"{ms}-0"
        if kind == "step" and data.get("task_id"):
            self.tasks.append(data["step"])
            self.positions.append("0-0")
        return SseEvent(kind, ".".join(self.positions), data)

    def task(self, ms: int, step: str, kind: str, data: Any) -> SseEvent:
        self.positions[self.tasks.index(step) + 1] = f"{ms}-0"
        wrapped = {"step": step, "task_id": f"t-{step}", "data": data}
        return SseEvent(kind, ".".join(self.positions), wrapped)


def done(n_in: int, n_out: int) -> dict[str, Any]:
    return {"usage": {"input_tokens": n_in, "output_tokens": n_out}, "cost": 0.0}


def story() -> list[SseEvent]:
    s = Stream()
    out = [s.service(1000, "service", {"status": "running", "tier": "free", "depth": "c"})]
    for i, step in enumerate(("resume_summary", "detailed_resume_summary", "job_summary")):
        out.append(s.service(1001 + i, "step", {"step": step, "task_id": f"t-{step}"}))
        out.append(s.task(1001 + i, step, "queued", {"position": 1}))
    for i, step in enumerate(("resume_summary", "detailed_resume_summary", "job_summary")):
        out.append(s.task(1100 + i, step, "started", {"model": "glm-4.5-flash", "attempt": 1}))
    out.append(s.task(1500, "job_summary", "result", {"jobTitle": "Engineer", "mustHaves": ["Go"]}))
    out.append(s.task(1500, "job_summary", "done", done(10, 5)))
    out.append(s.task(1600, "resume_summary", "done", done(1, 1)))
    out.append(s.task(1700, "detailed_resume_summary", "done", done(2, 2)))
    for i, step in enumerate(("job_match", "resume_customize", "interview_prep")):
        out.append(s.service(1800 + i, "step", {"step": step, "task_id": f"t-{step}"}))
        out.append(s.task(1810 + i, step, "started", {"model": "glm-4.5-flash", "attempt": 1}))
    # Interleaved: the interview's tokens come first, the customized résumé ends first.
    out.append(s.task(1900, "interview_prep", "token", {"text": '{"self_intro'}))
    out.append(s.task(1901, "job_match", "token", {"text": '{"match_score": 70'}))
    out.append(s.task(1902, "resume_customize", "result", {"customized_resume_markdown": "# CV"}))
    out.append(s.task(1902, "resume_customize", "done", done(3, 3)))
    out.append(s.task(1903, "interview_prep", "token", {"text": 'duction_script": "Hi"}'}))
    out.append(s.task(1904, "job_match", "token", {"text": "}"}))
    out.append(s.task(1950, "job_match", "result", {"match_score": 70}))
    out.append(s.task(1950, "job_match", "done", done(4, 4)))
    out.append(s.task(1960, "interview_prep", "result", {"potential_questions": []}))
    out.append(s.task(1960, "interview_prep", "done", done(5, 5)))
    out.append(s.service(1910, "service", {"status": "done", "tier": "free", "depth": "c"}))
    return out


def test_blocks_come_in_the_depths_order_whatever_the_arrival(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The match streams whole, then the customized résumé, then the interview; times from 0."""
    follower = Follower(later=("job_match", "resume_customize", "interview_prep"))
    ended = [follower.handle(event) for event in story()]
    assert ended[-1] and not any(ended[:-1])
    out = capsys.readouterr().out
    assert "   +0.00s  service" in out
    assert "   +0.50s  job_summary              done      10+5 tokens: Engineer" in out
    match = out.index('{"match_score": 70}\n')
    resume = out.index("# CV")
    interview = out.index('{"self_introduction_script": "Hi"}\n')
    assert match < resume < interview
    assert "[job_match done +0.95s: 4+4 tokens, match score 70/100]" in out
    assert follower.final["status"] == "done" and follower.final["ms"] == 1910


def test_a_cached_summary_is_shown_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    """A summary from the cache: a `step` without a task and its `result` on the service."""
    follower = Follower(later=("job_match",))
    follower.handle(SseEvent("service", "5000-0", {"status": "running", "tier": "paid"}))
    follower.handle(SseEvent("step", "5001-0", {"step": "job_summary", "task_id": None}))
    result = {"step": "job_summary", "task_id": None, "data": {"jobTitle": "Dev"}}
    follower.handle(SseEvent("result", "5002-0", json.loads(json.dumps(result))))
    out = capsys.readouterr().out
    assert "+0.00s  job_summary              cached    Dev · 0 must-haves" in out
    assert follower.steps["job_summary"].status == "cached"
