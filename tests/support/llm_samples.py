"""Sample résumés, job posts and images shared by the LLM-layer tests."""

from __future__ import annotations

import base64

RESUME = """Jane Doe
Senior Backend Engineer
jane@example.com | +1 555 123 4567 | github.com/jane

Experience
Senior Engineer at Acme Corp, 2020 - present
- Built REST APIs in Python and FastAPI serving 2M users
- Ran PostgreSQL and Redis on AWS with Docker
Engineer | Beta Ltd | 2016 - 2020
- Wrote Java microservices

Education
MIT, BSc Computer Science, 2012 - 2016

Skills
Python, SQL, Docker, GraphQL

Certifications
- AWS Certified Developer

Awards:
- Hackathon winner 2019
"""

JOB = """Backend Engineer
Company: Globex
Location: Berlin

Requirements:
- 5+ years of Python
- Experience with Kubernetes and PostgreSQL

Nice to have:
- Kafka or GraphQL
"""

JOB_ZH = """高级后端工程师
公司：某某科技有限公司
任职要求：
1. 精通 Python，熟悉 Kubernetes
加分项：
- 有大模型经验者优先
"""

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
GIF = b"GIF89a" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 16


def data_url(raw: bytes, mime: str = "image/png") -> str:
    """A base64 data URL of `raw`."""
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def variables(template: str) -> dict[str, str]:
    """Valid variables for `template`."""
    if template == "resume_summary":
        return {"resume_text": RESUME}
    if template == "detailed_resume_summary":
        return {"detailed_resume_text": RESUME}
    if template == "job_summary":
        return {"job_text": JOB}
    return {"resume_text": RESUME, "job_text": JOB}
