"""What the offline keyword baseline reads from a résumé and from a job post."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lib.local.offline.keywords import (
    Contacts,
    Document,
    Entry,
    Skill,
    clean,
    entries,
    extract_skills,
    head_pieces,
    is_bullet,
    is_contact,
    parse,
    sort_contacts,
)

_NICE = re.compile(r"nice to have|preferred|a plus|bonus|desirable|优先|加分|更佳|者佳", re.I)
_MUST = re.compile(
    r"required|requirement|must|need|proficien|experience (?:with|in)|years|"
    r"要求|必须|必备|熟悉|精通|掌握|熟练|具备|以上",
    re.I,
)
# Heading patterns match the heading with its spaces removed: OCR often drops them
# ("Whatweoffer", "Abouttherole").
_REQ_HEADING = re.compile(
    r"requirement|qualification|must|whatyou(?:bring|have|need)|youhave|要求|任职|资格", re.I
)
_NICE_HEADING = re.compile(r"nice|prefer|bonus|plus|加分|优先", re.I)
_FIELD = r"\s*[:：]\s*(.+)$"
_TITLE = re.compile(r"^(?:job title|title|position|role|职位名称|职位|岗位)" + _FIELD, re.I)
_COMPANY = re.compile(r"^(?:company|employer|organi[sz]ation|公司名称|公司|企业)" + _FIELD, re.I)
_LOCATION = re.compile(r"^(?:location|based in|city|工作地点|地点|城市|base)" + _FIELD, re.I)
_AT_COMPANY = re.compile(r"\bat\s+([A-Z][\w&.'-]*(?:\s+[A-Z][\w&.'-]*){0,3})")
# "Title — Company (Location)": a dash (a hyphen only between spaces) splits a first line.
_TITLE_SPLIT = re.compile(r"\s*[—–]\s*|\s+-\s+")
_TRAILING_PAREN = re.compile(r"^(.*?)\s*[(（]([^()（）]+)[)）]\s*$")
_OTHER_HEADING = re.compile(
    r"about|role|responsibilit|whatwe|weoffer|benefit|duties|职责|工作内容|福利|关于|我们", re.I
)
_SENTENCE_END = ".。!！?？;；,，"


@dataclass
class Resume:
    """What the baseline reads from a résumé."""

    doc: Document
    name: str
    headline: str
    contacts: Contacts
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
    """Parse a résumé's header (name, headline, contacts), positions and skills."""
    doc = parse(text)
    head = doc.head or doc.lines[:1]
    name = _TITLE_SPLIT.split(clean(head[0]), maxsplit=1)[0] if head else ""
    head_rest = head_pieces(head[1:])
    section = head_pieces([ln for s in doc.kind("contact") for ln in s.lines])
    plain = [p for p in head_rest if not is_contact(p)]
    contacts = sort_contacts([p for p in head_rest + section if is_contact(p)])
    contacts.others = plain[1:] + [p for p in section if not is_contact(p)] + contacts.others
    exp_lines = [line for s in doc.kind("experience") for line in s.lines]
    return Resume(
        doc=doc,
        name=name[:120],
        headline=plain[0][:200] if plain else "",
        contacts=contacts,
        experience=entries(exp_lines),
        skills=extract_skills(text),
    )


def _split_title(line: str) -> tuple[str, str, str]:
    """(title, company, location) from a "Title — Company (Location)" first line."""
    parts = _TITLE_SPLIT.split(line, maxsplit=1)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        return line, "", ""
    company, location = parts[1], ""
    if m := _TRAILING_PAREN.match(company):
        company, location = m.group(1), m.group(2)
    return parts[0], company, location


def _job_heading(line: str, bare: str, following: str) -> str | None:
    """`must`, `nice` or `other` when the line heads a section of a job post, else None.

    A heading is short, not a list item and not a sentence; it ends with a colon, opens
    with `#`, names a known section, or is followed by a list.
    """
    text = bare.rstrip(":：").strip()
    if not text or len(text) > 40 or is_bullet(line) or text.endswith(tuple(_SENTENCE_END)):
        return None
    marked = line.startswith("#") or bare.endswith((":", "："))
    squeezed = "".join(text.split())
    if _NICE_HEADING.search(squeezed) and (marked or len(text) <= 20):
        return "nice"
    if _REQ_HEADING.search(squeezed) and (marked or len(text) <= 20):
        return "must"
    if marked or _OTHER_HEADING.search(squeezed) or is_bullet(following):
        return "other"
    return None


def read_job(text: str) -> Job:
    """Parse a job post's title, company, and required and preferred lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    title = company = location = ""
    must_lines: list[str] = []
    nice_lines: list[str] = []
    section = "other"
    for index, line in enumerate(lines):
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
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if index and (kind := _job_heading(line, bare, following)):
            section = kind
            continue
        if _NICE.search(bare) or section == "nice":
            nice_lines.append(bare[:300])
        elif section == "must" or (_MUST.search(bare) and extract_skills(bare)):
            must_lines.append(bare[:300])
    if not title and lines:
        title, first_company, first_location = _split_title(clean(lines[0]))
        company, location = company or first_company, location or first_location
    if not company and (m := _AT_COMPANY.search(" ".join(lines[:3]))):
        company = m.group(1)
    title, company, location = title[:200], company[:200], location[:200]
    skills = extract_skills(text)
    must_text = "\n".join(must_lines) if must_lines else _without(text, nice_lines)
    must = extract_skills(must_text)
    must_keys = {s.key for s in must}
    nice = [s for s in extract_skills("\n".join(nice_lines)) if s.key not in must_keys]
    return Job(title, company, location, must_lines, nice_lines, must, nice, skills)


def _without(text: str, lines: list[str]) -> str:
    drop = set(lines)
    return "\n".join(line for line in text.splitlines() if clean(line) not in drop)
