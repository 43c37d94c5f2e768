// The workbench's calls to the API: uploads, services, history. Same-origin `fetch`: the
// browser sends the session or trial cookie and, on POST and DELETE, its `Origin`, which
// the server's cross-site check requires. Errors come back in the page's language
// (`?lang=`), as `ApiError` with the body's code, message and the input (`asset`) they
// concern.

const pageLang = document.documentElement.lang || "en";

export const UPLOAD_PATHS = {
  resume: "/api/upload/resume",
  detailed_resume: "/api/upload/detailed-resume",
  jd: "/api/upload/jd",
};
export const ID_FIELDS = { resume: "resume_id", detailed_resume: "detailed_resume_id", jd: "job_id" };

export class ApiError extends Error {
  /**
   * @param {number} status the HTTP status (0: the server could not be reached).
   * @param {object} body the error body: `error`, `message`, and its parameters.
   */
  constructor(status, body) {
    super(body.message || body.error || String(status));
    this.status = status;
    this.body = body;
    this.code = body.error || "internal_error";
    this.asset = body.asset ?? null;
  }
}

function withLang(path) {
  const url = new URL(path, location.href);
  url.searchParams.set("lang", pageLang);
  return url.pathname + url.search;
}

async function call(method, path, { json, form } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  let reply;
  try {
    reply = await fetch(withLang(path), init);
  } catch {
    throw new ApiError(0, { error: "network" });
  }
  let body = {};
  try {
    body = await reply.json();
  } catch {
    body = {};
  }
  if (!reply.ok) throw new ApiError(reply.status, body ?? {});
  return body;
}

/**
 * Upload one input: pasted text (JSON) or a file (multipart: PDF, DOCX, text, or a JD
 * screenshot).
 *
 * @param {"resume"|"detailed_resume"|"jd"} kind which input.
 * @param {{text?: string, file?: File}} input the text or the file.
 * @param {string} lang the language the document is written in (the service's).
 * @returns {Promise<string>} the new asset's id.
 */
export async function upload(kind, { text, file }, lang) {
  let body;
  if (file) {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("lang", lang);
    body = await call("POST", UPLOAD_PATHS[kind], { form });
  } else {
    body = await call("POST", UPLOAD_PATHS[kind], { json: { text, lang } });
  }
  return body[ID_FIELDS[kind]];
}

/** `POST /api/service/create`: the service's `{service_id, events_url, …}`. */
export function createService(request) {
  return call("POST", "/api/service/create", { json: request });
}

/** `GET /api/service/{id}`: status, steps and their results. */
export function getService(serviceId) {
  return call("GET", `/api/service/${encodeURIComponent(serviceId)}`);
}

/** `DELETE /api/service/{id}`: cancels what has not started. */
export function cancelService(serviceId) {
  return call("DELETE", `/api/service/${encodeURIComponent(serviceId)}`);
}

/** `GET /api/services`: the caller's services, newest first. */
export async function listServices() {
  return (await call("GET", "/api/services")).services ?? [];
}

/** `GET /api/assets`: the caller's saved inputs, newest first. */
export async function listAssets() {
  return (await call("GET", "/api/assets")).assets ?? [];
}
