"""The offline keyword baseline's answer to every template: deterministic, from the input only."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib.local.offline.keywords import (
    Document,
    Entry,
    Skill,
    clean,
    entries,
    evidence_line,
    extract_skills,
    list_items,
)
from lib.local.offline.reading import Job, Resume, read_job, read_resume
from lib.local.offline.texts import T
from lib.templates.schemas import OUTPUT_MODELS

MODEL_NAME = "offline-keyword-baseline"
IMAGE_TEXT = "job_image_text"  # the input the offline server adds: the job image's OCR text
_INSTITUTION = re.compile(r"universit|college|school|institute|academy|大学|学院|学校", re.I)


def _names(skills: list[Skill], lang: str, limit: int = 8) -> str:
    t = T[lang]
    return t["sep"].join(s.name(lang) for s in skills[:limit]) or t["none"]


def _position(entry: Entry) -> tuple[str, str]:
    parts = [*entry.parts, "", ""]
    return parts[0][:300], parts[1][:300]


def _or_none(value: str) -> str | None:
    return value or None


def _experience(items: list[Entry]) -> list[dict[str, Any]]:
    out = []
    for entry in items:
        role, org = _position(entry)
        out.append(
            {
                "role": _or_none(role),
                "company": _or_none(org),
                "duration": _or_none(entry.period),
                "highlights": entry.items,
            }
        )
    return out


def _education(doc: Document) -> list[dict[str, str | None]]:
    out = []
    for entry in entries([line for s in doc.kind("education") for line in s.lines]):
        parts = entry.parts or [""]
        school = next((p for p in parts if _INSTITUTION.search(p)), parts[0])
        degree = " ".join(p for p in parts if p != school)
        out.append(
            {
                "degree": _or_none(degree[:300]),
                "school": _or_none(school[:300]),
                "duration": _or_none(entry.period),
            }
        )
    return out


def _skill_list(resume: Resume, lang: str) -> list[str]:
    names = [s.name(lang) for s in resume.skills]
    seen = {n.lower() for n in names}
    for item in list_items([line for s in resume.doc.kind("skills") for line in s.lines]):
        if len(item) <= 60 and item.lower() not in seen:
            seen.add(item.lower())
            names.append(item)
    return names[:100]


def _summary(resume: Resume, lang: str) -> str:
    t = T[lang]
    own = " ".join(line for s in resume.doc.kind("summary") for line in map(clean, s.lines))
    if own:
        return f"{t['note']} {own}"[:6000]
    recent = ""
    if resume.experience:
        role, org = _position(resume.experience[0])
        recent = t["recent"].format(role=role, org=org)
    who = ", ".join(p for p in (resume.name, resume.headline) if p) or "—"
    profile = t["profile"].format(
        who=who, count=len(resume.experience), recent=recent, skills=_names(resume.skills, lang)
    )
    return f"{t['note']} {profile}"


def resume_summary(inputs: dict[str, str], lang: str) -> dict[str, Any]:
    """`resume_summary`: header, summary, positions, education and skills as found."""
    resume = read_resume(inputs.get("resume_text", ""))
    c = resume.contacts
    return {
        "header": {
            "name": _or_none(resume.name),
            "email": c.email,
            "phone": c.phone,
            "linkedin": c.linkedin,
            "github": c.github,
            "headline": _or_none(resume.headline),
            "other_contacts": c.others[:20] or None,
        },
        "summary": _summary(resume, lang),
        "experience": _experience(resume.experience[:40]),
        "education": _education(resume.doc)[:20],
        "skills": _skill_list(resume, lang),
    }


def detailed_resume_summary(inputs: dict[str, str], lang: str) -> dict[str, Any]:
    """`detailed_resume_summary` in copy mode: every section kept, items verbatim."""
    text = inputs.get("detailed_resume_text", "")
    out = resume_summary({"resume_text": text}, lang)
    doc = read_resume(text).doc

    def items(kind: str) -> list[str]:
        return list_items([line for s in doc.kind(kind) for line in s.lines])

    out["projects"] = _experience(entries([ln for s in doc.kind("projects") for ln in s.lines]))
    out["certifications"] = items("certifications")
    out["languages"] = items("languages")
    out["extra_sections"] = [
        {"title": s.title, "items": [clean(line) for line in s.lines]} for s in doc.kind("other")
    ]
    return out


def job_summary(inputs: dict[str, str], lang: str) -> dict[str, Any]:
    """`job_summary`: title, company, required and preferred lines (of the text or image)."""
    t = T[lang]
    from_image = "job_text" not in inputs and IMAGE_TEXT in inputs
    job = read_job(inputs.get("job_text") or inputs.get(IMAGE_TEXT, ""))
    must = job.must_lines or [s.name(lang) for s in job.must]
    at = t["at"].format(company=job.company) if job.company else ""
    summary = t["job_summary"].format(
        title=job.title,
        at=at,
        must=len(must),
        nice=len(job.nice_lines),
        skills=_names(job.skills, lang),
    )
    return {
        "jobTitle": job.title,
        "company": _or_none(job.company),
        "mustHaves": must[:50],
        "niceToHaves": job.nice_lines[:50],
        "location": _or_none(job.location),
        "summary": f"{t['ocr_note' if from_image else 'note']} {summary}",
    }


@dataclass
class Match:
    """The overlap of a résumé's skills with a job's."""

    resume: Resume
    job: Job
    matched_must: list[Skill]
    matched_nice: list[Skill]
    missing_must: list[Skill]
    score: int


def match(inputs: dict[str, str]) -> Match:
    """Score = required skills met (weight 1) and preferred ones (weight ½), over all."""
    resume, job = read_resume(inputs.get("resume_text", "")), read_job(inputs.get("job_text", ""))
    have = {s.key for s in resume.skills}
    mm = [s for s in job.must if s.key in have]
    mn = [s for s in job.nice if s.key in have]
    missing = [s for s in job.must if s.key not in have]
    total = len(job.must) + 0.5 * len(job.nice)
    score = round(100 * (len(mm) + 0.5 * len(mn)) / total) if total else 0
    return Match(resume, job, mm, mn, missing, max(0, min(100, score)))


def job_match(inputs: dict[str, str], lang: str) -> dict[str, Any]:
    """`job_match`: overlap score, evidence lines, gaps and a cover-letter script."""
    t, m = T[lang], match(inputs)
    lines = m.resume.doc.lines
    strengths = [
        {
            "point": t["strength"].format(kind=t[kind], skill=s.name(lang)),
            "evidence": evidence_line(s, lines)[:1000],
        }
        for kind, skills in (("required", m.matched_must), ("preferred", m.matched_nice))
        for s in skills
    ][:8]
    weaknesses = [
        {
            "point": t["gap"].format(skill=s.name(lang)),
            "suggestion": t["suggestion"].format(skill=s.name(lang)),
        }
        for s in m.missing_must[:8]
    ]
    assessment = t["assessment"].format(
        score=m.score,
        mm=len(m.matched_must),
        m=len(m.job.must),
        nm=len(m.matched_nice),
        n=len(m.job.nice),
        matched=_names(m.matched_must, lang),
        missing=_names(m.missing_must, lang),
    )
    return {
        "match_score": m.score,
        "overall_assessment": f"{t['note']} {assessment}",
        "strengths": strengths,
        "weaknesses": weaknesses,
        "cover_letter_script": _letter(m, lang),
    }


def _letter(m: Match, lang: str) -> str:
    t = T[lang]
    recent = ""
    if m.resume.experience:
        role, org = _position(m.resume.experience[0])
        recent = t["letter_recent"].format(role=role, org=org)
    return t["letter"].format(
        at=t["at"].format(company=m.job.company) if m.job.company else "",
        title=m.job.title or t["the_role"],
        recent=recent,
        skills=_names(m.matched_must + m.matched_nice or m.resume.skills, lang),
        name=m.resume.name,
    )


def resume_customize(inputs: dict[str, str], lang: str) -> dict[str, Any]:
    """`resume_customize`: the résumé reordered around the job's skills, nothing added."""
    t, m = T[lang], match(inputs)
    wanted = {s.key for s in m.matched_must + m.matched_nice}
    skills = sorted(m.resume.skills, key=lambda s: s.key not in wanted)
    r = m.resume
    c = r.contacts
    contact = [x for x in (c.email, c.phone, c.linkedin, c.github, *c.others) if x]
    md = [f"# {r.name}"] + [x for x in (r.headline, " | ".join(contact)) if x]
    md += ["", f"## {t['h_skills']}", *(f"- {s.name(lang)}" for s in skills)]
    md += ["", f"## {t['h_experience']}"]
    for entry in r.experience:
        role, org = _position(entry)
        md.append(
            f"### {role}"
            + (f" — {org}" if org else "")
            + (f" ({entry.period})" if entry.period else "")
        )
        first = [h for h in entry.items if any(s.key in wanted for s in extract_skills(h))]
        md += [f"- {h}" for h in first + [h for h in entry.items if h not in first]]
    for section in r.doc.sections:
        if section.kind not in ("experience", "skills"):
            md += ["", f"## {section.title}", *(f"- {clean(x)}" for x in section.lines)]
    matched = m.matched_must + m.matched_nice
    changes = [
        (
            t["h_skills"],
            t["c_skills"].format(n=len(matched), skills=_names(matched, lang)),
            t["r_skills"],
        ),
        (t["h_experience"], t["c_experience"], t["r_experience"]),
    ]
    if m.missing_must:
        missing = t["c_missing"].format(skills=_names(m.missing_must, lang))
        changes.append((t["h_skills"], missing, t["r_missing"]))
    changes.append(("*", f"{t['note']} {t['c_all']}", t["r_all"]))
    return {
        "customized_resume_markdown": "\n".join(md).strip() + "\n",
        "customization_summary": [
            {"section": section, "change_reason": t["because"].format(change=c, reason=r)}
            for section, c, r in changes
        ],
    }


