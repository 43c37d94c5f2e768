// The workbench: three inputs → uploads → a service, followed live from its event stream;
// the caller's earlier services and saved inputs to reopen.
import * as api from "slotline/api";
import { hasText, t } from "slotline/common";
import { RENDERERS, el } from "slotline/results";
import { ServiceView, SUMMARY_STEPS } from "slotline/service_view";
import { follow } from "slotline/service_stream";

const root = document.getElementById("workbench");
const form = document.getElementById("service-form");
const panel = document.getElementById("service");
const history = document.getElementById("history");
const createButton = form.querySelector("[data-testid=create-service]");
const cancelButton = panel.querySelector("[data-action=cancel]");
const KINDS = ["resume", "detailed_resume", "jd"];
const REQUIRED = new Set(["resume", "jd"]);
// The input a precheck error names (`asset`), as the page calls it.
const ASSET_INPUT = {
  resume: "resume",
  detailed_resume: "detailed_resume",
  detailed: "detailed_resume",
  jd: "jd",
  job: "jd",
};
const STREAMED = new Set(["job_match", "interview_prep"]);

let view = null;
let stream = null;

function field(scope, name) {
  return scope.querySelector(`[data-field="${name}"]`);
}

function show(node, visible) {
  node.hidden = !visible;
}

function setText(node, value) {
  if (node.textContent !== value) node.textContent = value;
}

// --- messages --------------------------------------------------------------------------

/** The page-language text of an error: the server's message (asked for in this language),
 * else the dictionaries' text for its code. */
function errorText(error) {
  if (error instanceof api.ApiError) {
    if (error.status === 0) return t("workbench.error_network");
    if (error.body.message) return error.body.message;
    return codeText(error.code);
  }
  return t("workbench.error_network");
}

function codeText(code, fallback = "") {
  const key = `errors.${code}`;
  if (hasText(key) && !t(key).includes("{")) return t(key);
  return fallback || t("errors.internal_error");
}

function showError(name, message) {
  const node = root.querySelector(`[data-testid=error][data-for="${name}"]`);
  if (!node) return;
  setText(node, message);
  show(node, Boolean(message));
}

function clearErrors() {
  for (const node of form.querySelectorAll("[data-testid=error]")) {
    node.textContent = "";
    node.hidden = true;
  }
}

// --- inputs ----------------------------------------------------------------------------

function inputOf(kind) {
  const box = form.querySelector(`[data-input="${kind}"]`);
  return {
    box,
    text: box.querySelector("textarea"),
    file: box.querySelector("input[type=file]"),
  };
}

// Uploaded inputs, so a second try after an error does not upload unchanged ones again.
const uploaded = new Map();
// Inputs taken from the history (a saved asset), by kind.
const saved = new Map();

function signature(kind) {
  const { text, file } = inputOf(kind);
  const chosen = file.files[0];
  if (chosen) return `file:${chosen.name}:${chosen.size}:${chosen.lastModified}`;
  const value = text.value.trim();
  return value ? `text:${value}` : "";
}

function refreshInput(kind) {
  const { box, text, file } = inputOf(kind);
  const chosen = file.files[0];
  const asset = saved.get(kind);
  const chosenNode = field(box, "chosen");
  setText(chosenNode, chosen ? t("workbench.file_chosen", { name: chosen.name }) : "");
  show(chosenNode, Boolean(chosen));
  show(box.querySelector("[data-action=clear-file]"), Boolean(chosen));
  show(field(box, "saved"), Boolean(asset));
  if (asset) {
    setText(
      field(box, "saved-text"),
      asset.source === "image" && !asset.preview
        ? t("workbench.saved_screenshot")
        : t("workbench.saved_using", { preview: asset.preview ?? "", chars: asset.chars ?? 0 }),
    );
  }
  text.disabled = Boolean(chosen || asset);
  file.disabled = Boolean(asset);
}

