"""`make demo`: the product's main job on the local stack, from the uploads to the last step.

Uploads the example résumé as a PDF (made at run time from `examples/`), the detailed
résumé and the job description (`--lang zh`: a screenshot of it, which the vision route
reads), creates a depth-c service and follows its one event stream: the three summaries
running in parallel, the job match streamed token by token, the customized résumé and
the interview preparation; then the service's status, tier, cost and usage by step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lib.local import example_files
from lib.settings import Settings, secret

logger = logging.getLogger("slotline.demo")

# The offline model answers instantly; pace it so the stream is visible.
DEMO_TOKENS_PER_S = 250.0
DEMO_TTFT_MS = 150.0
# The free pool of glm-4.5-flash has 2 slots: with 3 the three summaries of a trial
# visitor run at once, as a paid user's do (DeepSeek's pool has 5). A configured
# GLM_FLASH_MAX_WORKERS wins.
DEMO_FLASH_SLOTS = 3
# Each run is a new trial visitor from 127.0.0.1, on the Valkey of the last run: the
# per-address window (3 services in RATE_WINDOW_S) would refuse the fourth run in a row.
# A configured RATE_TRIAL_ADDRESS_LIMIT wins.
DEMO_TRIAL_ADDRESS_LIMIT = 0
MAX_RECONNECTS = 20
SUMMARIES = ("resume_summary", "detailed_resume_summary", "job_summary")
LATER = ("job_match", "resume_customize", "interview_prep")
STREAMED = ("job_match", "interview_prep")
OFFLINE = " (offline keyword baseline)"


class DemoError(Exception):
    """The demo could not complete; the message says where it stopped."""


@dataclass
class SseEvent:
    """One parsed server-sent event."""

    type: str
    id: str | None
    data: Any


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse an SSE body incrementally: one event per blank-line-terminated block."""
    kind: str = "message"
    event_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                raw = "\n".join(data)
                try:
                    decoded: Any = json.loads(raw)
                except ValueError:
                    decoded = raw
                yield SseEvent(kind, event_id, decoded)
            kind, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue  # heartbeat comment
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _count(n: int, name: str) -> str:
    return f"{n} {name}{'' if n == 1 else 's'}"


def digest(step: str, result: Any) -> str:
    """One line on a step's result (what a summary found, the match score)."""
    if not isinstance(result, dict):
        return ""
    if result.get("degraded"):
        return f"degraded: {result.get('reason', '')}"
    if step in ("resume_summary", "detailed_resume_summary"):
        header = result.get("header") or {}
        parts = [str(header.get(k)) for k in ("name", "headline") if header.get(k)]
        for key, name in (("skills", "skill"), ("experience", "role"), ("projects", "project")):
            if result.get(key):
                parts.append(_count(len(result[key]), name))
        return " · ".join(parts)
    if step == "job_summary":
        title = str(result.get("jobTitle") or "?")
        if result.get("company"):
            title += f" — {result['company']}"
        must = _count(len(result.get("mustHaves") or []), "must-have")
        nice = _count(len(result.get("niceToHaves") or []), "nice-to-have")
        return f"{title} · {must}, {nice}"
    if step == "job_match" and isinstance(result.get("match_score"), int | float):
        return f"match score {result['match_score']:g}/100"
    return ""


@dataclass
class StepView:
    """What the stream told about one step so far."""

    step: str
    task_id: str | None = None
    model: str = ""
    started_ms: int | None = None
    ended_ms: int | None = None
    tokens: list[str] = field(default_factory=list)
    result: Any = None
    done: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"  # pending, queued, running, done, cached, error, cancelled
    shown: int = 0  # tokens already printed


