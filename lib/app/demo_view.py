"""What `make demo` prints of the stream, in the run's language: the timeline, the blocks.

Every label comes from the `demo` dictionaries (`lib/locales/{lang}/demo.json`); what a
label shows of the run (step, task, queue and model ids, file names, results) is data.
Columns are padded by display width: a Chinese character takes two terminal cells.
"""

from __future__ import annotations

import sys
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from lib.i18n import Lang, message, text

SUMMARIES = ("resume_summary", "detailed_resume_summary", "job_summary")
LATER = ("job_match", "resume_customize", "interview_prep")
STEPS = SUMMARIES + LATER
STREAMED = ("job_match", "interview_prep")
# The words of the timeline's second column and of the statuses the report shows.
STATUSES = (
    "created",
    "pending",
    "queued",
    "waiting",
    "running",
    "started",
    "restarted",
    "done",
    "cached",
    "error",
    "cancelled",
)


def write(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


def cells(value: str) -> int:
    """The terminal width of `value`: wide and full-width characters take two cells."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in value)


def ljust(value: str, width: int) -> str:
    return value + " " * max(0, width - cells(value))


def rjust(value: str, width: int) -> str:
    return " " * max(0, width - cells(value)) + value


@dataclass(frozen=True)
class Texts:
    """The `demo` dictionary of one language: `t("report.total")`, `t("tokens", input=1)`."""

    lang: Lang

    def __call__(self, key: str, /, **params: Any) -> str:
        return text(f"demo.{key}", self.lang, params)

    def count(self, n: int, name: str) -> str:
        """`3 skills` / `3 项技能`."""
        return self(f"count.{name}_{'one' if n == 1 else 'other'}", n=n)

    def step(self, step: str) -> str:
        """A step's display name (`job_match` → `job match`, `岗位匹配`); unknown ones as is.

        `service` names the service's own row of the timeline.
        """
        return self(f"step.{step}") if step in ("service", *STEPS) else step

    def status(self, status: str) -> str:
        return self(f"status.{status}") if status in STATUSES else status

    def tier(self, tier: Any) -> str:
        return self(f"tier.{tier}") if tier in ("free", "paid") else str(tier)

    def error(self, code: Any) -> str:
        """An error code (`queue_full`) as the user-facing message of the dictionaries."""
        return message(str(code), self.lang) if code else "?"

    def tokens(self, usage: dict[str, Any]) -> str:
        return self("tokens", input=usage.get("input_tokens"), output=usage.get("output_tokens"))


def digest(step: str, result: Any, t: Texts | None = None) -> str:
    """One line on a step's result (what a summary found, the match score)."""
    t = t or Texts("en")
    if not isinstance(result, dict):
        return ""
    if result.get("degraded"):
        return t("digest.degraded", reason=result.get("reason", ""))
    if step in ("resume_summary", "detailed_resume_summary"):
        header = result.get("header") or {}
        parts = [str(header.get(k)) for k in ("name", "headline") if header.get(k)]
        for key, name in (("skills", "skill"), ("experience", "role"), ("projects", "project")):
            if result.get(key):
                parts.append(t.count(len(result[key]), name))
        return " · ".join(parts)
    if step == "job_summary":
        title = str(result.get("jobTitle") or "?")
        if result.get("company"):
            title += f" — {result['company']}"
        must = t.count(len(result.get("mustHaves") or []), "must_have")
        nice = t.count(len(result.get("niceToHaves") or []), "nice_to_have")
        return t("digest.job", title=title, must=must, nice=nice)
    if step == "job_match" and isinstance(result.get("match_score"), int | float):
        return t("digest.match_score", score=f"{result['match_score']:g}")
    return ""


@dataclass
class SseEvent:
    """One parsed server-sent event."""

    type: str
    id: str | None
    data: Any


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


class Follower:
    """Follows a service's event stream and prints it.

    The summaries' events are printed as they come, each with its time since the service
    was created (stream ids are the Redis clock: the admission's own event is time 0).
    The later steps run in parallel; each is printed as one block in the depth's order:
    the current block's tokens live, the next ones' buffered until it ends.
    """

    def __init__(self, later: tuple[str, ...], lang: Lang = "en") -> None:
        self.later = later
        self.t = Texts(lang)
        self.steps: dict[str, StepView] = {}
        self.last_id: str | None = None
        self.t0_ms: int | None = None
        self.followed: list[str] = []  # steps with a task, in stream order
        self.final: dict[str, Any] = {}
        self.current = 0  # index in `later` of the block being printed
        self.block_open = False
        self.last_ms = 0
        # The timeline's columns fit the longest step name and status word of the language.
        self.name_w = max(cells(self.t.step(s)) for s in ("service", *STEPS)) + 2
        self.what_w = max(cells(self.t.status(s)) for s in STATUSES) + 1

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
        name, word = ljust(self.t.step(step), self.name_w), ljust(self.t.status(what), self.what_w)
        write(f"  {self.rel(ms)}  {name}{word}{detail}".rstrip() + "\n")

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
            write(f"--- {self.t('timeline.title')} ---\n")
            detail = self.t(
                "timeline.service", tier=self.t.tier(data.get("tier")), depth=data.get("depth")
            )
            self._line(ms, "service", status, detail)
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
            key = "summaries_done_parallel" if len(self.later) > 1 else "summaries_done"
            write(f"--- {self.t(f'timeline.{key}')} ---\n")

    def _cached(self, event: SseEvent, step: str, result: Any) -> None:
        ms = self._ms(event, None)
        view = self.view(step)
        view.status, view.result, view.started_ms, view.ended_ms = "cached", result, ms, ms
        self._line(
            ms, step, "cached", self.t("timeline.cached", digest=digest(step, result, self.t))
        )

    def _summary_event(self, kind: str, step: str, inner: Any, ms: int) -> None:
        view = self.view(step)
        data = inner if isinstance(inner, dict) else {}
        t = self.t
        if kind == "queued":
            self._line(ms, step, "queued", t("timeline.position", n=data.get("position")))
        elif kind == "backpressure":
            wait, slots = data.get("expected_wait_s"), data.get("slots")
            if wait is not None:
                detail = t("timeline.slots_busy_wait", slots=slots, seconds=wait)
            else:
                detail = t("timeline.slots_busy", slots=slots)
            self._line(ms, step, "waiting", detail)
        elif kind == "started":
            view.status, view.model, view.started_ms = "running", str(data.get("model")), ms
            self._line(ms, step, "started", t("timeline.on_model", model=view.model))
        elif kind == "restart":
            self._line(ms, step, "restarted", t("timeline.attempt", n=data.get("attempt")))
        elif kind == "result":
            view.result = inner
        elif kind == "done":
            view.status, view.done, view.ended_ms = "done", data, ms
            tokens = t.tokens(data.get("usage") or {})
            self._line(
                ms,
                step,
                "done",
                t("timeline.done", tokens=tokens, digest=digest(step, view.result, t)),
            )
        elif kind in ("error", "cancelled"):
            view.status, view.ended_ms = kind, ms
            self._line(ms, step, kind, t.error(data.get("code")) if kind == "error" else "")

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
                write(f"\n[{self.t('block.restarted')}]\n")
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
                write("".join(view.tokens[view.shown :]))
                view.shown = len(view.tokens)
            if view.status not in ("done", "error", "cancelled"):
                return
            self._end(view)
            self.current += 1

    def _open(self, view: StepView) -> None:
        self.block_open = True
        title = self.t(f"block.{view.step}") if view.step in LATER else view.step
        if view.model:
            title = self.t(
                "block.started", title=title, at=self.at(view.started_ms), model=view.model
            )
        write(f"--- {title} ---\n")

    def _end(self, view: StepView) -> None:
        t = self.t
        if view.step in STREAMED and view.shown:
            write("\n")
        name, status = t.step(view.step), t.status(view.status)
        if view.status != "done":
            reason = t.error(view.done.get("code")) if view.status == "error" else ""
            write(f"[{t('block.failed', step=name, status=status, reason=reason)}]\n")
        elif view.step == "resume_customize":
            write(customized(view.result, t))
        elif view.step == "interview_prep":
            write(questions(view.result, t))
        line = digest(view.step, view.result, t)
        params = {"step": name, "status": status, "at": self.at(view.ended_ms)}
        params["tokens"] = t.tokens(view.done.get("usage") or {})
        end = t("block.end_digest", digest=line, **params) if line else t("block.end", **params)
        write(f"[{end}]\n")
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


def customized(result: Any, t: Texts) -> str:
    """The customized résumé's Markdown and what changed, read from its result."""
    if not isinstance(result, dict):
        return ""
    out = str(result.get("customized_resume_markdown") or "").rstrip() + "\n"
    changes = [c for c in result.get("customization_summary") or [] if isinstance(c, dict)]
    if changes:
        out += t("block.changes") + "\n"
        out += "".join(
            t("block.change", section=c.get("section"), reason=c.get("change_reason")) + "\n"
            for c in changes
        )
    return out


def questions(result: Any, t: Texts) -> str:
    """The interview preparation read back from its result (its JSON streamed above)."""
    if not isinstance(result, dict):
        return ""
    asked = result.get("potential_questions") or []
    lines = [t("block.questions", n=len(asked))]
    lines += [
        t("block.question", question=q.get("question")) for q in asked[:3] if isinstance(q, dict)
    ]
    reverse = result.get("reverse_questions") or []
    if reverse:
        lines.append(t("block.reverse_questions", n=len(reverse), example=reverse[0]))
    return "\n".join(lines) + "\n"