def interview_prep(inputs: dict[str, str], lang: str) -> dict[str, Any]:
    """`interview_prep`: an introduction, questions from matches and gaps, questions back."""
    t, m = T[lang], match(inputs)
    r, lines = m.resume, m.resume.doc.lines
    recent = ""
    questions: list[dict[str, str]] = []
    if r.experience:
        role, org = _position(r.experience[0])
        recent = t["intro_recent"].format(role=role, org=org)
        highlight = r.experience[0].items[0] if r.experience[0].items else role
        questions.append(
            {
                "question": t["q_recent"],
                "answer_guideline": t["g_recent"].format(role=role, org=org, highlight=highlight),
            }
        )
    for s in (m.matched_must + m.matched_nice)[:4]:
        questions.append(
            {
                "question": t["q_skill"].format(skill=s.name(lang)),
                "answer_guideline": t["g_skill"].format(evidence=evidence_line(s, lines)[:300]),
            }
        )
    for s in m.missing_must[:3]:
        questions.append(
            {
                "question": t["q_gap"].format(skill=s.name(lang)),
                "answer_guideline": t["g_gap"].format(skill=s.name(lang)),
            }
        )
    questions.append(
        {
            "question": t["q_why"],
            "answer_guideline": t["g_why"].format(skills=_names(m.job.must or m.job.skills, lang)),
        }
    )
    at = t["at"].format(company=m.job.company) if m.job.company else ""
    intro = t["intro"].format(
        name=r.name,
        recent=recent,
        skills=_names(r.skills, lang, 6),
        title=m.job.title or t["the_role"],
        at=at,
        fit=_names(m.matched_must + m.matched_nice or m.job.must, lang, 4),
    )
    ask = t["ask"].split("|")
    if m.job.must:
        ask.append(t["ask_skill"].format(skill=m.job.must[0].name(lang)))
    return {
        "self_introduction_script": intro,
        "potential_questions": questions[:10],
        "reverse_questions": ask,
    }


ANSWERS: dict[str, Callable[[dict[str, str], str], dict[str, Any]]] = {
    "resume_summary": resume_summary,
    "detailed_resume_summary": detailed_resume_summary,
    "job_summary": job_summary,
    "job_match": job_match,
    "resume_customize": resume_customize,
    "interview_prep": interview_prep,
}


def answer(template: str, lang: str, inputs: dict[str, str]) -> dict[str, Any]:
    """The baseline's schema-valid answer to one task.

    Args:
        template: a template name (from the task marker).
        lang: `en` or `zh` (anything else answers in English).
        inputs: the delimited inputs, by variable name.

    Returns:
        The answer as a JSON-ready dict, validated against the template's output model.

    Raises:
        KeyError: unknown template.
    """
    lang = lang if lang in T else "en"
    raw = ANSWERS[template](inputs, lang)
    model = OUTPUT_MODELS[template]  # type: ignore[index]
    return model.model_validate(raw).model_dump(mode="json")
