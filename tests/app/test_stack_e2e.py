"""The whole local stack over real HTTP on loopback: job_match end to end, `slotline dev`, demo."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lib.app.demo import sse_events
from lib.app.stack import STACK_FILE, LocalStack, StackInfo, check_health
from lib.local.embedded import free_port
from lib.settings import Settings
from lib.templates.schemas import OUTPUT_MODELS
from tests.support.paths import ROOT

EXAMPLES = ROOT / "examples"
READY = re.compile(r"^ready app=(http://127\.0\.0\.1:\d+) qstash=(http://127\.0\.0\.1:\d+)$")


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus every slotline setting (a subprocess must not pick any up)."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(extra)
    return env


def local_settings() -> Settings:
    """Settings with nothing configured: every part comes from the local stack."""
    unset = (
        "redis_url",
        "upstash_redis_rest_url",
        "upstash_redis_rest_token",
        "database_url",
        "app_secret",
        "deepseek_api_key",
        "zhipuai_api_key",
        "openai_compat_base_url",
        "offline_model_url",
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return settings.model_copy(update=dict.fromkeys(unset))


@pytest.fixture(scope="module", params=["tcp", "rest"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackInfo]:
    """One local stack per Redis adapter (fast QStash clock, unpaced offline model)."""
    local = LocalStack(
        local_settings(),
        redis_mode=request.param,
        state_dir=tmp_path_factory.mktemp(f"stack-{request.param}"),
        time_scale=0.01,
        persist=False,
    )
    info = local.start()
    try:
        check_health(info)
        yield info
    finally:
        local.stop()


async def _follow(client: httpx.AsyncClient, events_url: str) -> list[tuple[str, Any]]:
    """Every event of a task until the terminal one, reconnecting with Last-Event-ID."""
    seen: list[tuple[str, Any]] = []
    last_id: str | None = None
    for _ in range(20):
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        async with client.stream("GET", events_url, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event in sse_events(response):
                last_id = event.id or last_id
                seen.append((event.type, event.data))
                if event.type in ("done", "error", "cancelled"):
                    return seen
    raise AssertionError(f"no terminal event; saw {[t for t, _ in seen]}")


async def test_job_match_end_to_end(stack: StackInfo) -> None:
    """A trial job_match is delivered, streamed over SSE and ends done with all counters at zero."""
    body = {
        "template": "job_match",
        "variables": {
            "resume_text": (EXAMPLES / "resume.en.txt").read_text(encoding="utf-8"),
            "job_text": (EXAMPLES / "job.en.txt").read_text(encoding="utf-8"),
        },
    }
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=20.0) as client:
        reply = await client.post("/api/tasks", json=body)
        assert reply.status_code == 202, reply.text
        task = reply.json()
        assert (task["tier"], task["queue_id"], task["mode"]) == ("free", "q_glm_flash", "stream")

        seen = await _follow(client, task["events_url"])
        kinds = [kind for kind, _ in seen]
        assert kinds[-1] == "done", seen[-1]
        assert "started" in kinds
        assert "token" in kinds
        result = next(data for kind, data in seen if kind == "result")
        OUTPUT_MODELS["job_match"].model_validate(result)
        streamed = "".join(data["text"] for kind, data in seen if kind == "token")
        assert json.loads(streamed) == result
        done = seen[-1][1]
        assert done["usage"]["output_tokens"] > 0
        assert "offline" in done["model"]

        status = (await client.get(task["status_url"])).json()
        assert status["status"] == "done"
        assert status["result"] == result
        assert status["wait_ms"] is not None

        snapshot = (await client.get("/api/queues")).json()
    for row in snapshot["queues"]:
        assert (row["waiting"], row["in_flight"], row["pending"]) == (0, 0, 0), row
    for pool in snapshot["pools"]:
        assert pool["active"] == 0, pool


async def test_other_users_cannot_read_the_task(stack: StackInfo) -> None:
    """Through the combined app a second visitor gets 404 for the first one's task events."""
    body = {
        "template": "resume_summary",
        "variables": {"resume_text": (EXAMPLES / "resume.en.txt").read_text(encoding="utf-8")},
    }
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=20.0) as owner:
        reply = await owner.post("/api/tasks", json=body)
        assert reply.status_code == 202, reply.text
        task = reply.json()
        async with httpx.AsyncClient(base_url=stack.app_url, timeout=20.0) as stranger:
            other = await stranger.get(task["events_url"], params={"after": "0-0"})
        assert other.status_code == 404
        assert other.json()["error"] == "not_found"
        seen = await _follow(owner, task["events_url"])
        assert seen[-1][0] == "done"