function setupInputs() {
  for (const kind of KINDS) {
    const { box, text, file } = inputOf(kind);
    file.addEventListener("change", () => {
      showError(kind, "");
      refreshInput(kind);
    });
    text.addEventListener("input", () => showError(kind, ""));
    box.querySelector("[data-action=clear-file]").addEventListener("click", () => {
      file.value = "";
      refreshInput(kind);
    });
    box.querySelector("[data-action=clear-saved]").addEventListener("click", () => {
      saved.delete(kind);
      refreshInput(kind);
    });
    refreshInput(kind);
  }
}

async function assetId(kind, lang) {
  const asset = saved.get(kind);
  if (asset) return asset.id;
  const sig = signature(kind);
  if (!sig) return null;
  const key = `${lang}\u0001${sig}`;
  if (uploaded.has(`${kind}\u0001${key}`)) return uploaded.get(`${kind}\u0001${key}`);
  const { text, file } = inputOf(kind);
  const chosen = file.files[0];
  const id = await api.upload(kind, chosen ? { file: chosen } : { text: text.value }, lang);
  uploaded.set(`${kind}\u0001${key}`, id);
  return id;
}

// --- create ----------------------------------------------------------------------------

async function create(event) {
  event.preventDefault();
  clearErrors();
  const lang = form.elements.lang.value;
  const depth = form.elements.depth.value;
  let missing = false;
  for (const kind of REQUIRED) {
    if (!saved.has(kind) && !signature(kind)) {
      showError(kind, t("workbench.required"));
      missing = true;
    }
  }
  if (missing) return;
  createButton.disabled = true;
  const progress = field(form, "progress");
  setText(progress, t("workbench.uploading"));
  try {
    const ids = {};
    let failed = false;
    await Promise.all(
      KINDS.map(async (kind) => {
        try {
          ids[kind] = await assetId(kind, lang);
        } catch (error) {
          failed = true;
          showError(kind, errorText(error));
        }
      }),
    );
    if (failed) return;
    setText(progress, t("workbench.creating"));
    const request = { resume_id: ids.resume, job_id: ids.jd, lang, depth };
    if (ids.detailed_resume) request.detailed_resume_id = ids.detailed_resume;
    let created;
    try {
      created = await api.createService(request);
    } catch (error) {
      const input = error instanceof api.ApiError ? ASSET_INPUT[error.asset] : undefined;
      showError(input ?? "service", errorText(error));
      return;
    }
    start(created.service_id, {
      depth: created.depth ?? depth,
      withDetailed: Boolean(ids.detailed_resume),
      eventsUrl: created.events_url,
      status: created.status,
      tier: created.tier,
    });
    loadHistory();
  } finally {
    setText(progress, "");
    createButton.disabled = false;
  }
}

// --- the service -----------------------------------------------------------------------

function eventsUrl(serviceId) {
  return `/api/service/${encodeURIComponent(serviceId)}/events`;
}

function remember(serviceId) {
  const url = new URL(location.href);
  url.searchParams.set("service", serviceId);
  window.history.replaceState(null, "", url.pathname + url.search);
  // The language switch keeps the open service.
  for (const link of document.querySelectorAll("[data-testid=lang-switch]")) {
    const target = new URL(link.href, location.href);
    target.searchParams.set("service", serviceId);
    link.href = target.pathname + target.search;
  }
}

function start(serviceId, { depth, withDetailed, eventsUrl: url, status, tier, body }) {
  if (stream) stream.close();
  stream = null;
  view = new ServiceView({ serviceId, depth, withDetailed });
  if (status) view.status = status;
  if (tier) view.tier = tier;
  if (body) view.load(body);
  remember(serviceId);
  for (const card of panel.querySelectorAll("[data-step]")) {
    show(card, view.steps.has(card.dataset.step));
    card.dataset.stepState = "pending";
    field(card, "body").replaceChildren();
  }
  show(panel, true);
  showError("service-panel", "");
  renderAll();
  if (!view.finished) {
    const current = view;
    stream = follow(url ?? eventsUrl(serviceId), {
      lastId: () => current.lastId,
      onEvent: (event) => onEvent(current, event),
      check: () => stillRunning(current),
      onConnection: (state) => {
        if (current !== view) return;
        setText(field(panel, "connection"), state === "open" ? "" : t("workbench.reconnecting"));
      },
    });
  }
}

