"""The six task outputs: the specification's field names, order and optionality, exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lib.i18n import Lang
from lib.routing import TEMPLATES, Template
from lib.templates.catalog import catalog
from lib.templates.prompts import load_template
from lib.templates.schemas import OUTPUT_MODELS, JobMatch

# name → required?  (the specification's `?` marks an optional field)
ASSET = {
    "header": (
        True,
        {"name": False, "email": False, "phone": False, "linkedin": False, "github": False},
    ),
    "summary": False,
    "experience": (
        False,
        {"role": False, "company": False, "duration": False, "highlights": False},
    ),
    "education": (False, {"degree": False, "school": False, "duration": False}),
    "skills": False,
}
SPEC: dict[str, dict[str, Any]] = {
    "resume_summary": ASSET,
    "detailed_resume_summary": ASSET,
    "job_summary": {"jobTitle": True, "company": False, "mustHaves": True, "niceToHaves": True},
    "job_match": {
        "match_score": True,
        "overall_assessment": True,
        "strengths": (True, {"point": True, "evidence": True}),
        "weaknesses": (True, {"point": True, "suggestion": True}),
        "cover_letter_script": True,
    },
    "resume_customize": {
        "customized_resume_markdown": True,
        "customization_summary": (True, {"section": True, "change_reason": True}),
    },
    "interview_prep": {
        "self_introduction_script": True,
        "potential_questions": (True, {"question": True, "answer_guideline": True}),
        "reverse_questions": True,
    },
}
# What this project adds after the specified fields (all optional).
ADDITIONS = {
    "detailed_resume_summary": ["projects", "certifications", "languages", "extra_sections"],
    "job_summary": ["location", "summary"],
}


def _object(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The object schema behind `node` (through $ref, arrays and nullable anyOf)."""
    while True:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        elif "anyOf" in node:
            node = next(n for n in node["anyOf"] if n.get("type") != "null")
        elif node.get("type") == "array":
            node = node["items"]
        else:
            return node


def _check(schema: dict[str, Any], node: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    obj = _object(schema, node)
    names = list(obj["properties"])
    assert names[: len(spec)] == list(spec), f"{where}: specified fields first, in order"
    required = set(obj.get("required", []))
    for name, rule in spec.items():
        needed, inner = rule if isinstance(rule, tuple) else (rule, None)
        assert (name in required) == needed, f"{where}.{name}: required={needed}"
        if not needed:
            assert obj["properties"][name].get("default", "missing") is None, f"{where}.{name}"
        if inner is not None:
            _check(schema, obj["properties"][name], inner, f"{where}.{name}")
    assert required <= set(spec), f"{where}: every addition is optional"


@pytest.mark.parametrize("template", TEMPLATES)
def test_output_schema_has_the_specified_names(template: str) -> None:
    """Each output's JSON Schema (as GET /api/templates serves it) matches the specification."""
    schema = next(e["output"] for e in catalog() if e["name"] == template)
    assert schema == OUTPUT_MODELS[template].model_json_schema()  # type: ignore[index]
    _check(schema, schema, SPEC[template], template)
    extra = list(schema["properties"])[len(SPEC[template]) :]
    assert extra == ADDITIONS.get(template, [])


def test_match_score_is_a_number_from_0_to_100() -> None:
    """match_score takes 0–100 (integers and fractions), nothing outside."""
    base = {
        "overall_assessment": "ok",
        "strengths": [],
        "weaknesses": [],
        "cover_letter_script": "Dear team",
    }
    assert JobMatch.model_validate({**base, "match_score": 72.5}).match_score == 72.5
    assert JobMatch.model_validate({**base, "match_score": 100}).match_score == 100
    for bad in (-1, 100.5, "high"):
        with pytest.raises(ValueError):
            JobMatch.model_validate({**base, "match_score": bad})


def test_optional_fields_may_be_absent() -> None:
    """A résumé summary with only its header, and an empty header, validate."""
    model = OUTPUT_MODELS["resume_summary"]
    dumped = model.model_validate({"header": {}}).model_dump()
    assert dumped["header"]["email"] is None and dumped["experience"] is None


def _keys(value: Any) -> Any:
    """The key structure of a skeleton: nested dicts of keys, first list item for lists."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list) and value:
        return _keys(value[0])
    return None


def _schema_keys(schema: dict[str, Any], node: dict[str, Any]) -> Any:
    obj = _object(schema, node)
    if "properties" not in obj:
        return None
    return {k: _schema_keys(schema, v) for k, v in obj["properties"].items()}


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("template", TEMPLATES)
def test_skeleton_spells_every_field(template: Template, lang: Lang) -> None:
    """The prompt skeleton names every output field (nested too), in the schema's order."""
    skeleton = json.loads(load_template(template, lang).output_skeleton)
    schema = OUTPUT_MODELS[template].model_json_schema()
    assert json.dumps(_keys(skeleton)) == json.dumps(_schema_keys(schema, schema))
