"""The output schema of every task template, and the degraded last-resort result."""

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


class Header(_Out):
    """Who the résumé belongs to, as written in it."""

    name: Short = Field(description="Full name as written; empty if absent.")
    headline: Short = Field(description="Current title or headline; empty if absent.")
    contact: list[Short] = Field(description="E-mail, phone, links, location, verbatim.")


class Experience(_Out):
    """One position."""

    role: Short
    organization: Short
    period: Short = Field(description="As written, e.g. '2019 – 2023'; empty if absent.")
    highlights: list[Line] = Field(description="Achievements and duties, one per item.")


class Education(_Out):
    """One degree or school."""

    institution: Short
    degree: Short
    period: Short


class ResumeSummary(_Out):
    """A structured summary of a résumé."""

    header: Header
    summary: Prose = Field(description="A few sentences on the candidate's profile.")
    experience: list[Experience] = Field(max_length=40)
    education: list[Education] = Field(max_length=20)
    skills: list[Short] = Field(max_length=100)


class Section(_Out):
    """A section of the source kept as written."""

    title: Short
    items: list[Line]


class DetailedResumeSummary(ResumeSummary):
    """Copy mode: every field of the detailed résumé is kept, nothing is dropped."""

    projects: list[Experience] = Field(description="Projects, in the Experience shape.")
    certifications: list[Line]
    languages: list[Short]
    extra_sections: list[Section] = Field(
        description="Every other section of the source, in order, items verbatim."
    )


class JobSummary(_Out):
    """The essentials of a job description."""

    title: Short
    company: Short = Field(description="As stated; empty if the posting does not say.")
    location: Short = Field(description="As stated; empty if absent.")
    summary: Prose
    must_haves: list[Line] = Field(max_length=50)
    nice_to_haves: list[Line] = Field(max_length=50)


class Strength(_Out):
    """Where the résumé meets the job."""

    point: Line
    evidence: Line = Field(description="The résumé line that shows it.")


class Weakness(_Out):
    """Where the résumé falls short of the job."""

    gap: Line
    suggestion: Line


class JobMatch(_Out):
    """How well a résumé matches a job, with a cover-letter script."""

    score: int = Field(ge=0, le=100, description="0–100.")
    overall_assessment: Prose
    strengths: list[Strength] = Field(max_length=30)
    weaknesses: list[Weakness] = Field(max_length=30)
    cover_letter_script: Annotated[str, Field(max_length=10_000)]


class SectionChange(_Out):
    """One change made to one section of the résumé."""

    section: Short
    change: Line
    reason: Line


class ResumeCustomization(_Out):
    """The résumé rewritten for one job, and what changed."""

    markdown: Annotated[str, Field(max_length=60_000)]
    changes: list[SectionChange] = Field(max_length=60)


class InterviewQuestion(_Out):
    """A likely question and how to answer it."""

    question: Line
    answer_guideline: Line


class InterviewPrep(_Out):
    """Preparation for an interview for one job."""

    self_introduction: Prose
    questions: list[InterviewQuestion] = Field(max_length=30)
    questions_to_ask: list[Line] = Field(max_length=20)


class DegradedSummary(_Out):
    """The last resort when no model produced a valid answer: flagged, never mistaken."""

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
