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

from lib.app.demo import DemoError, answer, api_headers, sse_events
from lib.app.demo_view import Texts
from lib.app.stack import STACK_FILE, LocalStack, StackInfo, check_health
from lib.i18n import Lang
from lib.local.embedded import free_port
from lib.routing import TEMPLATES
from lib.settings import Settings
from lib.templates.schemas import OUTPUT_MODELS
from tests.support.paths import ROOT
from tests.support.stack import local_settings

EXAMPLES = ROOT / "examples"
READY = re.compile(r"^ready app=(http://127\.0\.0\.1:\d+) qstash=(http://127\.0\.0\.1:\d+)$")


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus every slotline setting (a subprocess must not pick any up)."""
    names = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in names}
    env.update(extra)
    return env


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


STEPS = TEMPLATES  # a depth-c service with a detailed résumé runs every template, in order


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
    rows: dict[str, list[str]] = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] in STEPS and len(cells) >= 5 and not cells[1].startswith("+"):
            rows[cells[0]] = cells[1:]
    return rows


def shape(t: Texts, key: str, **patterns: str) -> str:
    """A regex of the dictionary text `key`: its placeholders become `patterns` (else `.*?`)."""
    template = re.escape(t(key))  # no params: the template as written
    return re.sub(r"\\\{(\w+)\\\}", lambda m: patterns.get(m[1], ".*?"), template)


def check_demo_output(out: str, lang: Lang = "en") -> dict[str, list[str]]:
    """A depth-c service that ended done: three summaries, three steps, all done.

    Every label as the `demo` dictionary of `lang` has it.
    """
    t = Texts(lang)
    app = r"http://127\.0\.0\.1:\d+"
    workbench = t("url.label", label=t("url.workbench"))
    assert re.search(rf"^  {re.escape(workbench)}\s+{app}/{lang}/workbench$", out, re.M), out[:600]
    queues = t("url.label", label=t("url.queues"))
    assert re.search(rf"^  {re.escape(queues)}\s+{app}/{lang}/queues\b", out, re.M), out[:600]
    row = {k: re.escape(t(f"report.{k}")) for k in ("status", "tier", "depth")}
    assert re.search(rf"^{row['status']}\s+{t('status.done')}$", out, re.M), out[-3000:]
    assert re.search(rf"^{row['depth']}\s+c$", out, re.M)
    assert re.search(rf"^{row['tier']}\s+{t('tier.free')}$", out, re.M)
    uploaded = shape(t, "upload.line", label=re.escape(t("input.resume")) + r"\s+")
    assert re.search(rf"^{uploaded}", out, re.M), out[:1500]
    assert re.search(shape(t, "upload.read_text", source=t("source.pdf"), chars=r"\d+"), out)
    for step in ("job_match", "resume_customize", "interview_prep"):
        assert f"--- {t(f'block.{step}')}" in out, step
    assert '{"match_score": ' in out
    # The summaries' timeline, each with its time since the create.
    for step in STEPS[:3]:
        for what in ("queued", "started", "done"):
            name, word = re.escape(t.step(step)), re.escape(t.status(what))
            assert re.search(rf"^\s+\+\d+\.\d\ds\s+{name}\s+{word}(\s|$)", out, re.M), (step, what)
    rows = step_rows(out)
    assert list(rows) == list(STEPS), out[-3000:]
    for step, cells in rows.items():
        assert cells[1] == t.status("done"), (step, cells)
        assert cells[3].endswith("*") or cells[4] == "*", (step, cells)  # the offline model
    assert re.search(rf"^{t('report.total')}\s+\d+\s+\d+\s+0$", out, re.M)
    return rows


@pytest.mark.timeout(300)
def test_demo_runs_and_exits_zero(pg_tmp: Path) -> None:
    """`python -m lib.app.demo`: a PDF résumé, a depth-c service, every step done, exit 0."""
    out = run_demo(pg_tmp, timeout_s=240)
    rows = check_demo_output(out)
    assert rows["job_summary"][2:4] == ["q_glm_flash", "glm-4.5-flash"], rows
    assert re.search(r"^uploaded job description\s+text of examples/job\.en\.txt$", out, re.M)
    assert "as a trial visitor (free tier; --user NAME to sign in)" in out


@pytest.mark.timeout(420)
def test_demo_in_chinese_reads_a_job_screenshot(pg_tmp: Path) -> None:
    """`--lang zh`: the job description is a screenshot; its summary took the vision route."""
    out = run_demo(pg_tmp, "--lang", "zh", timeout_s=360)
    rows = check_demo_output(out, "zh")
    assert rows["job_summary"][2:4] == ["q_glm_vision_free", "glm-4.1v-thinking-flash"], rows
    assert rows["resume_summary"][2:4] == ["q_glm_flash", "glm-4.5-flash"], rows
    assert "job.zh.png（examples/job.zh.txt 的截图，" in out
    assert "按图片保存（由视觉路线读取），语言 zh" in out
    assert "王磊" in out  # the Chinese résumé, read from its PDF
    # The report's labels are the Chinese ones of the dictionary, and no English one is left.
    t = Texts("zh")
    for key in ("status", "tier", "depth", "charged", "wall_time"):
        assert re.search(rf"^{t(f'report.{key}')}\s+\S", out, re.M), key
    columns = ("step", "task", "status", "queue", "model", "start", "end", "in", "out", "cost")
    head = [t(f"report.col_{c}") for c in columns]
    assert head == ["步骤", "任务", "状态", "队列", "模型", "开始", "结束", "输入", "输出", "费用"]
    assert any(line.split() == head for line in out.splitlines()), out[-3000:]
    english = Texts("en")
    for key in ("report.status", "report.wall_time", "report.total", "timeline.title"):
        assert english(key) not in out, key


async def test_the_demos_errors_come_back_in_its_language(stack: StackInfo) -> None:
    """The demo's requests carry `--lang`: the API's error message comes back in Chinese."""
    body = {"resume_id": "0" * 32, "job_id": "0" * 32, "depth": "c"}
    said: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=stack.app_url, timeout=20.0) as client:
        for lang in ("en", "zh"):
            reply = await client.post("/api/service/create", json=body, headers=api_headers(lang))
            t = Texts(lang)
            with pytest.raises(DemoError) as caught:
                answer(t, reply, t("error.create"), 202)
            said[lang] = str(caught.value)
            assert reply.json()["message"] in said[lang]
    assert said["zh"].startswith("创建服务失败，状态码 4"), said
    assert re.search(r"[\u4e00-\u9fff]", said["zh"].split("：", 1)[1]), said
    assert said["en"].startswith("create the service: HTTP 4"), said


@pytest.mark.timeout(300)
def test_demo_keep_leaves_the_service_to_open_in_a_browser(pg_tmp: Path) -> None:
    """`--keep --user alice`: the stack stays up; signed in with the printed command's token,
    the workbench lists the service; Ctrl-C (SIGINT) stops it, exit 0."""
    t = Texts("en")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib.app.demo", "--depth", "a", "--user", "alice", "--keep"],
        cwd=pg_tmp,
        env=_clean_env(PYTHONPATH=str(ROOT), STATE_DIR=str(pg_tmp / "state")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    signin_prefix = t("keep.signin", user="alice", command="")
    out: list[str] = []
    try:
        while not out or not out[-1].startswith(signin_prefix):
            out.append(lines.get(timeout=200).rstrip("\n"))
        printed = "\n".join(out)
        service = re.search(
            r"^  this service:\s+(http://\S+)/en/workbench\?service=(\w+)$", printed, re.M
        )
        assert service, printed[-2000:]
        app, service_id = service[1], service[2]
        assert re.search(rf"^  workbench:\s+{app}/en/workbench$", printed, re.M)
        assert f"{app}/en/queues  (operators only: alice is not listed in OPERATORS" in printed
        signin = re.search(r"^  sign in:\s+(\S+)$", printed, re.M)
        assert signin and signin[1].startswith(f"{app}/en/signin?next=")
        command = out[-1].removeprefix(signin_prefix)
        assert (
            command.endswith(" token alice") and f"STATE_DIR={pg_tmp / 'state' / 'demo'}" in command
        )
        env = _clean_env(PYTHONPATH=str(ROOT))
        token = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()
        with httpx.Client(base_url=app, timeout=20.0) as browser:
            reply = browser.post(
                "/en/signin",
                data={"token": token, "next": f"/en/workbench?service={service_id}"},
                headers={"Origin": app},
            )
            assert reply.status_code == 303, reply.text
            assert reply.headers["location"] == f"/en/workbench?service={service_id}"
            listed = browser.get("/api/services").json()["services"]
            assert [s["service_id"] for s in listed] == [service_id]
            assert browser.get(f"/en/workbench?service={service_id}").status_code == 200
            assert browser.get("/en/queues").status_code == 404  # alice is no operator
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert rest and rest[-1].rstrip("\n") == t("keep.stopping"), rest
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