def test_stack_writes_state_and_cleans_up(tmp_path: Path) -> None:
    """The stack keeps a 600 app secret and a secret-free stack.json; stop removes the file."""
    local = LocalStack(local_settings(), state_dir=tmp_path, time_scale=0.01, persist=False)
    info = local.start()
    try:
        data = json.loads((tmp_path / STACK_FILE).read_text())
        assert data["app_url"] == info.app_url
        assert data["qstash_url"] == info.qstash_url
        assert data["redis_url"] == info.redis_url
        text = (tmp_path / STACK_FILE).read_text()
        app_secret = (tmp_path / "app_secret").read_text().strip()
        assert app_secret not in text
        assert (tmp_path / "app_secret").stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{info.app_url}/api/worker/healthz").json() == {"ok": True}
    finally:
        local.stop()
    assert not (tmp_path / STACK_FILE).exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{info.app_url}/healthz", timeout=1.0)


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def test_slotline_dev_prints_ready_and_exits_on_sigterm(pg_tmp: Path) -> None:
    """`slotline dev` prints exactly one ready line once all answer and exits 0 on SIGTERM."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lib.app.cli",
            "--state-dir",
            str(pg_tmp),
            "dev",
            "--port",
            str(port),
        ],
        cwd=pg_tmp,
        env=_clean_env(PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=40)
        match = READY.match(first.rstrip("\n"))
        assert match, first
        assert match[1] == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{match[1]}/healthz").status_code == 200
        assert json.loads((pg_tmp / STACK_FILE).read_text())["app_url"] == match[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)  # it ends at the pipe's end: every line printed is in `lines`
    assert lines.empty(), "slotline dev printed more than the ready line"
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()
    assert "Traceback" not in stderr
    assert not (pg_tmp / STACK_FILE).exists()


STEPS = (
    "resume_summary",
    "detailed_resume_summary",
    "job_summary",
    "job_match",
    "resume_customize",
    "interview_prep",
)


def run_demo(folder: Path, *args: str, timeout_s: float) -> str:
    """`python -m lib.app.demo ARGS` in `folder` with nothing configured; its stdout.

    Exit 0, and nothing alarming on stderr: the stack shut down cleanly.
    """
    done = subprocess.run(
        [sys.executable, "-m", "lib.app.demo", *args],
        cwd=folder,
        env=_clean_env(PYTHONPATH=str(ROOT), STATE_DIR=str(folder / "state")),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr)
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    return done.stdout


def step_rows(out: str) -> dict[str, list[str]]:
    """The report's table: each step's cells (task, status, queue, model, …)."""
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] in STEPS and len(cells) >= 5 and not cells[1].startswith("+"):
            rows[cells[0]] = cells[1:]
    return rows


def check_demo_output(out: str) -> dict[str, list[str]]:
    """A depth-c service that ended done: three summaries, three steps, all done."""
    assert re.search(r"^status\s+done$", out, re.MULTILINE), out[-3000:]
    assert re.search(r"^depth\s+c$", out, re.MULTILINE)
    assert re.search(r"^tier\s+free$", out, re.MULTILINE)
    assert "uploaded résumé" in out and "read as pdf" in out
    assert "--- job match, streaming" in out and '{"match_score": ' in out
    assert "--- customized résumé" in out and "--- interview preparation" in out
    # The summaries' timeline, each with its time since the create.
    for step in STEPS[:3]:
        for what in ("queued", "started", "done"):
            assert re.search(rf"^\s+\+\d+\.\d\ds\s+{step}\s+{what}\b", out, re.MULTILINE), (
                step,
                what,
            )
    rows = step_rows(out)
    assert list(rows) == list(STEPS), out[-3000:]
    for step, cells in rows.items():
        assert cells[1] == "done", (step, cells)
        assert cells[3].endswith("*") or cells[4] == "*", (step, cells)  # the offline model
    assert re.search(r"^total\s+\d+\s+\d+\s+0$", out, re.MULTILINE)
    return rows


@pytest.mark.timeout(300)
def test_demo_runs_and_exits_zero(pg_tmp: Path) -> None:
    """`python -m lib.app.demo`: a PDF résumé, a depth-c service, every step done, exit 0."""
    out = run_demo(pg_tmp, timeout_s=240)
    rows = check_demo_output(out)
    assert rows["job_summary"][2:4] == ["q_glm_flash", "glm-4.5-flash"], rows
    assert re.search(r"^uploaded job description\s+text of examples/job\.en\.txt$", out, re.M)


@pytest.mark.timeout(420)
def test_demo_in_chinese_reads_a_job_screenshot(pg_tmp: Path) -> None:
    """`--lang zh`: the job description is a screenshot; its summary took the vision route."""
    out = run_demo(pg_tmp, "--lang", "zh", timeout_s=360)
    rows = check_demo_output(out)
    assert rows["job_summary"][2:4] == ["q_glm_vision_free", "glm-4.1v-thinking-flash"], rows
    assert rows["resume_summary"][2:4] == ["q_glm_flash", "glm-4.5-flash"], rows
    assert "job.zh.png (screenshot of examples/job.zh.txt" in out
    assert "kept as an image (the vision route reads it), lang zh" in out
    assert "王磊" in out  # the Chinese résumé, read from its PDF
