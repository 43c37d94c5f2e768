"""The template catalog served at `GET /api/templates`: what each task takes and returns."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from lib.i18n import LANGS
from lib.routing import MODES, TEMPLATES, VISION_TEMPLATES
from lib.templates.schemas import OUTPUT_MODELS
from lib.templates.variables import VARIABLE_MODELS


@lru_cache(maxsize=1)
def _catalog() -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "name": template,
            "mode": MODES[template],
            "languages": list(LANGS),
            "accepts_image": template in VISION_TEMPLATES,
            "variables": VARIABLE_MODELS[template].model_json_schema(),
            "output": OUTPUT_MODELS[template].model_json_schema(),
        }
        for template in TEMPLATES
    )


def catalog() -> list[dict[str, Any]]:
    """Every template with its mode, languages, variables' and output's JSON schemas.

    Frontends and external tests build their requests from it. The schemas are
    computed once per process; callers get fresh top-level dicts.
    """
    return [dict(entry) for entry in _catalog()]
