"""What a service runs: its steps by depth, each step's template and variables, its price."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from lib.i18n import Lang
from lib.routing import Template

Depth = Literal["a", "b", "c"]
Step = Template  # every step is one task template
DEPTHS: tuple[Depth, ...] = get_args(Depth)

# The summaries run in parallel first; then the depth's steps, in parallel, with the
# summaries as context.
SUMMARIES: tuple[Step, ...] = ("resume_summary", "detailed_resume_summary", "job_summary")
DEPTH_STEPS: dict[Depth, tuple[Step, ...]] = {
    "a": ("job_match",),
    "b": ("job_match", "resume_customize"),
    "c": ("job_match", "resume_customize", "interview_prep"),
}


@dataclass(frozen=True)
class Sources:
    """The texts a service works on (from its assets)."""

    resume_text: str
    job_text: str | None  # None: the job description is a screenshot
    job_image: str | None = None  # data URL of the screenshot
    detailed_text: str | None = None


def summary_steps(has_detailed: bool) -> tuple[Step, ...]:
    """The summaries a service makes (the detailed résumé's only when there is one)."""
    return tuple(s for s in SUMMARIES if has_detailed or s != "detailed_resume_summary")


def later_steps(depth: Depth) -> tuple[Step, ...]:
    """The steps that follow the summaries at `depth`."""
    return DEPTH_STEPS[depth]


def all_steps(depth: Depth, has_detailed: bool) -> tuple[Step, ...]:
    return summary_steps(has_detailed) + later_steps(depth)


def summary_variables(step: Step, sources: Sources) -> dict[str, Any]:
    """The variables of a summary step."""
    if step == "resume_summary":
        return {"resume_text": sources.resume_text}
    if step == "detailed_resume_summary":
        return {"detailed_resume_text": sources.detailed_text or ""}
    if step == "job_summary":
        if sources.job_text is not None:
            return {"job_text": sources.job_text}
        return {"job_image": sources.job_image or ""}
    raise ValueError(f"{step} is not a summary")


def job_text(sources: Sources, job_summary: Mapping[str, Any] | None, lang: Lang) -> str:
    """The job as text for the later steps: its own text, or a screenshot's summary."""
    if sources.job_text is not None:
        return sources.job_text
    summary = dict(job_summary or {})
    lines = [str(summary.get("jobTitle") or ""), str(summary.get("company") or "")]
    heads = ("Must-haves", "Nice to have") if lang == "en" else ("必备要求", "加分项")
    for head, key in zip(heads, ("mustHaves", "niceToHaves"), strict=True):
        items = [str(i) for i in summary.get(key) or []]
        if items:
            lines += [head, *(f"- {i}" for i in items)]
    return "\n".join(line for line in lines if line)


def step_variables(
    step: Step, sources: Sources, summaries: Mapping[Step, Any], lang: Lang
) -> dict[str, Any]:
    """The variables of a later step: the source texts, with the summaries as context."""
    job = job_text(sources, summaries.get("job_summary"), lang)
    resume_summary: Any = summaries.get("resume_summary")
    if summaries.get("detailed_resume_summary") is not None:
        # The detailed résumé reaches the later steps through the résumé's context.
        resume_summary = {
            "resume": summaries.get("resume_summary"),
            "detailed_resume": summaries["detailed_resume_summary"],
        }
    job_summary = summaries.get("job_summary")
    variables: dict[str, Any] = {"resume_text": sources.resume_text, "job_text": job}
    if step == "job_match":
        variables["resume_summary"] = _context(resume_summary)
    if job_summary is not None:
        variables["job_summary"] = _context(job_summary)
    if step not in DEPTH_STEPS["c"]:
        raise ValueError(f"{step} is not a later step")
    return {k: v for k, v in variables.items() if v is not None}


def _context(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
