"""Section headings of résumés and job descriptions, in English and Chinese.

One vocabulary for everything that reads a document's structure: the service prechecks
(lib/services/prechecks.py: does it show the sections a service needs?) and the offline
model's reader (lib/local/offline/keywords.py). Matched case-insensitively at a line's start.
"""

from __future__ import annotations

RESUME: dict[str, tuple[str, ...]] = {
    "summary": (
        "summary",
        "professional summary",
        "profile",
        "about me",
        "about",
        "objective",
        "个人简介",
        "个人总结",
        "自我评价",
        "个人概况",
        "简介",
        "概述",
    ),
    "experience": (
        "experience",
        "work experience",
        "professional experience",
        "employment",
        "work history",
        "工作经历",
        "工作经验",
        "实习经历",
        "职业经历",
    ),
    "education": ("education", "教育背景", "教育经历", "学历"),
    "skills": (
        "skills",
        "technical skills",
        "core skills",
        "competencies",
        "技能",
        "专业技能",
        "技能特长",
        "技术栈",
    ),
    "projects": ("projects", "project experience", "项目经历", "项目经验", "项目"),
    "certifications": ("certifications", "certificates", "licenses", "证书", "资格证书"),
    "languages": ("languages", "语言", "语言能力"),
    "contact": ("contact", "contacts", "contact information", "联系方式", "联系信息"),
}

JOB: dict[str, tuple[str, ...]] = {
    "responsibilities": (
        "responsibilities",
        "what you will do",
        "what you'll do",
        "the role",
        "duties",
        "your role",
        "岗位职责",
        "工作职责",
        "职位描述",
        "工作内容",
        "职责",
    ),
    "requirements": (
        "requirements",
        "qualifications",
        "what we look for",
        "what we're looking for",
        "must have",
        "must-haves",
        "who you are",
        "任职要求",
        "岗位要求",
        "任职资格",
        "职位要求",
        "要求",
    ),
}
