"""The layout's rules (issue #9), read off the source: imports point down, cold imports stay light.

Units are the top-level folders (`api`, `producer`, `worker`) and the parts of `lib/`
(`lib.tasks`, `lib.redis`, …; a flat module such as `lib.keys` is a unit of its own).
Every import counts, those inside functions too: a lazy import is still an arrow.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PRODUCTION = ("api", "lib", "producer", "worker")
OURS = ("api", "lib", "producer", "worker", "tests", "bench")
# The composition root: the only unit that may import the producer and the worker.
COMPOSITION = "lib.app"
# The local stack (embedded servers, offline model, local QStash): production never needs it.
LOCAL = "lib.local"
# Pydantic contracts the producer validates with: no LLM layer, no I/O libraries.
CONTRACTS = ("lib.templates",)
IO_LIBRARIES = ("langchain", "langchain_core", "langchain_openai", "openai", "psycopg", "httpx")
# What `import producer.app` must not load: the LLM layer, the worker, the local stack,
# the database driver, the file parsers and OCR (uploads load them on first use).
PRODUCER_HEAVY = (
    "langchain",
    "langchain_core",
    "langchain_openai",
    "openai",
    "qstash",
    "psycopg",
    "pypdf",
    "docx",
    "rapidocr_onnxruntime",
    "numpy",
    "jinja2",
    "worker",
    "lib.llm",
    "lib.local",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported(path: Path) -> Iterator[str]:
    """Every module name the file imports, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)


def unit(module: str) -> str:
    """`lib.tasks.store` → `lib.tasks`; `producer.web.ops` → `producer`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "lib" and len(parts) > 1 else parts[0]


@cache
def arrows() -> dict[str, dict[str, set[str]]]:
    """unit → imported unit → the files that import it (production code only)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for top in PRODUCTION:
        for path in sorted((ROOT / top).rglob("*.py")):
            source = unit(module_name(path))
            for target in imported(path):
                if target.split(".")[0] not in OURS:
                    continue
                dest = unit(target)
                if dest not in (source, "lib"):
                    graph[source][dest].add(str(path.relative_to(ROOT)))
    return graph


@cache
def third_party(top: str) -> dict[str, set[str]]:
    """Under folder `top`: imported top-level package → the files that import it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted((ROOT / top).rglob("*.py")):
        for target in imported(path):
            found[target.split(".")[0]].add(str(path.relative_to(ROOT)))
    return found


def test_the_scanner_sees_the_arrows_it_should() -> None:
    """The checks below are only as good as the graph: known arrows are in it."""
    graph = arrows()
    assert "producer" in graph[COMPOSITION] and "worker" in graph[COMPOSITION]
    assert "lib.redis" in graph["lib.tasks"]
    assert "lib.llm" in graph["worker"]  # imported inside a function: still an arrow
    assert graph["api"].keys() == {COMPOSITION}


def test_only_the_composition_root_imports_producer_and_worker() -> None:
    offenders = {
        (source, dest): files
        for source, targets in arrows().items()
        for dest, files in targets.items()
        if dest in ("producer", "worker", "api") and source != COMPOSITION
    }
    assert not offenders, offenders


def test_production_code_does_not_import_the_local_stack() -> None:
    offenders = {
        source: targets[LOCAL]
        for source, targets in arrows().items()
        if LOCAL in targets and source != COMPOSITION
    }
    assert not offenders, offenders


def test_contracts_import_no_llm_layer_and_no_io() -> None:
    for contract in CONTRACTS:
        graph = arrows()[contract]
        assert "lib.llm" not in graph and "lib.db" not in graph, dict(graph)
        used = third_party(contract.replace(".", "/"))
        assert used.keys().isdisjoint(IO_LIBRARIES), {k: used[k] for k in IO_LIBRARIES}


def test_units_form_no_cycle() -> None:
    """The unit graph is a DAG: every arrow points down to a lower layer."""
    graph = arrows()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dest in sorted(graph.get(node, {})):
            if state.get(dest) == "open":
                cycle = [*path[path.index(dest) :], dest] if dest in path else [node, dest]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if dest not in state:
                visit(dest, [*path, dest])
        state[node] = "closed"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def loaded_by(statement: str) -> set[str]:
    """Module names (full and top-level) a fresh interpreter has after `statement`."""
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    names = set(json.loads(out.stdout))
    return names | {n.split(".")[0] for n in names}


def test_the_producers_cold_import_stays_light() -> None:
    """`import producer.app` loads no LLM stack, worker, local stack, driver, parser or OCR."""
    loaded = loaded_by("import producer.app")
    assert "producer.app" in loaded and "lib.tasks.submit" in loaded  # it did import
    assert loaded.isdisjoint(PRODUCER_HEAVY), sorted(loaded & set(PRODUCER_HEAVY))


def test_the_workers_cold_import_leaves_the_llm_layer_for_the_first_delivery() -> None:
    """`import worker.app` builds routes only: LangChain, openai, psycopg come later."""
    loaded = loaded_by("import worker.app")
    assert "worker.app" in loaded
    heavy = {"langchain_core", "langchain_openai", "openai", "psycopg", "lib.local", "producer"}
    assert loaded.isdisjoint(heavy), sorted(loaded & heavy)
