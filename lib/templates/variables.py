"""The input variables of every template, validated before anything is queued."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lib.errors import BadImage, ImageTooLarge, MissingVariables, UnknownTemplate
from lib.field_errors import field_error, from_validation
from lib.routing import TEMPLATES, Template

MAX_IMAGE_BYTES = 4 * 1024 * 1024
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
MAX_RESUME_CHARS = 30_000
MAX_DETAILED_RESUME_CHARS = 60_000
MAX_JOB_CHARS = 20_000
MAX_SUMMARY_CHARS = 20_000

# `data:<type>;base64` (before the comma); the header, leading whitespace and the whitespace
# around the value fit in this many characters.
_DATA_URL_HEADER = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64", re.ASCII)
_DATA_URL_SLACK = 256
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def _text(max_chars: int) -> Any:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_chars)


def _json_text(value: Any) -> Any:
    # A previous task's result may be passed as the object itself.
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value


ResumeText = Annotated[str, _text(MAX_RESUME_CHARS)]
JobText = Annotated[str, _text(MAX_JOB_CHARS)]
SummaryText = Annotated[
    Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_SUMMARY_CHARS)] | None,
    BeforeValidator(_json_text),
    AfterValidator(lambda value: value or None),
    Field(description="An earlier summary (text or its JSON result)."),
]


class _Vars(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResumeSummaryVars(_Vars):
    """Variables of `resume_summary`."""

    resume_text: ResumeText


class DetailedResumeSummaryVars(_Vars):
    """Variables of `detailed_resume_summary`."""

    detailed_resume_text: Annotated[str, _text(MAX_DETAILED_RESUME_CHARS)]


class JobSummaryVars(_Vars):
    """Variables of `job_summary`: the job as text, as a screenshot (data URL), or both."""

    job_text: JobText | None = None
    job_image: str | None = Field(
        default=None,
        description=f"A data URL of a PNG, JPEG, WebP or GIF, at most {MAX_IMAGE_BYTES} bytes.",
        json_schema_extra={"format": "data-url"},
    )

    @field_validator("job_image", mode="after")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None:
            check_image(value)
        return value

    @model_validator(mode="after")
    def _one_of(self) -> JobSummaryVars:
        if self.job_text is None and self.job_image is None:
            raise PydanticCustomError("missing_one_of", "job_text or job_image is required")
        return self


class JobMatchVars(_Vars):
    """Variables of `job_match`; earlier summaries sharpen the match when given."""

    resume_text: ResumeText
    job_text: JobText
    resume_summary: SummaryText = None
    job_summary: SummaryText = None


class ResumeCustomizeVars(_Vars):
    """Variables of `resume_customize`."""

    resume_text: ResumeText
    job_text: JobText
    job_summary: SummaryText = None


class InterviewPrepVars(_Vars):
    """Variables of `interview_prep`."""

    resume_text: ResumeText
    job_text: JobText
    job_summary: SummaryText = None


VARIABLE_MODELS: dict[Template, type[BaseModel]] = {
    "resume_summary": ResumeSummaryVars,
    "detailed_resume_summary": DetailedResumeSummaryVars,
    "job_summary": JobSummaryVars,
    "job_match": JobMatchVars,
    "resume_customize": ResumeCustomizeVars,
    "interview_prep": InterviewPrepVars,
}


def max_data_url_chars(max_bytes: int) -> int:
    """The longest data URL that can hold an image of `max_bytes`.

    Its base64 text, a line break every 76 characters (MIME-wrapped base64 is accepted),
    and `_DATA_URL_SLACK` characters for the header and surrounding whitespace.
    """
    encoded = 4 * -(-max_bytes // 3)
    return encoded + 2 * -(-encoded // 76) + _DATA_URL_SLACK


def check_image(data_url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """Decode and check an image data URL.

    The size is checked on the string's length first, before anything strips, copies or
    decodes it: a huge value costs nothing (it used to be stripped and scanned whole).

    Args:
        data_url: `data:image/<png|jpeg|webp|gif>;base64,<data>`.
        max_bytes: the largest decoded size accepted.

    Returns:
        The decoded image bytes.

    Raises:
        PydanticCustomError: `bad_image` (wrong type, undecodable, content not of the
            declared type) or `image_too_large`.
    """
    if len(data_url) > max_data_url_chars(max_bytes):
        raise PydanticCustomError("image_too_large", "image too large", {"max_bytes": max_bytes})
    comma = data_url.find(",", 0, _DATA_URL_SLACK)
    header = _DATA_URL_HEADER.fullmatch(data_url[:comma].strip()) if comma >= 0 else None
    if header is None or header["mime"].lower() not in IMAGE_TYPES:
        raise PydanticCustomError("bad_image", "not a PNG, JPEG, WebP or GIF data URL")
    # Drop whitespace (wrapped base64); a value without any is not copied.
    encoded = "".join(data_url[comma + 1 :].split())
    if len(encoded) * 3 // 4 > max_bytes + 2:
        raise PydanticCustomError("image_too_large", "image too large", {"max_bytes": max_bytes})
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("bad_image", "undecodable base64") from None
    if len(raw) > max_bytes:
        raise PydanticCustomError("image_too_large", "image too large", {"max_bytes": max_bytes})
    if not _has_magic(header["mime"].lower(), raw):
        raise PydanticCustomError("bad_image", "content is not the declared image type")
    return raw


def _has_magic(mime: str, raw: bytes) -> bool:
    if mime == "image/webp":
        return raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    return raw.startswith(_MAGIC[mime])


def validate_variables(template: str, variables: Mapping[str, Any] | Any) -> BaseModel:
    """Validate a template's variables before any call is made.

    Args:
        template: a template name.
        variables: the caller's variables.

    Returns:
        The template's variables model.

    Raises:
        UnknownTemplate: `template` is not one of the six.
        BadImage: the job image is not a PNG/JPEG/WebP/GIF data URL or does not decode.
        ImageTooLarge: the decoded image passes `MAX_IMAGE_BYTES`.
        MissingVariables: anything else missing or invalid; `fields` lists each variable
            with a code (`lib.field_errors`: missing, too_long, not_allowed, …).
    """
    if template not in TEMPLATES:
        raise UnknownTemplate(f"unknown template {template!r}", template=template)
    model = VARIABLE_MODELS[template]
    if not isinstance(variables, Mapping):
        fields = [field_error("variables", "invalid_type", expected="object")]
        raise MissingVariables("variables must be an object", fields=fields)
    try:
        return model.model_validate(dict(variables))
    except ValidationError as exc:
        raise _domain_error(exc) from None


def _domain_error(exc: ValidationError) -> MissingVariables | BadImage | ImageTooLarge:
    """The image's own errors keep their statuses (413, 415); the rest is one 422."""
    fields = from_validation(exc, whole="variables")
    detail = "; ".join(f"{f['field']}: {f['code']}" for f in fields)
    for item in fields:
        if item["code"] == "image_too_large":
            return ImageTooLarge(detail, max_bytes=MAX_IMAGE_BYTES, fields=[item])
    for item in fields:
        if item["code"] == "bad_image":
            return BadImage(detail, fields=[item])
    return MissingVariables(detail, fields=fields)


def has_image(validated: BaseModel) -> bool:
    """Whether validated variables carry an image (the task goes to the vision route)."""
    return getattr(validated, "job_image", None) is not None
