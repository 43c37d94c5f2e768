"""The output schema of every task template, and the degraded last-resort result.

Field names, order and optionality are the product specification's (the frontend and
its reports are built against them); fields this project adds come after the specified
ones. `Optional` fields (`X | None = None`) may be absent or null.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lib.routing import Template

# Bounds are generous on purpose: a real model's long-but-sane answer must validate,
# a runaway one must not.
Short = Annotated[str, Field(max_length=300)]
Line = Annotated[str, Field(max_length=1_000)]
Prose = Annotated[str, Field(max_length=6_000)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- resume_summary, detailed_resume_summary (AssetSummary) ------------------------------


class Header(_Out):
    """Who the résumé belongs to and how to reach them, as written in it."""

    name: Short | None = Field(None, description="Full name as written.")
    email: Short | None = None
    phone: Short | None = None
    linkedin: Short | None = Field(None, description="LinkedIn profile URL or handle.")
    github: Short | None = Field(None, description="GitHub profile URL or handle.")
    # Additions:
    headline: Short | None = Field(None, description="Current title or headline.")
    other_contacts: list[Short] | None = Field(
        None, max_length=20, description="Any other contact item (site, location), verbatim."
    )


class Experience(_Out):
    """One position (or, in `projects`, one project)."""

    role: Short | None = None
    company: Short | None = Field(None, description="Employer (for a project: its context).")
    duration: Short | None = Field(None, description="As written, e.g. '2019 – 2023'.")
    highlights: list[Line] | None = Field(
        None, max_length=60, description="Achievements and duties, one per item."
    )


class Education(_Out):
    """One degree or school."""

    degree: Short | None = None
    school: Short | None = None
    duration: Short | None = None


class Section(_Out):
    """A section of the source kept as written."""

    title: Short
    items: list[Line] = Field(max_length=200)


class ResumeSummary(_Out):
    """AssetSummary: a structured summary of a résumé."""

    header: Header
    summary: Prose | None = Field(None, description="A few sentences on the profile.")
    experience: list[Experience] | None = Field(None, max_length=40)
    education: list[Education] | None = Field(None, max_length=20)
    skills: list[Short] | None = Field(None, max_length=100)


class DetailedResumeSummary(ResumeSummary):
    """AssetSummary in copy mode: every field of the detailed résumé kept, nothing dropped."""

    # Additions:
    projects: list[Experience] | None = Field(None, max_length=60)
    certifications: list[Line] | None = Field(None, max_length=60)
    languages: list[Short] | None = Field(None, max_length=30)
    extra_sections: list[Section] | None = Field(
        None, max_length=40, description="Every other section of the source, in order."
    )


# -- job_summary -------------------------------------------------------------------------


class JobSummary(_Out):
    """The essentials of a job description.

    The specified names are camelCase; they are the field names themselves (no aliases),
    so every dump, schema and parser uses them as they are.
    """

    jobTitle: Short
    company: Short | None = Field(None, description="As stated; absent if not named.")
    mustHaves: list[Line] = Field(max_length=50)
    niceToHaves: list[Line] = Field(max_length=50)
    # Additions:
    location: Short | None = Field(None, description="As stated.")
    summary: Prose | None = Field(None, description="Two or three sentences on the role.")


# -- job_match ---------------------------------------------------------------------------


class Strength(_Out):
    """Where the résumé meets the job."""

    point: Line
    evidence: Line = Field(description="The résumé line that shows it.")


class Weakness(_Out):
    """Where the résumé falls short of the job."""

    point: Line = Field(description="The requirement missing or weak.")
    suggestion: Line


class JobMatch(_Out):
    """How well a résumé matches a job, with a cover-letter script."""

    match_score: float = Field(ge=0, le=100, description="0–100.")
    overall_assessment: Prose
    strengths: list[Strength] = Field(max_length=30)
    weaknesses: list[Weakness] = Field(max_length=30)
    cover_letter_script: Annotated[str, Field(max_length=10_000)]


# -- resume_customize --------------------------------------------------------------------


class SectionChange(_Out):
    """One change made to one section of the résumé, and why."""

    section: Short
    change_reason: Line = Field(description="What changed and the job requirement it serves.")


class ResumeCustomization(_Out):
    """The résumé rewritten for one job, and what changed."""

    customized_resume_markdown: Annotated[str, Field(max_length=60_000)]
    customization_summary: list[SectionChange] = Field(max_length=60)


# -- interview_prep ----------------------------------------------------------------------


class InterviewQuestion(_Out):
    """A likely question and how to answer it."""

    question: Line
    answer_guideline: Line


class InterviewPrep(_Out):
    """Preparation for an interview for one job."""

    self_introduction_script: Prose
    potential_questions: list[InterviewQuestion] = Field(max_length=30)
    reverse_questions: list[Line] = Field(max_length=20)


class DegradedSummary(_Out):
    """The last resort when no model produced a valid answer: flagged, never mistaken.

    Built from the task's source text (the résumé or job description), never from
    the prompt.
    """

    degraded: Literal[True] = True
    bullets: list[Line]
    reason: Line


OUTPUT_MODELS: dict[Template, type[BaseModel]] = {
    "resume_summary": ResumeSummary,
    "detailed_resume_summary": DetailedResumeSummary,
    "job_summary": JobSummary,
    "job_match": JobMatch,
    "resume_customize": ResumeCustomization,
    "interview_prep": InterviewPrep,
}
