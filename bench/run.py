"""`make bench`: the pipeline, contention, services, fault and LLM-layer benchmarks.

Each runs in its own interpreter (the fault bench once per fault: cold imports stay cold,
servers stay apart) with a time limit. Figures are printed; a missed target (or, for the
fault bench, a task that went wrong) does not fail the run unless `--strict`.

    .venv/bin/python bench/run.py [--quick] [--strict]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LIMIT_S = 300
# A fault run waits out the production lease (30 s) at least twice: after the fault, and
# after the end before it reads what is left.
FAULT_LIMIT_S = 600
FAULTS = ("app-kill", "redis-outage", "dev-kill")


def run(script: Path, args: list[str], limit_s: float = LIMIT_S) -> int:
    """Run one bench script; its output goes straight to ours."""
    print(f"\n$ python {script.relative_to(ROOT)} {' '.join(args)}".rstrip(), flush=True)
    started = time.monotonic()
    try:
        code = subprocess.call([sys.executable, str(script), *args], cwd=ROOT, timeout=limit_s)
    except subprocess.TimeoutExpired:
        print(f"{script.name} exceeded {limit_s:g} s and was stopped", flush=True)
        return 124
    print(f"({script.name}: exit {code}, {time.monotonic() - started:.0f} s)", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    started = time.monotonic()
    pipeline_args = [*(["--quick"] if args.quick else []), *(["--strict"] if args.strict else [])]
    codes = [run(HERE / "pipeline.py", pipeline_args)]
    codes.append(run(HERE / "contention.py", ["--quick"] if args.quick else []))
    codes.append(run(HERE / "services.py", pipeline_args))
    for fault in FAULTS:
        codes.append(run(HERE / "faults.py", ["--only", fault, *pipeline_args], FAULT_LIMIT_S))
    llm_layer = HERE / "llm_layer.py"
    if llm_layer.exists():
        codes.append(run(llm_layer, ["--quick"] if args.quick else []))
    else:
        print("\nbench/llm_layer.py is not there: LLM-layer figures skipped", flush=True)
    print(f"\nmake bench: {time.monotonic() - started:.0f} s in all", flush=True)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main())