/** Whether a service whose stream was refused still runs (its status, loaded meanwhile). */
async function stillRunning(current) {
  try {
    const body = await api.getService(current.serviceId);
    if (current !== view) return false;
    current.load(body);
    renderAll();
    if (current.finished) loadHistory();
    return !current.finished;
  } catch (error) {
    return !(error instanceof api.ApiError && error.status === 404);
  }
}

function onEvent(current, event) {
  if (current !== view) return;
  const changed = current.apply(event);
  for (const name of changed) {
    if (name === "service") renderService();
    else renderStep(name);
  }
  if (changed.size) renderCancel();
  if (current.finished && stream) {
    stream.close();
    stream = null;
    setText(field(panel, "connection"), "");
    loadHistory();
  }
}

function renderAll() {
  renderService();
  for (const name of view.steps.keys()) renderStep(name);
  renderCancel();
}

function renderService() {
  const node = field(panel, "status");
  node.dataset.status = view.status;
  const parts = [t(`workbench.service_${view.status}`)];
  if (view.tier) parts.push(t(`workbench.tier_${view.tier}`));
  parts.push(t(`workbench.depth_${view.depth}`));
  setText(node, parts.join(" · "));
  const error = panel.querySelector("[data-testid=error][data-for=service-panel]");
  const code = view.status === "error" ? serviceErrorCode(view.error) : null;
  const message =
    code === "cancelled" ? t("workbench.service_cancelled") : code ? codeText(code, t("workbench.service_failed")) : "";
  setText(error, message);
  show(error, Boolean(message));
}

function serviceErrorCode(error) {
  if (!error) return "internal_error";
  if (typeof error === "string") return error;
  return error.code ?? error.error ?? "internal_error";
}

function renderCancel() {
  show(cancelButton, view.cancellable);
}

function stateText(step) {
  switch (step.status) {
    case "pending":
      return SUMMARY_STEPS.includes(step.step)
        ? t("workbench.state_pending")
        : t("workbench.state_waiting_summaries");
    case "queued":
      return t("workbench.state_queued");
    case "running":
      return step.model ? t("workbench.state_running_on", { model: step.model }) : t("workbench.state_running");
    case "done":
      return step.degraded ? t("workbench.state_degraded") : t("workbench.state_done");
    case "cancelled":
      return t("workbench.state_cancelled");
    case "stopped":
      return t("workbench.state_stopped");
    default:
      return t("workbench.state_error");
  }
}

function renderStep(name) {
  const card = panel.querySelector(`[data-step="${name}"]`);
  const step = view.steps.get(name);
  if (!card || !step) return;
  const state = field(card, "state");
  state.dataset.state = step.status;
  setText(state, stateText(step));
  card.dataset.stepState = step.status;
  const position = field(card, "position");
  const waiting = step.status === "queued" && Number.isFinite(step.position);
  if (waiting) {
    const where = t("workbench.position", { position: step.position });
    setText(
      position,
      Number.isFinite(step.expectedWaitS)
        ? `${where} · ${t("workbench.expected_wait", { seconds: step.expectedWaitS })}`
        : where,
    );
    position.dataset.position = String(step.position);
  }
  show(position, waiting);
  const body = field(card, "body");
  const shown = view.shown(name);
  const nodes = shown ? RENDERERS[name](shown) : [];
  if (!nodes.length && step.text && step.status !== "done") {
    // Not (yet) readable as the expected JSON: show what the model writes as it is.
    nodes.push(el("pre", { cls: "raw", text: step.text }));
  }
  body.replaceChildren(...nodes);
  const writing = step.status === "running" && STREAMED.has(name);
  body.classList.toggle("writing", writing);
  body.setAttribute("aria-busy", String(writing));
  if (STREAMED.has(name)) body.dataset.streamChars = String(step.text.length);
  const error = field(card, "error");
  const message =
    step.status === "error" && step.error
      ? codeText(step.error.code, step.error.message)
      : step.status === "cancelled"
        ? t("workbench.step_cancelled")
        : step.status === "stopped"
          ? t("workbench.step_stopped")
          : "";
  setText(error, message);
  show(error, Boolean(message));
}

