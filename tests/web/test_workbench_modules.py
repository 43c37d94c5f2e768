"""The workbench's ES modules in a real browser, without a server: the partial-JSON reader,
the safe Markdown renderer, the result renderers and the service's event-stream state.

Chromium loads the modules from `producer/web/static/` through a Playwright route (an
import map as the pages have), so these run in a second and need no local stack.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route

from lib.i18n import namespace
from lib.local.offline.answers import answer
from producer.web.render import MODULES
from tests.support.paths import EXAMPLES
from tests.web.conftest import PageErrors

pytestmark = pytest.mark.timeout(60)

STATIC = Path(__file__).resolve().parents[2] / "producer" / "web" / "static"
ORIGIN = "http://modules.test"


def _index(lang: str) -> str:
    texts: dict[str, str] = {}
    for name in ("common", "workbench", "errors"):
        texts.update(namespace(lang, name))  # type: ignore[arg-type]
    imports = {name: f"/static/{file}" for name, file in MODULES.items()}
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<script type="importmap">{json.dumps({"imports": imports})}</script>'
        f'<script type="application/json" id="texts">{json.dumps(texts)}</script>'
        "</head><body><div id=out></div></body></html>"
    )


@pytest.fixture(scope="module")
def modules(browser: Browser) -> Iterator[tuple[Page, PageErrors]]:
    """A blank page (English texts) that can import every workbench module."""
    context = browser.new_context()

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        if path == "/":
            route.fulfill(body=_index("en"), content_type="text/html; charset=utf-8")
            return
        name = path.removeprefix("/static/")
        file = STATIC / name
        if not path.startswith("/static/") or not file.is_file():
            route.fulfill(status=404, body="")
            return
        kind = "text/javascript" if name.endswith(".js") else mimetypes.guess_type(name)[0]
        route.fulfill(body=file.read_bytes(), content_type=f"{kind}; charset=utf-8")

    context.route(f"{ORIGIN}/**", serve)
    page = context.new_page()
    errors = PageErrors()
    page.on("console", errors.on_console)
    page.on("pageerror", errors.on_page_error)
    page.goto(f"{ORIGIN}/")
    try:
        yield page, errors
    finally:
        context.close()
    assert not errors.unexpected(), errors.unexpected()


def run(page: Page, module: str, body: str, arg: Any = None) -> Any:
    """Evaluate `body` (a function body using `m`, the module, and `arg`) in the page."""
    script = f"async (arg) => {{ const m = await import({json.dumps(module)}); {body} }}"
    return page.evaluate(script, arg)


def _partial_of(partial: Any, full: Any) -> bool:
    """`partial` is what a prefix of `full`'s JSON may show: nothing not in `full`, strings
    as prefixes, numbers and literals whole."""
    if isinstance(full, dict):
        return isinstance(partial, dict) and all(
            k in full and _partial_of(v, full[k]) for k, v in partial.items()
        )
    if isinstance(full, list):
        return (
            isinstance(partial, list)
            and len(partial) <= len(full)
            and all(_partial_of(p, f) for p, f in zip(partial, full, strict=False))
        )
    if isinstance(full, str):
        return isinstance(partial, str) and full.startswith(partial)
    return bool(partial == full)


def _match(lang: str) -> dict[str, Any]:
    inputs = {
        "resume_text": (EXAMPLES / f"resume.{lang}.txt").read_text(encoding="utf-8"),
        "job_text": (EXAMPLES / f"job.{lang}.txt").read_text(encoding="utf-8"),
    }
    return answer("job_match", lang, inputs)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_prefix_of_a_streamed_match_reads_as_part_of_the_final_answer(
    modules: tuple[Page, PageErrors], lang: str
) -> None:
    """Each prefix of the offline model's job match parses (never broken) to a part of the
    final object; the whole text parses to it exactly."""
    page, _ = modules
    result = _match(lang)
    text = json.dumps(result, ensure_ascii=False, indent=2)  # whitespace between tokens
    values = run(
        page,
        "slotline/partial_json",
        "const out = []; for (let i = 0; i <= arg.length; i++) {"
        " const r = m.parsePartial(arg.slice(0, i)); if (r.broken) return ['broken', i];"
        " out.push(r.value ?? null); } return out;",
        text,
    )
    assert values[0] != "broken", values
    assert values[-1] == result
    for index, value in enumerate(values[:-1]):
        assert value is None or _partial_of(value, result), (index, text[:index], value)
    # The score appears only once its number is complete.
    scores = [v.get("match_score") for v in values if isinstance(v, dict)]
    assert {s for s in scores if s is not None} == {result["match_score"]}


@pytest.mark.parametrize(
    ("text", "value", "complete", "broken"),
    [
        ('```json\n{"a": "b', {"a": "b"}, False, False),
        ('{"match_score": 8', {}, False, False),
        ('{"match_score": 80.', {}, False, False),
        ('{"match_score": 80, "x"', {"match_score": 80}, False, False),
        ('{"a": tr', {}, False, False),
        ('{"a": "caf\\u00e', {"a": "caf"}, False, False),
        ('{"a": "x\\', {"a": "x"}, False, False),
        ('{"a": "\\ud83d', {"a": ""}, False, False),
        ('{"a": "\\ud83d\\ude00"}', {"a": "\U0001f600"}, True, False),
        ('{"a": [1, {"b": [true, null', {"a": [1, {"b": [True, None]}]}, False, False),
        ('{"a": 1} and then prose', {"a": 1}, True, False),
        ('{"a": 1, oops}', {"a": 1}, False, True),
        ("no json here", None, False, False),
    ],
)
def test_partial_json_cases(
    modules: tuple[Page, PageErrors], text: str, value: Any, complete: bool, broken: bool
) -> None:
    """Cut-off strings, numbers, escapes, surrogate pairs and literals; text around the
    object; a text that stops being JSON keeps what came before."""
    page, _ = modules
    got = run(page, "slotline/partial_json", "return m.parsePartial(arg);", text)
    assert got.get("value") == value
    assert (got["complete"], got["broken"]) == (complete, broken)


MARKDOWN = """# Maya **Chen**
maya@example.com | github.com/maya
<script>window.pwned = 1</script>

