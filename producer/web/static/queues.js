// The queue dashboard: polls the operator data routes and keeps a few minutes of history
// (in sessionStorage: it survives a reload, costs the server nothing) for the charts.
import { clock, formatMs, hasText, t } from "slotline/common";

const root = document.getElementById("dashboard");
const pollMs = Number(root.dataset.pollMs) || 2000;
const failuresPollMs = Number(root.dataset.failuresPollMs) || 10000;
const HISTORY_MS = 5 * 60 * 1000;
// A fresh page's chart spans at least this much, so its first samples are not a sliver.
const MIN_SPAN_MS = 30 * 1000;
const MAX_SAMPLES = 600;
const STORE = "slotline.queues.history";
const SVG = "http://www.w3.org/2000/svg";

const updated = document.getElementById("updated");
let history = loadHistory();
let lastOk = null;
let failuresTimer = null;

function loadHistory() {
  try {
    const value = JSON.parse(sessionStorage.getItem(STORE) || "[]");
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}

function saveHistory() {
  try {
    sessionStorage.setItem(STORE, JSON.stringify(history));
  } catch {
    // Storage full or disabled: the history stays in memory.
  }
}

function setText(el, value) {
  if (el && el.textContent !== value) el.textContent = value;
}

function field(row, name) {
  return row.querySelector(`[data-field="${name}"]`);
}

function renderQueues(data) {
  for (const q of data.queues) {
    const row = root.querySelector(`[data-testid=queue-row][data-queue-id="${CSS.escape(q.queue_id)}"]`);
    if (!row) continue;
    setText(field(row, "waiting"), String(q.waiting));
    setText(field(row, "in_flight"), String(q.in_flight));
    setText(field(row, "pending"), String(q.pending));
    setText(field(row, "limit"), String(q.limit));
    setText(field(row, "wait_p50"), formatMs(q.wait.p50_ms));
    setText(field(row, "wait_max"), formatMs(q.wait.max_ms));
  }
  for (const p of data.pools) {
    const row = root.querySelector(
      `[data-testid=pool-row][data-model-id="${CSS.escape(p.model_id)}"][data-tier="${CSS.escape(p.tier)}"]`,
    );
    if (!row) continue;
    setText(field(row, "active"), t("queues.active_of", { active: p.active, limit: p.limit }));
    const meter = field(row, "meter");
    meter.max = p.limit;
    meter.value = p.active;
    row.classList.toggle("full", p.active >= p.limit);
  }
}

function record(data) {
  const sample = { t: data.now_ms, w: 0, f: 0, q: {} };
  for (const q of data.queues) {
    sample.w += q.waiting;
    sample.f += q.in_flight;
    sample.q[q.queue_id] = [q.waiting, q.in_flight];
  }
  history.push(sample);
  const oldest = data.now_ms - HISTORY_MS;
  history = history.filter((s) => s.t >= oldest).slice(-MAX_SAMPLES);
  saveHistory();
}

function polyline(points, cls) {
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  line.setAttribute("class", cls);
  line.setAttribute("fill", "none");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  return line;
}

/** Waiting and in-flight lines over the last minutes, scaled to the box of `svg`. */
function drawLines(svg, series) {
  const [, , width, height] = svg.getAttribute("viewBox").split(" ").map(Number);
  const end = history.length ? history[history.length - 1].t : Date.now();
  const span = history.length ? Math.min(HISTORY_MS, Math.max(MIN_SPAN_MS, end - history[0].t)) : HISTORY_MS;
  const start = end - span;
  const top = Math.max(1, ...series.flatMap(([w, f]) => [w, f]));
  const pad = 2;
  const x = (time) => ((time - start) / span) * width;
  const y = (value) => height - pad - (value / top) * (height - 2 * pad);
  const waiting = history.map((s, i) => [x(s.t), y(series[i][0])]);
  const inFlight = history.map((s, i) => [x(s.t), y(series[i][1])]);
  // Waiting (dashed) on top: equal counts still show both lines.
  svg.replaceChildren(polyline(inFlight, "in-flight"), polyline(waiting, "waiting"));
  return top;
}

function draw() {
  const chart = document.getElementById("chart");
  const top = drawLines(chart, history.map((s) => [s.w, s.f]));
  setText(document.getElementById("chart-top"), t("queues.chart_top", { n: top }));
  document.getElementById("chart-hint").hidden = history.length > 1;
  for (const row of root.querySelectorAll("[data-testid=queue-row]")) {
    const id = row.dataset.queueId;
    drawLines(field(row, "trend"), history.map((s) => s.q[id] || [0, 0]));
  }
}

async function pollQueues() {
  try {
    const reply = await fetch("/api/ops/queues", { headers: { Accept: "application/json" } });
    if (!reply.ok) throw new Error(String(reply.status));
    const data = await reply.json();
    renderQueues(data);
    record(data);
    draw();
    lastOk = data.now_ms;
    setText(updated, t("queues.updated", { time: clock(data.now_ms) }));
    updated.classList.remove("stale");
  } catch {
    setText(updated, t("queues.stale", { time: lastOk ? clock(lastOk) : t("common.none") }));
    updated.classList.add("stale");
  } finally {
    setTimeout(pollQueues, pollMs);
  }
}

function reasonText(row) {
  const status = row.status ? String(row.status) : t("queues.no_response");
  return row.reason ? `${status} · ${row.reason}` : status;
}

function fillRows(body, empty, rows, error, templateId, key, fill) {
  const keep = new Map();
  for (const tr of body.querySelectorAll("tr[data-key]")) keep.set(tr.dataset.key, tr);
  const wanted = [];
  for (const row of rows || []) {
    const id = key(row);
    let tr = keep.get(id);
    if (!tr) {
      tr = document.getElementById(templateId).content.firstElementChild.cloneNode(true);
      tr.dataset.key = id;
      fill(tr, row);
    }
    wanted.push(tr);
  }
  if (!wanted.length) {
    const cell = empty.querySelector("td");
    const reason = hasText(`errors.${error}`) ? t(`errors.${error}`) : error;
    setText(cell, error ? t("queues.unavailable", { reason }) : t(empty.dataset.emptyKey));
    wanted.push(empty);
  }
  body.replaceChildren(...wanted);
}

function fillDeadLetter(tr, row) {
  setText(field(tr, "time"), clock(row.created_ms));
  setText(field(tr, "dlq_id"), row.dlq_id || t("common.none"));
  setText(field(tr, "task_id"), row.task_id || t("common.none"));
  setText(field(tr, "queue_id"), row.queue_id || t("common.none"));
  setText(field(tr, "reason"), reasonText(row));
  const button = tr.querySelector("[data-testid=dlq-retry]");
  button.addEventListener("click", () => retry(tr, button, row.dlq_id));
}

function fillFailure(tr, row) {
  setText(field(tr, "time"), clock(row.created_ms));
  setText(field(tr, "model"), row.model);
  setText(field(tr, "template"), row.template);
  setText(field(tr, "error_kind"), row.error_kind);
}

async function retry(tr, button, dlqId) {
  button.disabled = true;
  const note = field(tr, "note");
  try {
    const reply = await fetch(`/api/ops/dlq/${encodeURIComponent(dlqId)}/retry`, { method: "POST" });
    const body = await reply.json();
    if (!reply.ok) {
      const key = hasText(`errors.${body.error}`) ? `errors.${body.error}` : "errors.internal_error";
      throw new Error(t(key, body));
    }
    tr.classList.add("retried");
    setText(note, t("queues.retried", { id: body.message_id }));
  } catch (err) {
    button.disabled = false;
    setText(note, t("queues.retry_failed", { message: err.message }));
  }
  scheduleFailures(1000);
}

async function pollFailures() {
  try {
    const reply = await fetch("/api/ops/failures", { headers: { Accept: "application/json" } });
    if (!reply.ok) throw new Error(String(reply.status));
    const data = await reply.json();
    fillRows(
      document.getElementById("dlq-body"), document.getElementById("dlq-empty"),
      data.dead_letters, data.dead_letters_error, "dlq-row-template", (r) => r.dlq_id, fillDeadLetter,
    );
    fillRows(
      document.getElementById("failures-body"), document.getElementById("failures-empty"),
      data.failures, data.failures_error, "failure-row-template",
      (r) => `${r.created_ms}|${r.model}|${r.template}|${r.error_kind}`, fillFailure,
    );
  } catch {
    // The queue poll shows that the data routes do not answer.
  } finally {
    scheduleFailures(failuresPollMs);
  }
}

function scheduleFailures(delay) {
  clearTimeout(failuresTimer);
  failuresTimer = setTimeout(pollFailures, delay);
}

if (history.length) draw();
pollQueues();
pollFailures();