async function cancel() {
  if (!view) return;
  const current = view;
  cancelButton.disabled = true;
  try {
    await api.cancelService(current.serviceId);
    const body = await api.getService(current.serviceId);
    if (current !== view) return;
    current.load(body);
    renderAll();
  } catch (error) {
    if (current === view) showError("service-panel", errorText(error));
  } finally {
    cancelButton.disabled = false;
  }
}

async function reopen(serviceId) {
  try {
    const body = await api.getService(serviceId);
    const withDetailed = (body.steps ?? []).some((s) => s.step === "detailed_resume_summary");
    start(serviceId, { depth: body.depth ?? "c", withDetailed, body });
    panel.scrollIntoView({ block: "start" });
  } catch (error) {
    showError("service", errorText(error));
  }
}

// --- history ---------------------------------------------------------------------------

function when(value) {
  const date = new Date(typeof value === "number" ? value : String(value ?? ""));
  if (Number.isNaN(date.getTime())) return "";
  const locale = document.documentElement.lang === "zh" ? "zh-CN" : "en-GB";
  return date.toLocaleString(locale, { hour12: false });
}

function emptyRow(key) {
  return el("li", { cls: "muted", text: t(key) });
}

async function loadHistory() {
  const services = field(history, "services");
  const assets = field(history, "assets");
  try {
    const [serviceRows, assetRows] = await Promise.all([api.listServices(), api.listAssets()]);
    const byId = new Map(assetRows.map((a) => [a.id, a]));
    services.replaceChildren(
      ...(serviceRows.length
        ? serviceRows.map((s) =>
            el("li", { testid: "history-service", attrs: { "data-service-id": s.service_id } }, [
              el("span", {
                text: t("workbench.history_service_row", {
                  when: when(s.created_at),
                  status: hasText(`workbench.service_${s.status}`) ? t(`workbench.service_${s.status}`) : s.status,
                  depth: t(`workbench.depth_${s.depth}`),
                }),
              }),
              button("workbench.history_open", () => reopen(s.service_id)),
              assetLabel(byId.get(s.job_id)),
            ]),
          )
        : [emptyRow("workbench.history_no_services")]),
    );
    assets.replaceChildren(
      ...(assetRows.length
        ? assetRows.map((a) =>
            el("li", { testid: "history-asset", attrs: { "data-asset-id": a.id, "data-kind": a.kind } }, [
              el("span", {
                text: t("workbench.history_asset_row", {
                  kind: t(`workbench.input_${a.kind}`),
                  chars: a.chars ?? 0,
                  when: when(a.created_at),
                }),
              }),
              button("workbench.history_use", () => useAsset(a)),
              assetLabel(a),
            ]),
          )
        : [emptyRow("workbench.history_no_assets")]),
    );
  } catch (error) {
    const message = el("li", { cls: "error", text: errorText(error) });
    services.replaceChildren(message);
    assets.replaceChildren();
  }
}

/** What an asset says in a history row: its first words, or that it is a screenshot. */
function assetLabel(asset) {
  if (!asset) return null;
  const preview = asset.preview || (asset.source === "image" ? t("workbench.history_screenshot") : "");
  return preview ? el("span", { cls: "preview", text: preview }) : null;
}

function button(key, onClick) {
  const node = el("button", { cls: "link", text: t(key), attrs: { type: "button" } });
  node.addEventListener("click", onClick);
  return node;
}

function useAsset(asset) {
  if (!KINDS.includes(asset.kind)) return;
  saved.set(asset.kind, asset);
  showError(asset.kind, "");
  refreshInput(asset.kind);
  inputOf(asset.kind).box.scrollIntoView({ block: "nearest" });
}

// --- start -----------------------------------------------------------------------------

setupInputs();
form.addEventListener("submit", create);
cancelButton.addEventListener("click", cancel);
loadHistory();
const opened = new URLSearchParams(location.search).get("service");
if (opened) reopen(opened);