## Experience
- **Senior** engineer at *Acme* <img src=x onerror="window.pwned=2">
  - led the snake_case_module work
  - cut costs by 35%
- second item
  continued on the next line
1. first
2. second

---
Some _italic_, `code <b>`, [a link](javascript:alert(1)) and ***both***.
"""

MARKDOWN_HTML = (
    "<h3>Maya <strong>Chen</strong></h3>"
    "<p>maya@example.com | github.com/maya<br>&lt;script&gt;window.pwned = 1&lt;/script&gt;</p>"
    "<h4>Experience</h4>"
    "<ul><li><strong>Senior</strong> engineer at <em>Acme</em> "
    '&lt;img src=x onerror="window.pwned=2"&gt;'
    "<ul><li>led the snake_case_module work</li><li>cut costs by 35%</li></ul></li>"
    "<li>second item continued on the next line</li></ul>"
    "<ol><li>first</li><li>second</li></ol>"
    "<hr>"
    "<p>Some <em>italic</em>, <code>code &lt;b&gt;</code>, [a link](javascript:alert(1)) and "
    "<strong><em>both</em></strong>.</p>"
)


def test_markdown_renders_structure_and_escapes_everything_else(
    modules: tuple[Page, PageErrors],
) -> None:
    """Headings (moved down by the offset), nested lists, bold, italic, code, rules and
    paragraphs; HTML, scripts, images and links in the text stay text."""
    page, _ = modules
    html = run(
        page,
        "slotline/markdown",
        "const box = document.createElement('div');"
        "box.append(m.renderMarkdown(arg, { headingOffset: 2 }));"
        "const bad = box.querySelectorAll('script,img,a').length;"
        "return [box.innerHTML, bad, window.pwned ?? null];",
        MARKDOWN,
    )
    assert html == [MARKDOWN_HTML, 0, None]


def test_results_render_readable_sections_and_never_markup(
    modules: tuple[Page, PageErrors],
) -> None:
    """A summary, a job summary, a match (partial and whole), a customized résumé and an
    interview preparation render as sections of text; markup in a field stays text."""
    page, _ = modules
    evil = '<img src=x onerror="window.pwned=1">'
    results = {
        "summary": {
            "header": {"name": f"Maya {evil}", "email": "maya@example.com"},
            "summary": "Backend engineer.",
            "experience": [{"role": "Engineer", "company": "Acme", "highlights": ["Fast"]}],
            "skills": ["Python", "Redis"],
        },
        "job": {
            "jobTitle": "Backend",
            "company": "Lumen",
            "mustHaves": ["Python"],
            "niceToHaves": [],
        },
        "partial": {"match_score": 72, "overall_assessment": "Goo"},
        "match": {
            "match_score": 72.4,
            "overall_assessment": "Good fit.",
            "strengths": [{"point": "Python", "evidence": "6 years"}],
            "weaknesses": [{"point": "Kafka", "suggestion": "Mention queues"}],
            "cover_letter_script": "Dear team,\nI build services.\n\nBest",
        },
        "customize": {
            "customized_resume_markdown": f"# Maya\n- **Python** {evil}",
            "customization_summary": [{"section": "Skills", "change_reason": "Job asks"}],
        },
        "interview": {
            "self_introduction_script": "I am Maya.",
            "potential_questions": [{"question": "Why Redis?", "answer_guideline": "Latency"}],
            "reverse_questions": ["Team size?"],
        },
        "degraded": {"degraded": True, "bullets": ["Python developer"], "reason": "x"},
    }
    got = run(
        page,
        "slotline/results",
        """
        const render = (fn, value) => {
          const box = document.createElement('div'); box.append(...fn(value));
          return {text: box.innerText, html: box.innerHTML,
                  score: box.querySelector('[data-testid=match-score]')?.textContent ?? null,
                  bad: box.querySelectorAll('img,script,a').length};
        };
        document.body.append(document.createElement('div'));
        return {
          summary: render(m.assetSummary, arg.summary),
          job: render(m.jobSummary, arg.job),
          partial: render(m.jobMatch, arg.partial),
          match: render(m.jobMatch, arg.match),
          customize: render(m.customizedResume, arg.customize),
          interview: render(m.interviewPrep, arg.interview),
          degraded: render(m.assetSummary, arg.degraded),
          pwned: window.pwned ?? null,
        };
        """,
        results,
    )
    assert got.pop("pwned") is None
    assert all(part["bad"] == 0 for part in got.values()), got
    assert evil in got["summary"]["html"].replace("&lt;", "<").replace("&gt;", ">")
    assert "Experience" in got["summary"]["html"] and "Skills" in got["summary"]["html"]
    assert "{" not in got["summary"]["html"]  # sections, not JSON
    assert "Must-haves" in got["job"]["html"]
    assert got["partial"]["score"] == "72 / 100"
    assert "Goo" in got["partial"]["html"] and "Strengths" not in got["partial"]["html"]
    assert got["match"]["score"] == "72 / 100"
    for text in ("Evidence: 6 years", "Suggestion: Mention queues", "Cover-letter script", "<br>"):
        assert text in got["match"]["html"], text
    assert "<h4>Maya</h4>" in got["customize"]["html"]
    assert "<strong>Python</strong>" in got["customize"]["html"]
    assert "How to answer: Latency" in got["interview"]["html"]
    assert "Team size?" in got["interview"]["html"]
    assert "these points are taken from your text" in got["degraded"]["html"]


def _event(id_: str | None, type_: str, step: str | None = None, **inner: Any) -> dict[str, Any]:
    data: dict[str, Any] = (
        inner if step is None else {"step": step, "task_id": f"t-{step}", "data": inner}
    )
    raw = json.dumps(data)
    return {"id": id_, "type": type_, "raw": raw, "data": data}


def test_service_view_ignores_replays_resets_on_restart_and_only_moves_forward(
    modules: tuple[Page, PageErrors],
) -> None:
    """Replayed events (a reconnect that resends) change nothing; an id-less position update
    applies; `restart` empties the step's text; a late `queued` never undoes `started`;
    tokens after the result are ignored."""
    page, _ = modules
    events = [
        _event("1-0", "service", status="running", tier="free", depth="a"),
        _event("2-0", "step", "job_match"),
        _event("3-0", "queued", "job_match", position=3),
        # EventSource gives an id-less event the last id it saw: same id, other data.
        _event("3-0", "queued", "job_match", position=2),
        _event("4-0", "started", "job_match", model="glm-4.5-flash", attempt=1),
        _event("5-0", "token", "job_match", text='{"match_score": 5'),
        _event("6-0", "restart", "job_match", attempt=2),
        _event("7-0", "token", "job_match", text='{"match_score": 8'),
        _event("8-0", "token", "job_match", text='0, "overall_assessment": "Go'),
        # The connection dropped and the server resent from an older cursor.
        _event("7-0", "token", "job_match", text='{"match_score": 8'),
        _event("8-0", "token", "job_match", text='0, "overall_assessment": "Go'),
        _event("3-0", "queued", "job_match", position=3),
        _event("9-0", "token", "job_match", text='od"}'),
    ]
    final = [
        _event("10-0", "result", "job_match", match_score=80, overall_assessment="Good"),
        _event("11-0", "done", "job_match", model="glm-4.5-flash"),
        _event("12-0", "token", "job_match", text="late"),
        _event("13-0", "service", status="done", tier="free", depth="a"),
    ]
    got = page.evaluate(
        """async ([events, final]) => {
          const { ServiceView } = await import('slotline/service_view');
          const view = new ServiceView({ serviceId: 's1', depth: 'a', withDetailed: false });
          const seen = [];
          for (const e of events) {
            const changed = view.apply(e);
            const s = view.steps.get('job_match');
            seen.push([e.id, changed.size, s.status, s.position]);
          }
          const mid = { text: view.steps.get('job_match').text, shown: view.shown('job_match') };
          for (const e of final) view.apply(e);
          const s = view.steps.get('job_match');
          return { seen, mid, text: s.text, status: s.status, result: s.result,
                   service: view.status, finished: view.finished, lastId: view.lastId,
                   steps: [...view.steps.keys()], cancellable: view.cancellable };
        }""",
        [events, final],
    )
    assert got["mid"]["text"] == '{"match_score": 80, "overall_assessment": "Good"}'
    assert got["mid"]["shown"] == {"match_score": 80, "overall_assessment": "Good"}
    changed = [(s[0], s[1]) for s in got["seen"]]
    assert changed[9:12] == [("7-0", 0), ("8-0", 0), ("3-0", 0)]  # replays: nothing changed
    assert got["seen"][3][3] == 2  # the id-less position update applied
    assert got["seen"][5][2] == "running"
    assert [s[2] for s in got["seen"][4:]] == ["running"] * 9  # never back to queued
    assert got["text"] == got["mid"]["text"]  # the late token is ignored
    assert (got["status"], got["service"], got["finished"]) == ("done", "done", True)
    assert got["result"] == {"match_score": 80, "overall_assessment": "Good"}
    assert got["lastId"] == "13-0"
    assert got["steps"] == ["resume_summary", "job_summary", "job_match"]
    assert got["cancellable"] is False


def test_service_view_loads_a_reopened_service(modules: tuple[Page, PageErrors]) -> None:
    """`GET /api/service/{id}` fills the steps (failed shows as error); a replay of the
    stream from its start then adds nothing to a step that is already done."""
    page, _ = modules
    body = {
        "service_id": "s2",
        "status": "running",
        "depth": "b",
        "tier": "paid",
        "steps": [
            {"step": "resume_summary", "status": "done", "result": {"summary": "x"}},
            {"step": "job_summary", "status": "failed", "error": {"code": "llm_error"}},
            {"step": "job_match", "status": "queued", "position": 4, "task_id": "t9"},
            {"step": "resume_customize", "status": "pending"},
        ],
    }
    replay = [
        _event("1-0", "token", "resume_summary", text="{"),
        _event("2-0", "started", "job_match", model="m", attempt=1),
    ]
    got = page.evaluate(
        """async ([body, replay]) => {
          const { ServiceView } = await import('slotline/service_view');
          const view = new ServiceView({ serviceId: 's2', depth: 'b', withDetailed: false });
          view.load(body);
          const before = Object.fromEntries(
            [...view.steps].map(([k, s]) => [k, [s.status, s.position]]));
          const cancellable = view.cancellable;
          for (const e of replay) view.apply(e);
          return { before, cancellable, text: view.steps.get('resume_summary').text,
                   match: view.steps.get('job_match').status, tier: view.tier };
        }""",
        [body, replay],
    )
    assert got["before"] == {
        "resume_summary": ["done", None],
        "job_summary": ["error", None],
        "job_match": ["queued", 4],
        "resume_customize": ["pending", None],
    }
    assert got["cancellable"] is True
    assert got["text"] == ""
    assert (got["match"], got["tier"]) == ("running", "paid")


def test_a_service_ending_in_error_settles_its_unfinished_steps(
    modules: tuple[Page, PageErrors],
) -> None:
    """When the service stops (cancelled), a step that had not started shows cancelled, a
    running one stopped, a finished one stays done; a cached summary (announced without a
    task, its result in the service stream) is done."""
    page, _ = modules
    events = [
        _event("1-0", "service", status="running", tier="free", depth="a"),
        {
            "id": "2-0",
            "type": "step",
            "raw": '{"step":"resume_summary","task_id":null,"cached":true}',
            "data": {"step": "resume_summary", "task_id": None, "cached": True},
        },
        {
            "id": "3-0",
            "type": "result",
            "raw": '{"step":"resume_summary","task_id":null,"data":{"summary":"x"}}',
            "data": {"step": "resume_summary", "task_id": None, "data": {"summary": "x"}},
        },
        _event("4-0", "step", "job_summary"),
        _event("5-0", "started", "job_summary", model="m", attempt=1),
        _event("6-0", "service", status="error", error="cancelled", tier="free", depth="a"),
    ]
    got = page.evaluate(
        """async (events) => {
          const { ServiceView } = await import('slotline/service_view');
          const view = new ServiceView({ serviceId: 's3', depth: 'a', withDetailed: false });
          const cached = [];
          for (const e of events) {
            view.apply(e);
            if (e.id === '3-0') cached.push(view.steps.get('resume_summary').status);
          }
          const states = Object.fromEntries([...view.steps].map(([k, s]) => [k, s.status]));
          return { cached, states, error: view.error, finished: view.finished };
        }""",
        events,
    )
    assert got["cached"] == ["done"]
    assert got["states"] == {
        "resume_summary": "done",
        "job_summary": "stopped",
        "job_match": "cancelled",
    }
    assert (got["error"], got["finished"]) == ("cancelled", True)
