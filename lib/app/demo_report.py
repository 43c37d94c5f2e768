"""`make demo`'s closing report (status, tier, cost, usage by step) and the pages' URLs.

Labels from the `demo` dictionaries, columns padded by display width (`demo_view`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from lib.app.demo_view import Follower, Texts, cells, ljust, rjust, write

# The offline model's usage label: the report marks its rows with `*` instead.
OFFLINE = " (offline keyword baseline)"


def table(rows: Sequence[Sequence[str]], right: frozenset[int]) -> str:
    """Rows as aligned columns (by display width), `right` ones right-aligned."""
    widths = [max(cells(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        line = [
            rjust(c, w) if i in right else ljust(c, w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(line).rstrip() + "\n")
    return "".join(out)


def report(
    status: dict[str, Any],
    tasks: dict[str, dict[str, Any]],
    follower: Follower,
    took: float,
) -> None:
    """The service's status, tier, cost and usage by step, from `GET /api/service/{id}`."""
    t = follower.t
    t0 = follower.t0_ms
    end = follower.final.get("ms")
    wall = f"{(end - t0) / 1000:.2f} s" if t0 is not None and end is not None else "?"
    charged = int(status.get("cost") or 0)
    state = t.status(str(status.get("status")))
    if status.get("error"):
        state = t("report.with_error", status=state, error=t.error(status["error"]))
    rows = [
        (t("report.status"), state),
        (t("report.tier"), t.tier(status.get("tier"))),
        (t("report.depth"), str(status.get("depth"))),
        (t("report.charged"), t.count(charged, "quota_unit")),
        (t("report.wall_time"), t("report.wall", wall=wall)),
    ]
    label_w = max(cells(k) for k, _ in rows) + 2
    write(f"--- {t('report.title')} ---\n" + "".join(f"{ljust(k, label_w)}{v}\n" for k, v in rows))
    columns = ("step", "task", "status", "queue", "model", "start", "end", "in", "out", "cost")
    lines: list[tuple[str, ...]] = [tuple(t(f"report.col_{c}") for c in columns)]
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
        lines.append(
            (
                name,
                str(step["task_id"])[:8] if step.get("task_id") else t.status("cached"),
                t.status(str(step.get("status"))),
                str(task.get("queue_id") or "-"),
                label,
                at(task.get("started_ms") or (view.started_ms if view else None)),
                at(task.get("finished_ms") or (view.ended_ms if view else None)),
                str(n_in) if task else "-",
                str(n_out) if task else "-",
                f"{cost:g}",
            )
        )
    totals = (str(total_in), str(total_out), f"{total_cost:g}")
    lines.append((t("report.total"), "", "", "", "", "", "", *totals))
    write(table(lines, frozenset({5, 6, 7, 8, 9})))
    notes = [t("report.notes", currency=currency, seconds=f"{took:.1f}")]
    if offline:
        notes.append(t("report.offline"))
    write("".join(f"{n}\n" for n in notes))


def page_urls(
    t: Texts,
    app_url: str,
    *,
    user: str | None,
    operators: frozenset[str],
    service_id: str | None = None,
) -> str:
    """The workbench's and the queue dashboard's URLs on the running stack (issue #12).

    The dashboard exists for operators only (`OPERATORS`, signed-in user ids): the line
    says whether the demo's user is one, and how one becomes one, never making it one.
    """
    lang = t.lang
    rows = [(t("url.workbench"), f"{app_url}/{lang}/workbench")]
    if service_id:
        rows.append((t("url.service"), f"{app_url}/{lang}/workbench?service={service_id}"))
    if user is None:
        note = t("url.queues_trial", setting="OPERATORS")
    elif user in operators:
        note = t("url.queues_operator", user=user, setting="OPERATORS")
    else:
        example = f"OPERATORS={user}"
        note = t("url.queues_not_operator", user=user, setting="OPERATORS", example=example)
    rows.append((t("url.queues"), t("url.with_note", url=f"{app_url}/{lang}/queues", note=note)))
    if user is not None:
        rows.append((t("url.signin"), signin_url(app_url, lang, service_id)))
    labels = [t("url.label", label=label) for label, _ in rows]
    width = max(cells(label) for label in labels) + 1
    return "".join(
        f"  {ljust(label, width)}{url}\n" for label, (_, url) in zip(labels, rows, strict=True)
    )


def signin_url(app_url: str, lang: str, service_id: str | None = None) -> str:
    """The sign-in page, going on to the workbench (and the service) once signed in."""
    target = f"/{lang}/workbench" + (f"?service={service_id}" if service_id else "")
    return f"{app_url}/{lang}/signin?next=" + quote(target, safe="/")
