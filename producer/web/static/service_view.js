// What the workbench knows about one service, built from its status and its event stream.
//
// Pure state (no DOM, no network), so the rules are testable on their own:
// - an event seen before (same id, type and data: a replay after a reconnect) changes
//   nothing, so text is never doubled;
// - `restart` empties its step's text (a redelivered attempt writes it again);
// - a step's state only moves forward (pending → queued → running → done | error |
//   cancelled | stopped), so a late or replayed `queued` never undoes `started`, and tokens of a
//   step that is already done (its final result known) are ignored.
import { parsePartial } from "slotline/partial_json";

export const SUMMARY_STEPS = ["resume_summary", "detailed_resume_summary", "job_summary"];
export const DEPTH_STEPS = {
  a: ["job_match"],
  b: ["job_match", "resume_customize"],
  c: ["job_match", "resume_customize", "interview_prep"],
};
export const FINISHED = new Set(["done", "error"]);

const RANK = { pending: 0, queued: 1, running: 2, done: 3, error: 3, cancelled: 3, stopped: 3 };
// Step statuses of `GET /api/service/{id}` as the page names them (`cached`: answered
// from the summary cache; `created`: admitted, not yet reported by its task).
const STATUS_OF = { failed: "error", cached: "done", created: "queued" };

/** The steps of a service: its summaries, then the steps of its depth. */
export function stepsOf(depth, withDetailed) {
  const summaries = SUMMARY_STEPS.filter((s) => withDetailed || s !== "detailed_resume_summary");
  return [...summaries, ...(DEPTH_STEPS[depth] ?? DEPTH_STEPS.c)];
}

function newStep(name) {
  return {
    step: name,
    status: "pending",
    taskId: null,
    position: null,
    expectedWaitS: null,
    model: null,
    attempt: 0,
    text: "",
    result: null,
    degraded: false,
    error: null,
  };
}

export class ServiceView {
  /**
   * @param {{serviceId: string, depth: string, withDetailed: boolean}} service
   */
  constructor({ serviceId, depth, withDetailed }) {
    this.serviceId = serviceId;
    this.depth = depth;
    this.status = "created";
    this.tier = null;
    this.error = null;
    this.steps = new Map(stepsOf(depth, withDetailed).map((name) => [name, newStep(name)]));
    this.seen = new Set();
    this.lastId = null;
  }

  get finished() {
    return FINISHED.has(this.status);
  }

  /** Whether some step has not started yet (the service can still be cancelled). */
  get cancellable() {
    if (this.finished) return false;
    return [...this.steps.values()].some((s) => RANK[s.status] < RANK.running);
  }

  _step(name) {
    if (!name) return null;
    if (!this.steps.has(name)) this.steps.set(name, newStep(name));
    return this.steps.get(name);
  }

  _advance(step, status) {
    if (RANK[status] >= RANK[step.status]) step.status = status;
  }

  /**
   * The service as `GET /api/service/{id}` reports it (a reopened service, or a check).
   *
   * @param {object} body the response body.
   * @returns {Set<string>} the steps that changed, and `service`.
   */
  load(body) {
    const changed = new Set(["service"]);
    this.status = body.status ?? this.status;
    this.tier = body.tier ?? this.tier;
    this.error = body.error ?? null;
    for (const row of body.steps ?? []) {
      const step = this._step(row.step);
      if (!step) continue;
      const status = STATUS_OF[row.status] ?? row.status;
      if (status in RANK) this._advance(step, status);
      step.taskId = row.task_id ?? step.taskId;
      step.model = row.model ?? step.model;
      if (step.status === "queued") step.position = row.position ?? step.position;
      if (row.result !== undefined && row.result !== null) step.result = row.result;
      step.degraded = Boolean(row.degraded);
      if (row.error) step.error = row.error;
      changed.add(step.step);
    }
    return this._settle(changed);
  }

  /**
   * One event of the service's stream.
   *
   * @param {{id: (string|null), type: string, raw: string, data: object}} event the event
   *   (`raw` is its data as sent: replays are recognized by id, type and data).
   * @returns {Set<string>} what changed: step names, and `service`; empty for a replay.
   */
  apply({ id, type, raw, data }) {
    const key = `${id ?? ""}\u0001${type}\u0001${raw}`;
    if (this.seen.has(key)) return new Set();
    this.seen.add(key);
    if (id) this.lastId = id;
    if (type === "service") {
      this.status = data.status ?? this.status;
      this.tier = data.tier ?? this.tier;
      if (data.error) this.error = data.error;
      return this._settle(new Set(["service"]));
    }
    const step = this._step(data?.step);
    if (!step) return new Set();
    if (data.task_id) step.taskId = data.task_id;
    if (type === "step") {
      // A step answered from the summary cache is announced without a task; its result
      // follows at once.
      this._advance(step, data.cached ? "running" : "queued");
      return new Set([step.step]);
    }
    const inner = data.data && typeof data.data === "object" ? data.data : {};
    const done = RANK[step.status] === RANK.done;
    switch (type) {
      case "queued":
      case "backpressure":
        if (RANK[step.status] <= RANK.queued) {
          step.status = "queued";
          if (Number.isFinite(inner.position)) step.position = inner.position;
          if (Number.isFinite(inner.expected_wait_s)) step.expectedWaitS = inner.expected_wait_s;
        }
        break;
      case "started":
        this._advance(step, "running");
        step.model = inner.model ?? step.model;
        step.attempt = inner.attempt ?? step.attempt;
        step.position = null;
        break;
      case "token":
        if (done) return new Set();
        this._advance(step, "running");
        step.position = null;
        step.text += typeof inner.text === "string" ? inner.text : "";
        break;
      case "restart":
        if (done) return new Set();
        this._advance(step, "running");
        step.attempt = inner.attempt ?? step.attempt;
        step.text = "";
        step.result = null;
        break;
      case "result":
        step.result = data.data ?? null;
        step.degraded = Boolean(step.result && step.result.degraded);
        this._advance(step, "done");
        step.position = null;
        break;
      case "done":
        this._advance(step, "done");
        step.model = inner.model ?? step.model;
        if (inner.degraded) step.degraded = true;
        step.position = null;
        break;
      case "error":
        this._advance(step, "error");
        step.error = { code: inner.code ?? "internal_error", message: inner.message ?? "" };
        step.position = null;
        break;
      case "cancelled":
        this._advance(step, "cancelled");
        step.position = null;
        break;
      default:
        return new Set();
    }
    return new Set([step.step]);
  }

  /** A service that stopped in error ends the steps it will not use: those not started are
   * cancelled, a running one is `stopped` (its answer is no longer waited for). */
  _settle(changed) {
    if (this.status !== "error") return changed;
    for (const step of this.steps.values()) {
      if (RANK[step.status] < RANK.done) {
        step.status = step.status === "running" ? "stopped" : "cancelled";
        step.position = null;
        changed.add(step.step);
      }
    }
    return changed;
  }

  /** What to show of a step: its result, else the object its streamed text has written. */
  shown(name) {
    const step = this.steps.get(name);
    if (!step) return null;
    if (step.result) return step.result;
    return step.text ? (parsePartial(step.text).value ?? null) : null;
  }
}
