"""Validation errors as a list a client can act on: each field, a stable code, its limits.

`from_validation(exc)` turns a pydantic `ValidationError` into `fields` items such as
`{"field": "resume_text", "code": "too_long", "max": 30000}`; the error response adds
each item's localized `message` (`lib.i18n.localize_fields`, texts under
`errors.field.*`). Pydantic only: the producer uses it before anything is queued.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

FieldCode = Literal[
    "missing",
    "missing_one_of",
    "not_allowed",
    "too_long",
    "too_short",
    "too_small",
    "too_large",
    "invalid_type",
    "invalid_format",
    "not_supported",
    "bad_image",
    "image_too_large",
    "invalid",
]
FieldError = dict[str, Any]  # {"field", "code", and the code's own params}

# pydantic's error types → ours (those that carry a limit are handled below).
_CODES: dict[str, FieldCode] = {
    "missing": "missing",
    "extra_forbidden": "not_allowed",
    "string_pattern_mismatch": "invalid_format",
    "bad_image": "bad_image",
}
# Type errors → what was expected (`errors.field_type.*`).
_EXPECTED: dict[str, str] = {
    "string_type": "text",
    "string_unicode": "text",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "list_type": "list",
}
# Model-level checks that name their fields themselves.
_ONE_OF: dict[str, tuple[str, str]] = {"missing_one_of": ("job_text", "job_image")}


def field_error(field: str, code: FieldCode, **params: Any) -> FieldError:
    """One item of `fields`."""
    return {"field": field, "code": code, **params}


def from_validation(exc: ValidationError, *, whole: str = "body") -> list[FieldError]:
    """Every error of `exc`, one item per field and problem, in pydantic's order.

    Args:
        exc: the validation error.
        whole: the name of the validated object itself, for errors about it as a whole
            (`body`, `variables`).
    """
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        item = _item(err, whole)
        if item not in out:
            out.append(item)
    return out


def _item(err: ErrorDetails, whole: str) -> FieldError:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    field = str(err["loc"][0]) if err["loc"] else whole
    if kind in _ONE_OF:
        first, other = _ONE_OF[kind]
        return field_error(first, "missing_one_of", one_of=[first, other])
    if kind in _CODES:
        return field_error(field, _CODES[kind])
    if kind in _EXPECTED:
        return field_error(field, "invalid_type", expected=_EXPECTED[kind])
    if kind in ("string_too_long", "too_long"):
        return field_error(field, "too_long", max=ctx.get("max_length"))
    if kind in ("string_too_short", "too_short"):
        return field_error(field, "too_short", min=ctx.get("min_length"))
    if kind in ("less_than_equal", "less_than"):
        return field_error(field, "too_large", max=ctx.get("le", ctx.get("lt")))
    if kind in ("greater_than_equal", "greater_than"):
        return field_error(field, "too_small", min=ctx.get("ge", ctx.get("gt")))
    if kind == "image_too_large":
        return field_error(field, "image_too_large", max_bytes=ctx.get("max_bytes"))
    return field_error(field, "invalid")
