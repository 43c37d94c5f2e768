"""Keyword extraction and plain-text parsing of résumés and job posts (offline baseline)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lib import headings

# (English name, Chinese name, aliases). ASCII aliases match on word boundaries,
# case-insensitively; CJK aliases match as substrings.
VOCABULARY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Python", "Python", ("python",)),
    ("Java", "Java", ("java",)),
    ("JavaScript", "JavaScript", ("javascript", "js")),
    ("TypeScript", "TypeScript", ("typescript",)),
    ("Go", "Go", ("golang",)),
    ("Rust", "Rust", ("rust",)),
    ("C++", "C++", ("c++",)),
    ("C#", "C#", ("c#",)),
    ("SQL", "SQL", ("sql",)),
    ("PostgreSQL", "PostgreSQL", ("postgresql", "postgres")),
    ("MySQL", "MySQL", ("mysql",)),
    ("Redis", "Redis", ("redis",)),
    ("MongoDB", "MongoDB", ("mongodb",)),
    ("Kafka", "Kafka", ("kafka",)),
    ("Spark", "Spark", ("spark",)),
    ("Docker", "Docker", ("docker",)),
    ("Kubernetes", "Kubernetes", ("kubernetes", "k8s")),
    ("AWS", "AWS", ("aws", "amazon web services")),
    ("Azure", "Azure", ("azure",)),
    ("GCP", "GCP", ("gcp", "google cloud")),
    ("Linux", "Linux", ("linux",)),
    ("Git", "Git", ("git",)),
    ("CI/CD", "CI/CD", ("ci/cd", "continuous integration", "持续集成")),
    ("React", "React", ("react",)),
    ("Vue", "Vue", ("vue", "vue.js")),
    ("Node.js", "Node.js", ("node.js", "nodejs")),
    ("Django", "Django", ("django",)),
    ("FastAPI", "FastAPI", ("fastapi",)),
    ("Flask", "Flask", ("flask",)),
    ("Spring", "Spring", ("spring", "spring boot")),
    ("REST APIs", "REST API", ("rest", "restful", "rest api", "rest apis")),
    ("GraphQL", "GraphQL", ("graphql",)),
    ("Microservices", "微服务", ("microservices", "microservice", "微服务")),
    ("Distributed systems", "分布式系统", ("distributed systems", "distributed system", "分布式")),
    ("Machine learning", "机器学习", ("machine learning", "机器学习")),
    ("Deep learning", "深度学习", ("deep learning", "深度学习")),
    ("NLP", "自然语言处理", ("nlp", "natural language processing", "自然语言处理")),
    ("Computer vision", "计算机视觉", ("computer vision", "计算机视觉")),
    ("LLMs", "大模型", ("llm", "llms", "large language models", "大模型", "大语言模型")),
    ("PyTorch", "PyTorch", ("pytorch",)),
    ("TensorFlow", "TensorFlow", ("tensorflow",)),
    ("Data analysis", "数据分析", ("data analysis", "data analytics", "数据分析")),
    ("Statistics", "统计学", ("statistics", "statistical", "统计")),
    ("Excel", "Excel", ("excel",)),
    ("Tableau", "Tableau", ("tableau",)),
    ("Testing", "测试", ("testing", "unit tests", "unit testing", "pytest", "测试")),
    ("Agile", "敏捷开发", ("agile", "scrum", "敏捷")),
    ("Project management", "项目管理", ("project management", "项目管理")),
    ("Product management", "产品管理", ("product management", "产品管理")),
    ("Team leadership", "团队管理", ("team leadership", "leadership", "team lead", "团队管理")),
    ("Communication", "沟通能力", ("communication", "沟通")),
    ("English", "英语", ("english", "英语", "英文")),
    ("Mandarin", "普通话", ("mandarin", "普通话")),
    ("Marketing", "市场营销", ("marketing", "市场营销")),
    ("Sales", "销售", ("sales", "销售")),
    ("UX design", "用户体验设计", ("ux", "user experience", "用户体验")),
    ("Figma", "Figma", ("figma",)),
    ("Finance", "财务", ("finance", "financial", "财务")),
    ("Accounting", "会计", ("accounting", "会计")),
)

_EDGE = r"(?<![A-Za-z0-9+#/.])"
_EDGE_END = r"(?![A-Za-z0-9+#/])"


def _pattern(alias: str) -> re.Pattern[str]:
    if alias.isascii():
        return re.compile(_EDGE + re.escape(alias) + _EDGE_END, re.I)
    return re.compile(re.escape(alias))


_PATTERNS: tuple[tuple[str, str, tuple[re.Pattern[str], ...]], ...] = tuple(
    (en, zh, tuple(_pattern(a) for a in aliases)) for en, zh, aliases in VOCABULARY
)
_KNOWN = {a.lower() for _, _, aliases in VOCABULARY for a in aliases} | {
    en.lower() for en, _, _ in VOCABULARY
}
_TOKEN = re.compile(r"(?<![\w+#.])[A-Za-z][A-Za-z0-9]*(?:[.+#][A-Za-z0-9+#]*)*")
# Acronyms that are not skills.
_NOT_SKILLS = frozenset(
    "cv usa uk eu ceo cto cfo coo vp hr phd msc bsc ba bs ms mba gpa llc inc ltd co "
    "am pm id ok tbd faq q1 q2 q3 q4 h1 h2 ii iii iv api apis".split()
)


@dataclass(frozen=True)
class Skill:
    """A skill found in a text: a stable key and its display names."""

    key: str
    en: str
    zh: str

    def name(self, lang: str) -> str:
        """The display name in `lang`."""
        return self.zh if lang == "zh" else self.en


def _is_tech_token(token: str) -> bool:
    letters = [c for c in token if c.isalpha()]
    if len(token) < 2 or len(token) > 24 or token.lower() in _NOT_SKILLS:
        return False
    if token.lower() in _KNOWN:
        return False
    upper = sum(c.isupper() for c in letters)
    if token.isupper() and len(token) > 5:  # shouted headings, not acronyms
        return False
    return upper >= 2 or (upper >= 1 and any(c.isdigit() or c in "+#." for c in token[1:]))


def extract_skills(text: str, limit: int = 40) -> list[Skill]:
    """Vocabulary skills and capitalised tech tokens (GraphQL, EC2), in order of appearance."""
    found: list[tuple[int, Skill]] = []
    for en, zh, patterns in _PATTERNS:
        positions = [m.start() for p in patterns if (m := p.search(text))]
        if positions:
            found.append((min(positions), Skill(en.lower(), en, zh)))
    seen = {s.key for _, s in found}
    for match in _TOKEN.finditer(text):
        token = match.group(0).rstrip(".")
        if _is_tech_token(token) and token.lower() not in seen:
            seen.add(token.lower())
            found.append((match.start(), Skill(token.lower(), token, token)))
    found.sort(key=lambda item: (item[0], item[1].key))
    return [skill for _, skill in found][:limit]


def mentions(skill: Skill, text: str) -> bool:
    """Whether `text` mentions `skill`."""
    return any(s.key == skill.key for s in extract_skills(text, limit=1_000))


def evidence_line(skill: Skill, lines: list[str]) -> str:
    """The first line that mentions `skill` (empty if none)."""
    return next((line for line in lines if mentions(skill, line)), "")


# ---- plain-text structure ----------------------------------------------------------

SECTION_WORDS: dict[str, tuple[str, ...]] = headings.RESUME
_WORD_TO_KIND = {w: kind for kind, words in SECTION_WORDS.items() for w in words}
_BULLET = re.compile(r"^\s*(?:[-*•·●▪‣–]|\d{1,2}[.)、])\s*")
PERIOD = re.compile(
    r"((?:19|20)\d{2}(?:[./年-]\d{1,2}月?)?\s*(?:-|–|—|~|to|至|到)\s*"
    r"(?:(?:19|20)\d{2}(?:[./年-]\d{1,2}月?)?|present|now|current|today|至今|现在|今))",
    re.I,
)
_SPLIT = re.compile(r"\s+at\s+|\s*[|｜@]\s*|\s+[-–—]\s+|\s*[,，]\s*")
_CONTACT = re.compile(r"@|https?://|www\.|linkedin|github|\+?\d[\d ()-]{6,}\d", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?:[^\d+]{0,12})?\+?\d[\d ()-]{6,}\d")


def clean(line: str) -> str:
    """A line without its bullet and surrounding whitespace."""
    return _BULLET.sub("", line).strip()


def is_bullet(line: str) -> bool:
    """Whether a line is a list item."""
    return bool(_BULLET.match(line))


def heading_kind(line: str) -> str | None:
    """`experience`, `education`, …, `other` for a heading line, None for content."""
    text = line.strip()
    bare = text.strip("#*=_ ").rstrip(":：").strip().lower()
    if not bare or len(bare) > 40:
        return None
    if bare in _WORD_TO_KIND:
        return _WORD_TO_KIND[bare]
    if text.startswith("#") or (text.endswith((":", "：")) and not is_bullet(text)):
        return "other"
    if text.isupper() and len(bare) > 3 and not PERIOD.search(text):
        return "other"
    return None


@dataclass
class Section:
    """A titled run of lines."""

    title: str
    kind: str
    lines: list[str] = field(default_factory=list)


@dataclass
class Document:
    """A résumé or job post split into its head (before any heading) and sections."""

    head: list[str]
    sections: list[Section]
    lines: list[str]

    def kind(self, kind: str) -> list[Section]:
        """The sections of one kind, in order."""
        return [s for s in self.sections if s.kind == kind]


def parse(text: str) -> Document:
    """Split plain text into head lines and headed sections (blank lines dropped)."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    head: list[str] = []
    sections: list[Section] = []
    for line in lines:
        kind = heading_kind(line)
        if kind is not None:
            sections.append(Section(line.strip("#*=_ ").rstrip(":：").strip(), kind))
        elif sections:
            sections[-1].lines.append(line)
        else:
            head.append(line)
    return Document(head, sections, [clean(line) for line in lines])