@dataclass
class Follower:
    """Follows a service's event stream and prints it.

    The summaries' events are printed as they come, each with its time since the service
    was created (stream ids are the Redis clock: the admission's own event is time 0).
    The later steps run in parallel too; their output is printed one block at a time in
    the depth's order (the job match's tokens live, then the customized résumé, then the
    interview preparation), each block from what had arrived, then live.
    """

    later: tuple[str, ...]
    steps: dict[str, StepView] = field(default_factory=dict)
    last_id: str | None = None
    t0_ms: int | None = None
    followed: list[str] = field(default_factory=list)  # steps with a task, in stream order
    final: dict[str, Any] = field(default_factory=dict)
    current: int = 0  # index in `later` of the block being printed
    block_open: bool = False
    last_ms: int = 0

    def view(self, step: str) -> StepView:
        return self.steps.setdefault(step, StepView(step))

    def _ms(self, event: SseEvent, step: str | None) -> int:
        """The event's time (Redis ms) from its cursor; the last one for an id-less event."""
        if not event.id:
            return self.last_ms
        if step is not None and step not in self.followed:
            return self.last_ms
        parts = event.id.split(".")
        index = 0 if step is None else self.followed.index(step) + 1
        try:
            ms = int(parts[index].split("-", 1)[0])
        except (IndexError, ValueError):
            return self.last_ms
        self.last_ms = max(self.last_ms, ms)
        return ms

    def rel(self, ms: int | None) -> str:
        """`+1.23s`: the time since the service was created, right-aligned."""
        if ms is None or self.t0_ms is None:
            return f"{'?':>7}"
        return f"{f'+{(ms - self.t0_ms) / 1000:.2f}s':>7}"

    def at(self, ms: Any) -> str:
        """`rel` of a time that may be missing, without padding ("-" when missing)."""
        return self.rel(int(ms)).strip() if isinstance(ms, int) else "-"

    def _line(self, ms: int | None, step: str, what: str, detail: str = "") -> None:
        _write(f"  {self.rel(ms)}  {step:<24} {what:<9} {detail}".rstrip() + "\n")

    # -- events -------------------------------------------------------------------------

    def handle(self, event: SseEvent) -> bool:
        """Take one event; True once the service's terminal event arrived."""
        self.last_id = event.id or self.last_id
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "service":
            return self._service(event, data)
        if event.type == "step":
            self._announced(event, data)
            return False
        step = str(data.get("step", ""))
        inner = data.get("data")
        if not step:
            return False
        if data.get("task_id") is None and event.type == "result":
            self._cached(event, step, inner)
            return False
        ms = self._ms(event, step)
        if step in SUMMARIES:
            self._summary_event(event.type, step, inner, ms)
        else:
            self._later_event(event.type, step, inner, ms)
        return False

    def _service(self, event: SseEvent, data: dict[str, Any]) -> bool:
        ms = self._ms(event, None)
        status = str(data.get("status", ""))
        if self.t0_ms is None:
            self.t0_ms = ms
            _write(
                f"--- summaries, in parallel (time since the service was created) ---\n"
                f"  {self.rel(ms)}  {'service':<24} {status:<9} "
                f"tier {data.get('tier')}, depth {data.get('depth')}\n"
            )
        if status in ("done", "error"):
            self._close_block()
            self.final = {**data, "ms": ms}
            return True
        return False

    def _announced(self, event: SseEvent, data: dict[str, Any]) -> None:
        step = str(data.get("step", ""))
        view = self.view(step)
        self._ms(event, None)
        if data.get("task_id"):
            view.task_id = str(data["task_id"])
            if step not in self.followed:
                self.followed.append(step)
            if view.status == "pending":
                view.status = "queued"
        if step in LATER and step == self.later[0] and not self.block_open:
            more = ": the later steps run in parallel" if len(self.later) > 1 else ""
            _write(f"--- summaries done{more} ---\n")

    def _cached(self, event: SseEvent, step: str, result: Any) -> None:
        ms = self._ms(event, None)
        view = self.view(step)
        view.status, view.result, view.started_ms, view.ended_ms = "cached", result, ms, ms
        self._line(ms, step, "cached", digest(step, result) + " (from the summary cache)")

    def _summary_event(self, kind: str, step: str, inner: Any, ms: int) -> None:
        view = self.view(step)
        data = inner if isinstance(inner, dict) else {}
        if kind == "queued":
            self._line(ms, step, "queued", f"position {data.get('position')}")
        elif kind == "backpressure":
            wait = data.get("expected_wait_s")
            more = f", ~{wait} s" if wait is not None else ""
            self._line(ms, step, "waiting", f"{data.get('slots')} slots busy{more}")
        elif kind == "started":
            view.status, view.model, view.started_ms = "running", str(data.get("model")), ms
            self._line(ms, step, "started", f"on {view.model}")
        elif kind == "restart":
            self._line(ms, step, "restarted", f"attempt {data.get('attempt')}")
        elif kind == "result":
            view.result = inner
        elif kind == "done":
            view.status, view.done, view.ended_ms = "done", data, ms
            usage = data.get("usage") or {}
            tokens = f"{usage.get('input_tokens')}+{usage.get('output_tokens')} tokens"
            self._line(ms, step, "done", f"{tokens}: {digest(step, view.result)}")
        elif kind in ("error", "cancelled"):
            view.status, view.ended_ms = kind, ms
            self._line(ms, step, kind, str(data.get("code") or data))

    def _later_event(self, kind: str, step: str, inner: Any, ms: int) -> None:
        view = self.view(step)
        data = inner if isinstance(inner, dict) else {}
        if kind == "started":
            view.status, view.model, view.started_ms = "running", str(data.get("model")), ms
        elif kind == "token":
            view.tokens.append(str(data.get("text", "")))
        elif kind == "restart":
            view.tokens.clear()
            if self._is_current(step) and view.shown:
                _write("\n[restarted: a new attempt streams from the start]\n")
            view.shown = 0
        elif kind == "result":
            view.result = inner
        elif kind == "done":
            view.status, view.done, view.ended_ms = "done", data, ms
        elif kind in ("error", "cancelled"):
            view.status, view.ended_ms = kind, ms
            view.done = data
        self._advance()

    # -- the later steps' blocks ----------------------------------------------------------

    def _is_current(self, step: str) -> bool:
        return self.current < len(self.later) and self.later[self.current] == step

    def _advance(self) -> None:
        """Print what the current block has; move on to the next one once it ended."""
        while self.current < len(self.later):
            view = self.view(self.later[self.current])
            if not self.block_open:
                if view.status in ("pending", "queued") and not view.tokens:
                    return
                if view.step in STREAMED and not view.tokens and view.status == "running":
                    return  # its header with its first token
                self._open(view)
            if view.step in STREAMED and view.shown < len(view.tokens):
                _write("".join(view.tokens[view.shown :]))
                view.shown = len(view.tokens)
            if view.status not in ("done", "error", "cancelled"):
                return
            self._end(view)
            self.current += 1

    def _open(self, view: StepView) -> None:
        self.block_open = True
        titles = {
            "job_match": "job match, streaming",
            "resume_customize": "customized résumé",
            "interview_prep": "interview preparation, streaming",
        }
        title = titles.get(view.step, view.step)
        started = f" (started {self.at(view.started_ms)} on {view.model})" if view.model else ""
        _write(f"--- {title}{started} ---\n")

    def _end(self, view: StepView) -> None:
        if view.step in STREAMED and view.shown:
            _write("\n")
        if view.status != "done":
            _write(f"[{view.step} {view.status}: {view.done.get('code') or view.done}]\n")
        elif view.step == "resume_customize":
            _write(_customized(view.result))
        elif view.step == "interview_prep":
            _write(_questions(view.result))
        usage = view.done.get("usage") or {}
        line = digest(view.step, view.result)
        tokens = f"{usage.get('input_tokens')}+{usage.get('output_tokens')} tokens"
        _write(
            f"[{view.step} {view.status} {self.at(view.ended_ms)}: "
            f"{tokens}{', ' + line if line else ''}]\n"
        )
        self.block_open = False

    def _close_block(self) -> None:
        """The service ended: print whatever later blocks are left."""
        self._advance()
        while self.current < len(self.later):
            view = self.view(self.later[self.current])
            if not self.block_open:
                self._open(view)
            self._end(view)
            self.current += 1


