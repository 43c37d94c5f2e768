"""Render a template's en/zh prompt data files into OpenAI-style chat messages."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

from pydantic import BaseModel

from lib.i18n import Lang
from lib.routing import Template
from lib.templates.variables import validate_variables

# Machine-readable protocol between prompts and the offline model: language-independent.
TASK_MARKER = "slotline-task: {template}; lang: {lang}"
_MARKER_RE = re.compile(
    r"^slotline-task:\s*(?P<template>[a-z_]+);\s*lang:\s*(?P<lang>[a-z]+)\s*$", re.M
)
# Every text input travels between <<<LABEL>>> and <<<END LABEL>>>.
DELIMITERS: dict[str, str] = {
    "resume_text": "RESUME",
    "detailed_resume_text": "DETAILED RESUME",
    "job_text": "JOB DESCRIPTION",
    "resume_summary": "RESUME SUMMARY",
    "job_summary": "JOB SUMMARY",
}
IMAGE_VARIABLES = frozenset({"job_image"})
_BLOCK_RE = re.compile(r"<<<(?P<label>[A-Z ]+)>>>\n(?P<body>.*?)\n<<<END (?P=label)>>>", re.S)
_LABEL_TO_VAR = {label: name for name, label in DELIMITERS.items()}

Message = dict[str, Any]


@dataclass(frozen=True)
class PromptTemplate:
    """One template in one language, as loaded from `prompts/<lang>/<template>.toml`."""

    template: str
    lang: str
    inputs: tuple[str, ...]
    identity: str
    instructions: str
    context: str
    user_message: str
    output_skeleton: str


@dataclass(frozen=True)
class SharedRules:
    """The rules and headings every template of a language shares (`_shared.toml`)."""

    language_name: str
    heading_instructions: str
    heading_rules: str
    heading_output: str
    rules: str
    output_intro: str
    image_note: str
    inputs_intro: str


def _read(lang: str, name: str) -> dict[str, Any]:
    text = files("prompts").joinpath(lang, f"{name}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@lru_cache(maxsize=32)
def load_template(template: Template, lang: Lang) -> PromptTemplate:
    """The prompt data of `template` in `lang`, read once per process.

    Raises:
        FileNotFoundError: no data file for that template and language.
    """
    data = _read(lang, template)
    inputs = tuple(data.pop("inputs"))
    fields = {k: str(v).strip() for k, v in data.items()}
    return PromptTemplate(template=template, lang=lang, inputs=inputs, **fields)


@lru_cache(maxsize=4)
def load_shared(lang: Lang) -> SharedRules:
    """The shared rules of `lang`, read once per process."""
    return SharedRules(**{k: str(v).strip() for k, v in _read(lang, "_shared").items()})


@lru_cache(maxsize=32)
def prompt_version(template: Template, lang: Lang) -> str:
    """A short hash of the prompt data a summary depends on (its template and the shared
    rules): a changed prompt makes new summaries, not cache hits."""
    import hashlib

    digest = hashlib.sha256()
    for name in (template, "_shared"):
        digest.update(files("prompts").joinpath(lang, f"{name}.toml").read_bytes())
    return digest.hexdigest()[:16]


def task_marker(template: str, lang: str) -> str:
    """The marker line opening every system message."""
    return TASK_MARKER.format(template=template, lang=lang)


def parse_marker(text: str) -> tuple[str, str] | None:
    """`(template, lang)` from a system message carrying the task marker, else None."""
    match = _MARKER_RE.search(text)
    return (match["template"], match["lang"]) if match else None


def delimit(name: str, value: str) -> str:
    """One input between its delimiters; delimiter-like runs in the value are defused."""
    label = DELIMITERS[name]
    safe = value.replace("<<<", "< < <").replace(">>>", "> > >")
    return f"<<<{label}>>>\n{safe}\n<<<END {label}>>>"


def extract_inputs(text: str) -> dict[str, str]:
    """The delimited inputs of a rendered user message, by variable name."""
    found: dict[str, str] = {}
    for match in _BLOCK_RE.finditer(text):
        name = _LABEL_TO_VAR.get(match["label"])
        if name is not None and name not in found:
            found[name] = match["body"]
    return found


def render(template: Template, lang: Lang, variables: BaseModel | dict[str, Any]) -> list[Message]:
    """The chat messages of one task.

    Args:
        template: the task template.
        lang: the user's language; the model is told to answer in it.
        variables: validated variables, or a dict to validate first.

    Returns:
        `[{"role": "system", ...}, {"role": "user", ...}]`; the user content is a list of
        parts (`text`, then `image_url` with the data URL) when the task carries an image.

    Raises:
        UnknownTemplate, MissingVariables, BadImage, ImageTooLarge: from validation.
    """
    if not isinstance(variables, BaseModel):
        variables = validate_variables(template, variables)
    values = variables.model_dump()
    prompt, shared = load_template(template, lang), load_shared(lang)
    system = "\n\n".join(
        [
            task_marker(template, lang),
            prompt.identity,
            f"## {shared.heading_instructions}\n{prompt.instructions}",
            f"## {shared.heading_rules}\n{shared.rules}",
            f"## {shared.heading_output}\n{shared.output_intro}\n{prompt.output_skeleton}",
        ]
    )
    parts = [prompt.context, shared.inputs_intro]
    images: list[str] = []
    for name in prompt.inputs:
        value = values.get(name)
        if value is None:
            continue
        if name in IMAGE_VARIABLES:
            images.append(value)
            parts.append(shared.image_note)
        else:
            parts.append(delimit(name, value))
    parts.append(prompt.user_message)
    text = "\n\n".join(parts)
    user: Message = {"role": "user", "content": text}
    if images:
        user["content"] = [
            {"type": "text", "text": text},
            *({"type": "image_url", "image_url": {"url": url}} for url in images),
        ]
    return [{"role": "system", "content": system}, user]
