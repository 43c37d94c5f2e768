"""A service's plan: steps by depth, and variables every template accepts."""

from __future__ import annotations

from typing import Any

import pytest

from lib.services.plan import (
    Sources,
    Step,
    all_steps,
    later_steps,
    step_variables,
    summary_steps,
    summary_variables,
)
from lib.templates.variables import validate_variables

TEXT = Sources(resume_text="Ann Lee, Python engineer.", job_text="Python role.")
SHOT = Sources(resume_text="Ann Lee, Python engineer.", job_text=None, job_image="data:x")
JOB = {
    "jobTitle": "Backend engineer",
    "company": "Acme",
    "mustHaves": ["Python"],
    "niceToHaves": [],
}


def test_steps_by_depth() -> None:
    """Summaries first (the detailed one only when given), then the depth's steps."""
    assert summary_steps(False) == ("resume_summary", "job_summary")
    assert later_steps("a") == ("job_match",)
    assert all_steps("c", True) == (
        "resume_summary",
        "detailed_resume_summary",
        "job_summary",
        "job_match",
        "resume_customize",
        "interview_prep",
    )


@pytest.mark.parametrize("step", ["job_match", "resume_customize", "interview_prep"])
def test_later_steps_get_valid_variables_with_the_summaries(step: str) -> None:
    """Each later step's variables validate, with the summaries passed as context."""
    summaries = {"resume_summary": {"summary": "x"}, "job_summary": JOB}
    variables = step_variables(step, TEXT, summaries, "en")  # type: ignore[arg-type]
    validate_variables(step, variables)
    assert "Backend engineer" in variables["job_summary"]


def test_a_screenshot_job_reaches_later_steps_as_its_summary() -> None:
    """With no job text, later steps get the job summary as text."""
    variables = step_variables("job_match", SHOT, {"job_summary": JOB}, "zh")
    assert variables["job_text"].splitlines()[:4] == [
        "Backend engineer",
        "Acme",
        "必备要求",
        "- Python",
    ]
    assert summary_variables("job_summary", SHOT) == {"job_image": "data:x"}


def test_the_detailed_summary_reaches_the_match() -> None:
    """A detailed résumé's summary is part of the résumé context of the match."""
    summaries: dict[Step, Any] = {"resume_summary": {"a": 1}, "detailed_resume_summary": {"b": 2}}
    variables = step_variables("job_match", TEXT, summaries, "en")
    assert '"detailed_resume": {"b": 2}' in variables["resume_summary"]
