"""The demo's printing (lib/app/demo_view.py, demo_report.py): the stream's timeline, blocks
in the depth's order, the report and the pages' URLs, in English and in Chinese."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from lib.app.demo import token_command
from lib.app.demo_report import page_urls, report
from lib.app.demo_view import STEPS, Follower, SseEvent, Texts, cells
from lib.i18n import Lang, message, text
from lib.settings import Settings
from producer.web.locale import safe_next


class Stream:
    """Service events with cursors as the service stream's reader makes them."""

    def __init__(self) -> None:
        self.positions = ["1000-0"]
        self.tasks: list[str] = []

    def service(self, ms: int, kind: str, data: dict[str, Any]) -> SseEvent:
        self.positions[0] = f"{ms}-0"
        if kind == "step" and data.get("task_id"):
            self.tasks.append(data["step"])
            self.positions.append("0-0")
        return SseEvent(kind, ".".join(self.positions), data)

    def task(self, ms: int, step: str, kind: str, data: Any) -> SseEvent:
        self.positions[self.tasks.index(step) + 1] = f"{ms}-0"
        wrapped = {"step": step, "task_id": f"t-{step}", "data": data}
        return SseEvent(kind, ".".join(self.positions), wrapped)


def done(n_in: int, n_out: int) -> dict[str, Any]:
    return {"usage": {"input_tokens": n_in, "output_tokens": n_out}, "cost": 0.0}


def story() -> list[SseEvent]:
    s = Stream()
    out = [s.service(1000, "service", {"status": "running", "tier": "free", "depth": "c"})]
    for i, step in enumerate(("resume_summary", "detailed_resume_summary", "job_summary")):
        out.append(s.service(1001 + i, "step", {"step": step, "task_id": f"t-{step}"}))
        out.append(s.task(1001 + i, step, "queued", {"position": 1}))
    for i, step in enumerate(("resume_summary", "detailed_resume_summary", "job_summary")):
        out.append(s.task(1100 + i, step, "started", {"model": "glm-4.5-flash", "attempt": 1}))
    out.append(s.task(1500, "job_summary", "result", {"jobTitle": "Engineer", "mustHaves": ["Go"]}))
    out.append(s.task(1500, "job_summary", "done", done(10, 5)))
    out.append(s.task(1600, "resume_summary", "done", done(1, 1)))
    out.append(s.task(1700, "detailed_resume_summary", "done", done(2, 2)))
    for i, step in enumerate(("job_match", "resume_customize", "interview_prep")):
        out.append(s.service(1800 + i, "step", {"step": step, "task_id": f"t-{step}"}))
        out.append(s.task(1810 + i, step, "started", {"model": "glm-4.5-flash", "attempt": 1}))
    # Interleaved: the interview's tokens come first, the customized résumé ends first.
    out.append(s.task(1900, "interview_prep", "token", {"text": '{"self_intro'}))
    out.append(s.task(1901, "job_match", "token", {"text": '{"match_score": 70'}))
    out.append(s.task(1902, "resume_customize", "result", {"customized_resume_markdown": "# CV"}))
    out.append(s.task(1902, "resume_customize", "done", done(3, 3)))
    out.append(s.task(1903, "interview_prep", "token", {"text": 'duction_script": "Hi"}'}))
    out.append(s.task(1904, "job_match", "token", {"text": "}"}))
    out.append(s.task(1950, "job_match", "result", {"match_score": 70}))
    out.append(s.task(1950, "job_match", "done", done(4, 4)))
    out.append(s.task(1960, "interview_prep", "result", {"potential_questions": []}))
    out.append(s.task(1960, "interview_prep", "done", done(5, 5)))
    out.append(s.service(1910, "service", {"status": "done", "tier": "free", "depth": "c"}))
    return out


