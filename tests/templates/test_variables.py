"""Template variables: validated before anything is queued, errors name the fields."""

from __future__ import annotations

import pytest

from lib.errors import BadImage, ImageTooLarge, MissingVariables, UnknownTemplate
from lib.routing import TEMPLATES
from lib.templates.variables import MAX_IMAGE_BYTES, VARIABLE_MODELS, has_image, validate_variables
from tests.support.llm_samples import GIF, JPEG, PNG, WEBP, data_url, variables


@pytest.mark.parametrize("template", TEMPLATES)
def test_valid_variables_validate(template: str) -> None:
    """Every template accepts its sample variables and returns its own model."""
    validated = validate_variables(template, variables(template))
    assert isinstance(validated, VARIABLE_MODELS[template])  # type: ignore[index]
    assert not has_image(validated)


@pytest.mark.parametrize(
    ("template", "given", "fields"),
    [
        ("resume_summary", {}, [("resume_text", "missing")]),
        (
            "detailed_resume_summary",
            {"resume_text": "x"},
            [("detailed_resume_text", "missing"), ("resume_text", "not_allowed")],
        ),
        ("job_summary", {}, [("job_text", "missing_one_of")]),
        ("job_match", {}, [("resume_text", "missing"), ("job_text", "missing")]),
        ("job_match", {"resume_text": "   ", "job_text": "y"}, [("resume_text", "too_short")]),
        ("resume_customize", {"resume_text": "x"}, [("job_text", "missing")]),
        ("interview_prep", {"job_text": "y"}, [("resume_text", "missing")]),
        ("resume_summary", {"resume_text": "x" * 30_001}, [("resume_text", "too_long")]),
        ("resume_summary", {"resume_text": 5}, [("resume_text", "invalid_type")]),
    ],
)
def test_missing_variables_are_named(
    template: str, given: dict[str, object], fields: list[tuple[str, str]]
) -> None:
    """Missing, blank, unknown, mistyped or too long variables raise MissingVariables
    listing each field with its code."""
    with pytest.raises(MissingVariables) as info:
        validate_variables(template, given)
    assert [(f["field"], f["code"]) for f in info.value.params["fields"]] == fields
    assert info.value.status == 422


def test_field_errors_carry_their_limits() -> None:
    """A too-long text says its maximum; a blank one its minimum; one-of names both."""
    too_long = {"resume_text": "x" * 30_001, "job_text": " "}
    with pytest.raises(MissingVariables) as info:
        validate_variables("job_match", too_long)
    assert info.value.params["fields"] == [
        {"field": "resume_text", "code": "too_long", "max": 30_000},
        {"field": "job_text", "code": "too_short", "min": 1},
    ]
    with pytest.raises(MissingVariables) as info:
        validate_variables("job_summary", {})
    assert info.value.params["fields"] == [
        {"field": "job_text", "code": "missing_one_of", "one_of": ["job_text", "job_image"]}
    ]


def test_non_object_variables_are_one_type_error() -> None:
    """Variables that are not an object: one field error on `variables` itself."""
    with pytest.raises(MissingVariables) as info:
        validate_variables("job_match", ["resume"])
    assert info.value.params["fields"] == [
        {"field": "variables", "code": "invalid_type", "expected": "object"}
    ]


def test_unknown_template() -> None:
    """An unknown template raises UnknownTemplate carrying its name."""
    with pytest.raises(UnknownTemplate) as info:
        validate_variables("cover_letter", {})
    assert info.value.params == {"template": "cover_letter"}


def test_summaries_accept_objects() -> None:
    """An earlier task's JSON result is accepted as a summary and carried as JSON text."""
    given = {**variables("job_match"), "job_summary": {"jobTitle": "Dev", "mustHaves": ["Go"]}}
    validated = validate_variables("job_match", given)
    assert validated.job_summary == '{"jobTitle": "Dev", "mustHaves": ["Go"]}'  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "mime"),
    [(PNG, "image/png"), (GIF, "image/gif"), (JPEG, "image/jpeg"), (WEBP, "image/webp")],
)
def test_images_accepted(raw: bytes, mime: str) -> None:
    """PNG, GIF, JPEG and WebP data URLs pass and mark the task as carrying an image."""
    validated = validate_variables("job_summary", {"job_image": data_url(raw, mime)})
    assert has_image(validated)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/job.png",
        data_url(PNG, "image/svg+xml"),
        data_url(b"%PDF-1.4", "application/pdf"),
        "data:image/png;base64,not*base64!",
        data_url(GIF, "image/png"),
        data_url(b"hello", "image/webp"),
    ],
)
def test_bad_images_rejected(url: str) -> None:
    """Non-data URLs, other types, undecodable base64 and mislabelled content raise BadImage."""
    with pytest.raises(BadImage) as info:
        validate_variables("job_summary", {"job_text": "Dev", "job_image": url})
    assert info.value.status == 415
    assert info.value.params["fields"] == [{"field": "job_image", "code": "bad_image"}]


def test_oversized_image_rejected() -> None:
    """A decoded image over the limit raises ImageTooLarge with the limit."""
    url = data_url(PNG + b"\x00" * MAX_IMAGE_BYTES)
    with pytest.raises(ImageTooLarge) as info:
        validate_variables("job_summary", {"job_image": url})
    assert info.value.params == {
        "max_bytes": MAX_IMAGE_BYTES,
        "fields": [{"field": "job_image", "code": "image_too_large", "max_bytes": MAX_IMAGE_BYTES}],
    }
    assert info.value.status == 413
