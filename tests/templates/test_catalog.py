"""The template catalog: six templates with modes, languages and both JSON schemas."""

from __future__ import annotations

import subprocess
import sys

from lib.routing import MODES, TEMPLATES
from lib.templates.catalog import catalog


def test_catalog_lists_six_templates() -> None:
    """Each template appears once with mode, languages, image flag and schemas."""
    entries = catalog()
    assert [e["name"] for e in entries] == list(TEMPLATES)
    for entry in entries:
        assert entry["mode"] == MODES[entry["name"]]
        assert entry["languages"] == ["en", "zh"]
        assert entry["accepts_image"] == (entry["name"] == "job_summary")
        assert entry["variables"]["type"] == "object" and entry["variables"]["properties"]
        assert entry["output"]["type"] == "object" and entry["output"]["required"]
    match = next(e for e in entries if e["name"] == "job_match")
    assert match["variables"]["required"] == ["resume_text", "job_text"]
    score = match["output"]["properties"]["match_score"]
    assert (score["type"], score["minimum"], score["maximum"]) == ("number", 0, 100)


def test_catalog_entries_are_copies() -> None:
    """Mutating a returned entry does not change the next call's answer."""
    catalog()[0]["name"] = "changed"
    assert catalog()[0]["name"] == TEMPLATES[0]


def test_producer_side_modules_stay_light() -> None:
    """Importing variables, prompts and the catalog pulls in no langchain, openai or httpx."""
    code = (
        "import sys, lib.templates.variables, lib.templates.prompts\n"
        "import lib.templates.schemas, lib.templates.catalog\n"
        "lib.templates.catalog.catalog()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langchain', 'langchain_core', 'langchain_openai', 'openai', 'httpx', 'httpx2'))\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
