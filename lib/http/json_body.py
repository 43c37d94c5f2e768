"""JSON request bodies: parsed without Python recursion; bad or too deeply nested input is a 422.

`json.loads` (what `Request.json()` uses) recurses in C and raises `RecursionError` on a
body nested ~1,000 levels deep; that is not a `ValueError`, so it escaped as a 500.
pydantic-core's parser (`from_json`, the one `model_validate_json` uses) has its own
nesting limit (~200 levels) and reports it as a `ValueError`. Anything it returns is
shallow enough for the recursive code after it (pydantic validation, `json.dumps`). It is
also stricter where laxness hurt: a lone UTF-16 surrogate (`"\\ud800"`) is refused
instead of becoming a string that no encoder can write.
"""

from __future__ import annotations

from typing import Any

import pydantic_core
from starlette.requests import Request

from lib.errors import InvalidRequest

# How pydantic-core words its nesting limit (the only way to tell it from other errors).
_TOO_DEEP = "recursion limit exceeded"


def parse_json(raw: bytes | str) -> Any:
    """Parse a JSON body.

    Args:
        raw: the body (UTF-8).

    Returns:
        The decoded value.

    Raises:
        InvalidRequest: `reason="too_deep"` when nested past the parser's limit,
            `reason="not_json"` for anything else that is not JSON.
    """
    try:
        return pydantic_core.from_json(raw)
    except ValueError as exc:
        if str(exc).startswith(_TOO_DEEP):
            raise InvalidRequest("JSON body nested too deeply", reason="too_deep") from None
        raise InvalidRequest(f"body is not JSON: {exc}", reason="not_json") from None


async def read_json(request: Request) -> Any:
    """The request's body, read (capped by `lib.http.body_limit`) and parsed by `parse_json`.

    Raises:
        InvalidRequest: not JSON, or nested too deeply.
        PayloadTooLarge: the body passed its endpoint's limit.
    """
    return parse_json(await request.body())