def test_blocks_come_in_the_depths_order_whatever_the_arrival(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The match streams whole, then the customized résumé, then the interview; times from 0."""
    follower = Follower(later=("job_match", "resume_customize", "interview_prep"))
    ended = [follower.handle(event) for event in story()]
    assert ended[-1] and not any(ended[:-1])
    out = capsys.readouterr().out
    assert "   +0.00s  service" in out
    assert "   +0.50s  job description summary  done      10+5 tokens: Engineer" in out
    match = out.index('{"match_score": 70}\n')
    resume = out.index("# CV")
    interview = out.index('{"self_introduction_script": "Hi"}\n')
    assert match < resume < interview
    assert "[job match done +0.95s: 4+4 tokens, match score 70/100]" in out
    assert follower.final["status"] == "done" and follower.final["ms"] == 1910


def test_a_cached_summary_is_shown_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    """A summary from the cache: a `step` without a task and its `result` on the service."""
    follower = Follower(later=("job_match",))
    follower.handle(SseEvent("service", "5000-0", {"status": "running", "tier": "paid"}))
    follower.handle(SseEvent("step", "5001-0", {"step": "job_summary", "task_id": None}))
    result = {"step": "job_summary", "task_id": None, "data": {"jobTitle": "Dev"}}
    follower.handle(SseEvent("result", "5002-0", json.loads(json.dumps(result))))
    out = capsys.readouterr().out
    assert "+0.00s  job description summary  cached    Dev · 0 must-haves" in out
    assert follower.steps["job_summary"].status == "cached"


# What the printer shows of the run, not its labels: every value the events and the
# report's input below carry, and the identifiers the demo passes to its labels (a
# setting's name, the options, a key). Removed from the output before the check.
APP = "http://127.0.0.1:8000"
STORY_DATA = (
    *STEPS,
    *(f"t-{step}"[:8] for step in STEPS),
    "glm-4.5-flash",
    "glm-4.1v-thinking-flash",
    "q_glm_flash",
    "q_glm_vision_free",
    '{"self_intro',
    'duction_script": "Hi"}',
    '{"match_score": 70',
    "Engineer",
    "# CV",
    "CNY",
)
SERVICE = "0828b73e21d5"


def urls(lang: Lang) -> tuple[str, ...]:
    """The pages' URLs the printer shows (data: taken out before the check)."""
    home = f"{APP}/{lang}"
    return (
        f"{home}/workbench?service={SERVICE}",
        f"{home}/workbench",
        f"{home}/queues",
        f"{home}/signin?next=/{lang}/workbench%3Fservice%3D{SERVICE}",
        f"{home}/signin?next=/{lang}/workbench",
    )


IDENTIFIERS = ("OPERATORS=alice", "OPERATORS", "alice", "--user NAME", "--keep", "Ctrl-C")
WORD = re.compile(r"[A-Za-z]{2,}")


def latin_words(out: str, data: Iterable[str]) -> set[str]:
    """The words of two or more ASCII letters left in `out` once the data is taken out.

    Longest values first, each replaced by a space: a shorter one inside a longer one
    (`glm-4.5-flash` in a URL) must not cut the longer one apart.
    """
    for value in sorted(set(data), key=len, reverse=True):
        out = out.replace(value, " ")
    return set(WORD.findall(out))


def report_input() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`GET /api/service/{id}` and the tasks' `GET /api/tasks/{id}` of the story's service."""
    steps = []
    tasks = {}
    for i, step in enumerate(STEPS):
        model = "glm-4.1v-thinking-flash" if step == "job_summary" else "glm-4.5-flash"
        steps.append({"step": step, "task_id": f"t-{step}", "status": "done", "cost": 0.0})
        tasks[step] = {
            "queue_id": "q_glm_vision_free" if step == "job_summary" else "q_glm_flash",
            "started_ms": 1100 + i,
            "finished_ms": 1500 + i,
            "usage": {
                "model": f"{model} (offline keyword baseline)",
                "usage": {"input_tokens": 100 + i, "output_tokens": 10 + i},
                "cost": 0.0,
                "currency": "CNY",
            },
        }
    status = {"status": "done", "tier": "free", "depth": "c", "cost": 0, "steps": steps}
    return status, tasks


def printed(lang: Lang, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything the printer writes for the story: URLs, timeline, blocks, report."""
    t = Texts(lang)
    follower = Follower(("job_match", "resume_customize", "interview_prep"), lang)
    for event in story():
        follower.handle(event)
    status, tasks = report_input()
    report(status, tasks, follower, 9.5)
    for user in (None, "alice"):
        print(page_urls(t, APP, user=user, operators=frozenset(), service_id=SERVICE), end="")
    print(page_urls(t, APP, user="alice", operators=frozenset({"alice"})), end="")
    for key, params in (
        ("trial", {"option": "--user NAME"}),
        ("keep.running", {"option": "--keep", "keys": "Ctrl-C"}),
        ("keep.trial", {"option": "--user NAME"}),
        ("keep.signin", {"user": "alice", "command": ""}),
        ("keep.stopping", {}),
        ("error.failed", {"reason": t("error.stream_did_not_end", n=20)}),
    ):
        print(t(key, **params))
    return capsys.readouterr().out


def test_chinese_output_has_no_english_labels(capsys: pytest.CaptureFixture[str]) -> None:
    """`--lang zh`: once the run's data is taken out, no English word is left.

    The same check on the English output finds its labels: it is not vacuous.
    """
    zh = printed("zh", capsys)
    assert all(url in zh for url in urls("zh"))
    assert latin_words(zh, (*STORY_DATA, *IDENTIFIERS, *urls("zh"))) == set(), zh
    en = printed("en", capsys)
    english = latin_words(en, (*STORY_DATA, *IDENTIFIERS, *urls("en")))
    assert {"queued", "started", "done", "tokens", "total", "workbench", "operators"} <= english
    # The Chinese labels are the dictionary's, and the data is all there.
    for key in ("report.col_queue", "report.total", "status.done", "step.job_match"):
        assert text(f"demo.{key}", "zh") in zh, key
    assert "岗位匹配 已完成 +0.95s：4+4 个词元，匹配度 70/100" in zh
    assert (
        "   +0.50s  职位描述摘要  已完成   10+5 个词元：Engineer · 1 项必备条件，0 项加分项" in zh
    )
    assert f"  工作台：   {APP}/zh/workbench\n" in zh
    assert f"{APP}/zh/queues（仅运维人员可见" in zh


def test_report_columns_align_in_display_width(capsys: pytest.CaptureFixture[str]) -> None:
    """A Chinese character takes two cells: the table's rows end in the same column."""
    follower = Follower(("job_match",), "zh")
    follower.handle(SseEvent("service", "1000-0", {"status": "running", "tier": "free"}))
    status, tasks = report_input()
    report(status, tasks, follower, 1.0)
    lines = capsys.readouterr().out.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("步骤")))
    rows = lines[head : head + len(STEPS) + 2]
    assert rows[-1].startswith("合计") and rows[1].startswith("resume_summary")
    assert len({cells(row) for row in rows}) == 1, rows
    assert "* 由离线模型作答" in lines[-1]