def _customized(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    text = str(result.get("customized_resume_markdown") or "").rstrip() + "\n"
    changes = result.get("customization_summary") or []
    if changes:
        text += "changes:\n" + "".join(
            f"- {c.get('section')}: {c.get('change_reason')}\n"
            for c in changes
            if isinstance(c, dict)
        )
    return text


def _questions(result: Any) -> str:
    """The interview preparation read back from its result (its JSON streamed above)."""
    if not isinstance(result, dict):
        return ""
    questions = result.get("potential_questions") or []
    lines = [f"questions: {len(questions)}"]
    lines += [f"  Q: {q.get('question')}" for q in questions[:3] if isinstance(q, dict)]
    reverse = result.get("reverse_questions") or []
    if reverse:
        lines.append(f"questions to ask them: {len(reverse)}, e.g. {reverse[0]}")
    return "\n".join(lines) + "\n"


async def follow(
    client: httpx.AsyncClient, events_url: str, headers: dict[str, str], follower: Follower
) -> None:
    """Read the service's SSE stream to its end; reconnect with Last-Event-ID.

    Raises:
        DemoError: the stream did not end after `MAX_RECONNECTS` connections.
    """
    for _ in range(MAX_RECONNECTS):
        request_headers = {**headers, "Accept": "text/event-stream"}
        if follower.last_id:
            request_headers["Last-Event-ID"] = follower.last_id
        try:
            async with client.stream("GET", events_url, headers=request_headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise DemoError(f"events: HTTP {response.status_code} {response.text}")
                async for event in sse_events(response):
                    if follower.handle(event):
                        return
        except httpx.TransportError as exc:
            # A cut stream is resumed from the last event id, like any SSE client would.
            logger.warning("event stream cut (%s); resuming", type(exc).__name__)
    raise DemoError(f"the event stream did not end after {MAX_RECONNECTS} connections")


def _answer(reply: httpx.Response, what: str, expected: int) -> dict[str, Any]:
    if reply.status_code != expected:
        raise DemoError(f"{what}: HTTP {reply.status_code} {reply.text}")
    body: dict[str, Any] = reply.json()
    return body


async def upload(client: httpx.AsyncClient, lang: str, headers: dict[str, str]) -> dict[str, str]:
    """Upload the three inputs as a user would; print what each became.

    Returns:
        The create body's asset ids.
    """
    resume = example_files.resume_pdf(lang)
    uploads: list[tuple[str, str, str, dict[str, Any]]] = [
        (
            "resume",
            "résumé",
            f"resume.{lang}.pdf (PDF made from examples/resume.{lang}.txt, {len(resume):,} bytes)",
            {"files": {"file": (f"resume.{lang}.pdf", resume, "application/pdf")}},
        ),
        (
            "detailed-resume",
            "detailed résumé",
            "text of "
            + (
                "examples/detailed_resume.en.txt"
                if lang == "en"
                else f"examples/resume.{lang}.txt with its projects"
            ),
            {"json": {"text": example_files.detailed_resume(lang), "lang": lang}},
        ),
    ]
    if lang == "en":
        uploads.append(
            (
                "jd",
                "job description",
                "text of examples/job.en.txt",
                {"json": {"text": example_files.example("job.en.txt"), "lang": lang}},
            )
        )
    else:
        png = example_files.job_screenshot_png(lang)
        uploads.append(
            (
                "jd",
                "job description",
                f"job.{lang}.png (screenshot of examples/job.{lang}.txt, {len(png):,} bytes)",
                {"files": {"file": (f"job.{lang}.png", png, "image/png")}},
            )
        )
    ids: dict[str, str] = {}
    for route, label, source, body in uploads:
        if "files" in body:
            body = {**body, "data": {"lang": lang}}
        reply = await client.post(f"/api/upload/{route}", headers=headers, **body)
        stored = _answer(reply, f"upload {route}", 201)
        key = next(k for k in ("resume_id", "detailed_resume_id", "job_id") if k in stored)
        ids[key] = str(stored[key])
        if stored.get("source") == "image":
            read = "kept as an image (the vision route reads it)"
        else:
            read = f"read as {stored.get('source')}, {stored.get('chars')} chars"
        _write(
            f"uploaded {label:<16} {source}\n"
            f"  → {key} {ids[key][:8]}…: {read}, lang {stored.get('lang')}\n"
        )
    return ids


async def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Start the stack, upload, create the service, follow it, print the report.

    Raises:
        DemoError: any step failed, or the service did not end `done`.
    """
    from lib.app.stack import LocalStack, check_health

    started = time.monotonic()
    stack = LocalStack(
        settings,
        state_dir=Path(settings.state_dir) / "demo",
        redis_mode=args.redis,
        write_stack_file=False,
    )
    try:
        info = stack.start()
        check_health(info)
        _write(f"local stack up in {time.monotonic() - started:.1f}s: app={info.app_url}\n")
        headers = {"Accept-Language": args.lang}
        if args.user:
            headers["Authorization"] = f"Bearer {await _sign_in(info.settings, args)}"
        else:
            _write("as a trial visitor (free tier; --user NAME to sign in)\n")
        async with httpx.AsyncClient(base_url=info.app_url, timeout=60.0) as client:
            ids = await upload(client, args.lang, headers)
            body = {**ids, "lang": args.lang, "depth": args.depth}
            reply = await client.post("/api/service/create", json=body, headers=headers)
            created = _answer(reply, "create", 202)
            _write(
                f"created service {created['service_id']}: depth {created['depth']}, "
                f"tier {created['tier']}, lang {created['lang']}\n"
            )
            follower = Follower(later=LATER[: {"a": 1, "b": 2, "c": 3}[args.depth]])
            await follow(client, created["events_url"], headers, follower)
            status = _answer(
                await client.get(created["status_url"], headers=headers), "status", 200
            )
            tasks = await _tasks(client, status, headers)
        _report(status, tasks, follower, time.monotonic() - started)
        if status.get("status") != "done":
            raise DemoError(
                f"the service ended as {status.get('status')} ({status.get('error') or '?'})"
            )
        return 0
    finally:
        stack.stop()


async def _tasks(
    client: httpx.AsyncClient, status: dict[str, Any], headers: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Each step's task as `GET /api/tasks/{id}` has it (its queue, times and usage)."""
    out: dict[str, dict[str, Any]] = {}
    for step in status.get("steps") or []:
        if step.get("task_id"):
            reply = await client.get(f"/api/tasks/{step['task_id']}", headers=headers)
            if reply.status_code == 200:
                out[step["step"]] = reply.json()
    return out


async def _sign_in(settings: Settings, args: argparse.Namespace) -> str:
    """A bearer token for `--user`, after granting it `--grant` units (paid tier)."""
    from lib.auth import issue_token
    from lib.redis.factory import create_redis
    from lib.tasks import quota

    token = issue_token(secret(settings.app_secret) or "", args.user, 3600)
    grant = args.grant if args.grant is not None else settings.service_costs.get(args.depth, 0)
    if grant > 0:
        redis = create_redis(settings)
        try:
            balance = await quota.grant(redis, args.user, grant)
        finally:
            await redis.aclose()
        _write(
            f"signed in as {args.user}; granted {grant}, balance now {balance} "
            f"(a depth-{args.depth} service costs {settings.service_costs.get(args.depth)})\n"
        )
    else:
        _write(f"signed in as {args.user}\n")
    return token


def _report(
    status: dict[str, Any], tasks: dict[str, dict[str, Any]], follower: Follower, took: float
) -> None:
    """The service's status, tier, cost and usage by step, from `GET /api/service/{id}`."""
    t0 = follower.t0_ms
    end = follower.final.get("ms")
    wall = f"{(end - t0) / 1000:.2f} s" if t0 is not None and end is not None else "?"
    charged = int(status.get("cost") or 0)
    rows = [
        (
            "status",
            str(status.get("status")) + (f" ({status['error']})" if status.get("error") else ""),
        ),
        ("tier", str(status.get("tier"))),
        ("depth", str(status.get("depth"))),
        ("charged", _count(charged, "quota unit")),
        ("wall time", f"{wall} (create → done)"),
    ]
    _write("--- service ---\n" + "".join(f"{k:<10} {v}\n" for k, v in rows))
    head = ("step", "task", "status", "queue", "model", "start", "end", "in", "out", "cost")
    table: list[tuple[str, ...]] = [head]
    total_in = total_out = 0
    total_cost = 0.0
    currency = "CNY"
    offline = False
    for step in status.get("steps") or []:
        name = str(step.get("step"))
        task = tasks.get(name, {})
        usage = task.get("usage") or {}
        counts = usage.get("usage") or {}
        label = str(usage.get("model") or step.get("model") or "-")
        if label.endswith(OFFLINE):
            label, offline = label.removesuffix(OFFLINE) + " *", True
        cost = float(step.get("cost") or usage.get("cost") or 0.0)
        currency = str(usage.get("currency") or currency)
        n_in, n_out = int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0)
        total_in, total_out, total_cost = total_in + n_in, total_out + n_out, total_cost + cost
        view = follower.steps.get(name)
        at = follower.at
        table.append(
            (
                name,
                (step.get("task_id") or "cached")[:8],
                str(step.get("status")),
                str(task.get("queue_id") or "-"),
                label,
                at(task.get("started_ms") or (view.started_ms if view else None)),
                at(task.get("finished_ms") or (view.ended_ms if view else None)),
                str(n_in) if task else "-",
                str(n_out) if task else "-",
                f"{cost:g}",
            )
        )
    table.append(
        ("total", "", "", "", "", "", "", str(total_in), str(total_out), f"{total_cost:g}")
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    right = {5, 6, 7, 8, 9}
    for row in table:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        _write(("  ".join(cells)).rstrip() + "\n")
    notes = [f"cost in {currency}; times since the service was created; total {took:.1f}s"]
    if offline:
        notes.append("* served by the offline model (keyword baseline, no language model)")
    _write("".join(f"{n}\n" for n in notes))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when the service ends done, 1 with a message on stderr otherwise."""
    parser = argparse.ArgumentParser(
        prog="python -m lib.app.demo",
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument("--lang", choices=["en", "zh"], default="en")
    parser.add_argument("--depth", choices=["a", "b", "c"], default="c")
    parser.add_argument("--redis", choices=["tcp", "rest"], default="tcp")
    parser.add_argument("--user", help="run as this signed-in user instead of a trial visitor")
    parser.add_argument(
        "--grant", type=int, help="quota granted to --user first (default: the depth's cost)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    # pgserver warns when XDG_RUNTIME_DIR is unset (containers); harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = Settings()
    update: dict[str, Any] = {}
    if settings.offline_tokens_per_s == 0 and settings.offline_ttft_ms == 0:
        update.update(offline_tokens_per_s=DEMO_TOKENS_PER_S, offline_ttft_ms=DEMO_TTFT_MS)
    if "glm_flash_max_workers" not in settings.model_fields_set:
        update["glm_flash_max_workers"] = max(settings.glm_flash_max_workers, DEMO_FLASH_SLOTS)
    if "rate_trial_address_limit" not in settings.model_fields_set:
        update["rate_trial_address_limit"] = DEMO_TRIAL_ADDRESS_LIMIT
    settings = settings.model_copy(update=update)
    try:
        return asyncio.run(run_demo(settings, args))
    except DemoError as exc:
        sys.stderr.write(f"\ndemo failed: {exc}\n")
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        sys.stderr.write(f"\ndemo failed: {type(exc).__name__}: {exc}\n")
    except KeyboardInterrupt:
        sys.stderr.write("\ndemo interrupted\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
