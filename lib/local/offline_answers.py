"""The offline keyword baseline's answer to every template: deterministic, from the input only."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib.llm.schemas import OUTPUT_MODELS
from lib.local.keywords import (
    Document,
    Entry,
    Skill,
    clean,
    contact_items,
    entries,
    evidence_line,
    extract_skills,
    list_items,
    parse,
)
from lib.local.offline_texts import T

MODEL_NAME = "offline-keyword-baseline"
_INSTITUTION = re.compile(r"universit|college|school|institute|academy|大学|学院|学校", re.I)
_NICE = re.compile(r"nice to have|preferred|a plus|bonus|desirable|优先|加分|更佳|者佳", re.I)
_MUST = re.compile(
    r"required|requirement|must|need|proficien|experience (?:with|in)|years|"
    r"要求|必须|必备|熟悉|精通|掌握|熟练|具备|以上",
    re.I,
)
_REQ_HEADING = re.compile(r"requirement|qualification|must|what you|you have|要求|任职|资格", re.I)
_NICE_HEADING = re.compile(r"nice|prefer|bonus|plus|加分|优先", re.I)
_FIELD = r"\s*[:：]\s*(.+)$"
_TITLE = re.compile(r"^(?:job title|title|position|role|职位名称|职位|岗位)" + _FIELD, re.I)
_COMPANY = re.compile(r"^(?:company|employer|organi[sz]ation|公司名称|公司|企业)" + _FIELD, re.I)
_LOCATION = re.compile(r"^(?:location|based in|city|工作地点|地点|城市|base)" + _FIELD, re.I)
_AT_COMPANY = re.compile(r"\bat\s+([A-Z][\w&.'-]*(?:\s+[A-Z][\w&.'-]*){0,3})")


@dataclass
class Resume:
    """What the baseline reads from a résumé."""

    doc: Document
    name: str
    headline: str
    contact: list[str]
    experience: list[Entry]
    skills: list[Skill]


@dataclass
class Job:
    """What the baseline reads from a job post."""

    title: str
    company: str
    location: str
    must_lines: list[str]
    nice_lines: list[str]
    must: list[Skill]
    nice: list[Skill]
    skills: list[Skill]


def read_resume(text: str) -> Resume:
    """Parse a résumé's header, positions and skills."""
    doc = parse(text)
    head = doc.head or doc.lines[:1]
    contact = contact_items(head)
    rest = [clean(line) for line in head[1:] if not any(c in line for c in contact)]
    exp_lines = [line for s in doc.kind("experience") for line in s.lines]
    return Resume(
        doc=doc,
        name=clean(head[0])[:120] if head else "",
        headline=rest[0][:200] if rest else "",
        contact=contact,
        experience=entries(exp_lines),
        skills=extract_skills(text),
    )


def read_job(text: str) -> Job:
    """Parse a job post's title, company, and required and preferred lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    title = company = location = ""
    must_lines: list[str] = []
    nice_lines: list[str] = []
    section = "other"
    for line in lines:
        bare = clean(line)
        if m := _TITLE.match(bare):
            title = title or m.group(1).strip()
            continue
        if m := _COMPANY.match(bare):
            company = company or m.group(1).strip()
            continue
        if m := _LOCATION.match(bare):
            location = location or m.group(1).strip()
            continue
        if len(bare) <= 40 and (line.startswith("#") or bare.endswith((":", "："))):
            section = (
                "nice"
                if _NICE_HEADING.search(bare)
                else "must"
                if _REQ_HEADING.search(bare)
                else "other"
            )
            continue
        if _NICE.search(bare) or section == "nice":
            nice_lines.append(bare[:300])
        elif section == "must" or (_MUST.search(bare) and extract_skills(bare)):
            must_lines.append(bare[:300])
    title = title or (clean(lines[0])[:200] if lines else "")
    if not company and (m := _AT_COMPANY.search(" ".join(lines[:3]))):
        company = m.group(1)
    skills = extract_skills(text)
    must_text = "\n".join(must_lines) if must_lines else _without(text, nice_lines)
    must = extract_skills(must_text)
    must_keys = {s.key for s in must}
    nice = [s for s in extract_skills("\n".join(nice_lines)) if s.key not in must_keys]
    return Job(title, company, location, must_lines, nice_lines, must, nice, skills)


def _without(text: str, lines: list[str]) -> str:
    drop = set(lines)
    return "\n".join(line for line in text.splitlines() if clean(line) not in drop)


def _names(skills: list[Skill], lang: str, limit: int = 8) -> str:
    t = T[lang]
    return t["sep"].join(s.name(lang) for s in skills[:limit]) or t["none"]


def _position(entry: Entry) -> tuple[str, str]:
    parts = [*entry.parts, "", ""]
    return parts[0][:300], parts[1][:300]


def _experience(items: list[Entry]) -> list[dict[str, Any]]:
    out = []
    for entry in items:
        role, org = _position(entry)
        out.append(
            {"role": role, "organization": org, "period": entry.period, "highlights": entry.items}
        )
    return out


def _education(doc: Document) -> list[dict[str, str]]:
    out = []
    for entry in entries([line for s in doc.kind("education") for line in s.lines]):
        parts = entry.parts or [""]
        school = next((p for p in parts if _INSTITUTION.search(p)), parts[0])
        degree = " ".join(p for p in parts if p != school)
        out.append({"institution": school[:300], "degree": degree[:300], "period": entry.period})
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
    return {
        "header": {"name": resume.name, "headline": resume.headline, "contact": resume.contact},
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
    """`job_summary`: title, company, required and preferred lines."""
    job = read_job(inputs.get("job_text", ""))
    t = T[lang]
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
        "title": job.title,
        "company": job.company,
        "location": job.location,
        "summary": f"{t['note']} {summary}",
        "must_haves": must[:50],
        "nice_to_haves": job.nice_lines[:50],
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
            "gap": t["gap"].format(skill=s.name(lang)),
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
        "score": m.score,
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
    md = [f"# {r.name}"] + [x for x in (r.headline, " | ".join(r.contact)) if x]
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
        {
            "section": t["h_skills"],
            "change": t["c_skills"].format(n=len(matched), skills=_names(matched, lang)),
            "reason": t["r_skills"],
        }
    ]
    changes.append(
        {"section": t["h_experience"], "change": t["c_experience"], "reason": t["r_experience"]}
    )
    if m.missing_must:
        changes.append(
            {
                "section": t["h_skills"],
                "change": t["c_missing"].format(skills=_names(m.missing_must, lang)),
                "reason": t["r_missing"],
            }
        )
    changes.append({"section": "*", "change": f"{t['note']} {t['c_all']}", "reason": t["r_all"]})
    return {"markdown": "\n".join(md).strip() + "\n", "changes": changes}


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
    return {"self_introduction": intro, "questions": questions[:10], "questions_to_ask": ask}


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