def test_errors_are_shown_as_the_dictionarys_messages(capsys: pytest.CaptureFixture[str]) -> None:
    """An error code of a step or of the service is printed as its message in the language."""
    follower = Follower(("job_match",), "zh")
    s = Stream()
    follower.handle(s.service(1000, "service", {"status": "running", "tier": "free"}))
    follower.handle(s.service(1001, "step", {"step": "job_summary", "task_id": "t-job_summary"}))
    follower.handle(s.task(1200, "job_summary", "error", {"code": "queue_full", "message": "x"}))
    status, tasks = report_input()
    report({**status, "status": "error", "error": "queue_full"}, tasks, follower, 1.0)
    out = capsys.readouterr().out
    assert f"职位描述摘要  失败     {message('queue_full', 'zh')}" in out
    assert f"状态  失败（{message('queue_full', 'zh')}）" in out


def test_sign_in_link_and_token_command_reach_the_demos_stack(tmp_path: Path) -> None:
    """The sign-in link goes on to the service; the token command reads the stack's secret."""
    t = Texts("en")
    urls = page_urls(t, APP, user="alice", operators=frozenset(), service_id="abc123")
    link = next(u for u in urls.split() if "/en/signin?" in u)
    target = parse_qs(urlsplit(link).query)["next"][0]
    assert safe_next(target, "/") == "/en/workbench?service=abc123"
    assert "operators only: alice is not listed in OPERATORS; OPERATORS=alice makes it one" in urls
    generated = Settings(_env_file=None)  # type: ignore[call-arg]
    command = token_command("alice", tmp_path / "demo", generated)
    assert command.startswith(f"STATE_DIR={tmp_path / 'demo'} ") and command.endswith(
        " token alice"
    )
    configured = Settings(_env_file=None, app_secret=SecretStr("s" * 32))  # type: ignore[call-arg]
    assert not token_command("alice", tmp_path, configured).startswith("STATE_DIR=")