@dataclass
class Entry:
    """A position, project or degree parsed from its lines."""

    parts: list[str]
    period: str
    items: list[str] = field(default_factory=list)


def entries(lines: list[str]) -> list[Entry]:
    """Group lines into entries: a non-bullet line with a period (or the first) opens one."""
    found: list[Entry] = []
    for line in lines:
        period = PERIOD.search(line)
        if found and (is_bullet(line) or period is None):
            found[-1].items.append(clean(line))
            continue
        rest = PERIOD.sub(" ", clean(line)) if period else clean(line)
        parts = [p.strip(" ()（）") for p in _SPLIT.split(rest) if p.strip(" ()（）")]
        found.append(Entry(parts, period.group(1) if period else ""))
    return found


def head_pieces(lines: list[str]) -> list[str]:
    """The pieces of a résumé's head lines, split on `|`, `·`, `•` (verbatim, in order)."""
    return [
        piece.strip()
        for line in lines
        for piece in re.split(r"\s*[|｜·•]\s*", clean(line))
        if piece.strip()
    ]


def is_contact(piece: str) -> bool:
    """Whether a head piece is a contact item (e-mail, phone, link)."""
    return bool(_CONTACT.search(piece))


@dataclass
class Contacts:
    """A résumé's contact items sorted into the header's fields; the rest kept in order."""

    email: str | None = None
    phone: str | None = None
    linkedin: str | None = None
    github: str | None = None
    others: list[str] = field(default_factory=list)


def sort_contacts(pieces: list[str]) -> Contacts:
    """E-mail, phone, LinkedIn and GitHub (the first of each), verbatim; others after."""
    found = Contacts()
    for piece in pieces:
        email = _EMAIL.search(piece)
        if "linkedin" in piece.lower() and found.linkedin is None:
            found.linkedin = piece
        elif "github" in piece.lower() and found.github is None:
            found.github = piece
        elif email and found.email is None:
            found.email = email.group(0)
        elif _PHONE.fullmatch(piece) and found.phone is None:
            found.phone = piece
        else:
            found.others.append(piece)
    return found


def list_items(lines: list[str]) -> list[str]:
    """Items of a list section: bullets, or comma-separated values on a line."""
    items: list[str] = []
    for line in lines:
        text = clean(line)
        if not is_bullet(line) and re.search(r"[,，、;；]", text) and len(text) < 300:
            items.extend(p.strip() for p in re.split(r"[,，、;；]", text) if p.strip())
        elif text:
            items.append(text)
    return items
