// The workbench's results as readable sections: summaries, the job match, the customized
// résumé and the interview preparation. Each renderer takes a result (or the part of it
// streamed so far) and returns DOM nodes built from text nodes only: no innerHTML, so
// whatever a model writes shows as text.
import { t } from "slotline/common";
import { renderMarkdown } from "slotline/markdown";

/** An element with a class, a text or children, a `data-testid`, and attributes. */
export function el(tag, { cls, text, testid, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (testid) node.dataset.testid = testid;
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, String(value));
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const child of children) if (child) node.append(child);
  return node;
}

function str(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value.trim() : typeof value === "number" ? String(value) : "";
}

function list(value) {
  return Array.isArray(value) ? value : [];
}

function section(titleKey, children) {
  const body = children.filter(Boolean);
  if (!body.length) return null;
  return el("section", { cls: "part" }, [el("h4", { text: t(titleKey) }), ...body]);
}

function bullets(items, cls = "bullets") {
  const shown = list(items).map(str).filter(Boolean);
  if (!shown.length) return null;
  return el("ul", { cls }, shown.map((item) => el("li", { text: item })));
}

/** Text with blank-line paragraphs and line breaks kept (a script to read aloud). */
function paragraphs(value) {
  const text = str(value);
  if (!text) return null;
  const box = el("div", { cls: "prose" });
  for (const block of text.split(/\n\s*\n/)) {
    const p = el("p");
    block.split("\n").forEach((line, index) => {
      if (index) p.append(el("br"));
      p.append(document.createTextNode(line));
    });
    box.append(p);
  }
  return box;
}

function joined(values, separator = " · ") {
  return values.map(str).filter(Boolean).join(separator);
}

function entries(items) {
  const shown = list(items).filter((item) => item && typeof item === "object");
  if (!shown.length) return null;
  return el(
    "ul",
    { cls: "entries" },
    shown.map((item) => {
      const title = joined([item.role ?? item.degree ?? item.name ?? item.title, item.company ?? item.school]);
      const li = el("li", {}, [
        title ? el("strong", { text: title }) : null,
        str(item.duration) ? el("span", { cls: "muted", text: ` ${str(item.duration)}` }) : null,
        str(item.description) ? el("p", { text: str(item.description) }) : null,
        bullets(item.highlights),
      ]);
      return li;
    }),
  );
}

function degraded(result) {
  return [
    el("p", { cls: "note", text: t("workbench.degraded_note") }),
    bullets(result.bullets),
  ];
}

/**
 * A résumé or detailed résumé summary (AssetSummary) as sections.
 *
 * @param {object} result the step's result.
 * @returns {Node[]} the nodes to show.
 */
export function assetSummary(result) {
  if (!result || typeof result !== "object") return [];
  if (result.degraded) return degraded(result);
  const header = result.header && typeof result.header === "object" ? result.header : {};
  const contacts = joined([
    header.email,
    header.phone,
    header.linkedin,
    header.github,
    ...list(header.other_contacts),
  ]);
  const extra = list(result.extra_sections)
    .filter((s) => s && typeof s === "object" && str(s.title))
    .map((s) => el("section", { cls: "part" }, [el("h4", { text: str(s.title) }), bullets(s.items)]));
  return [
    str(header.name) ? el("p", { cls: "name", text: str(header.name) }) : null,
    str(header.headline) ? el("p", { cls: "muted", text: str(header.headline) }) : null,
    contacts ? el("p", { cls: "contacts", text: contacts }) : null,
    section("workbench.sec_summary", [paragraphs(result.summary)]),
    section("workbench.sec_experience", [entries(result.experience)]),
    section("workbench.sec_projects", [entries(result.projects)]),
    section("workbench.sec_education", [entries(result.education)]),
    section("workbench.sec_skills", [bullets(result.skills, "chips")]),
    section("workbench.sec_certifications", [bullets(result.certifications)]),
    section("workbench.sec_languages", [bullets(result.languages)]),
    ...extra,
  ].filter(Boolean);
}

/**
 * A job description summary (JobSummary) as sections.
 *
 * @param {object} result the step's result.
 * @returns {Node[]} the nodes to show.
 */
export function jobSummary(result) {
  if (!result || typeof result !== "object") return [];
  if (result.degraded) return degraded(result);
  const meta = joined([result.company, result.location]);
  return [
    str(result.jobTitle) ? el("p", { cls: "name", text: str(result.jobTitle) }) : null,
    meta ? el("p", { cls: "muted", text: meta }) : null,
    paragraphs(result.summary),
    section("workbench.sec_must_haves", [bullets(result.mustHaves)]),
    section("workbench.sec_nice_to_haves", [bullets(result.niceToHaves)]),
  ].filter(Boolean);
}

function pairs(items, first, second, secondKey) {
  const shown = list(items).filter((item) => item && typeof item === "object" && str(item[first]));
  if (!shown.length) return null;
  return el(
    "ul",
    { cls: "entries" },
    shown.map((item) =>
      el("li", {}, [
        el("strong", { text: str(item[first]) }),
        str(item[second])
          ? el("p", { cls: "muted", text: t(secondKey, { text: str(item[second]) }) })
          : null,
      ]),
    ),
  );
}

/** The match score as a number 0-100, or null while it is not written yet. */
export function score(result) {
  const value = result && typeof result === "object" ? result.match_score : undefined;
  if (typeof value !== "number" || !Number.isFinite(value)) return null;
  return Math.max(0, Math.min(100, Math.round(value)));
}

/**
 * The job match (JobMatch), complete or as far as it is streamed.
 *
 * @param {object} result the result, or the partial object read from the stream.
 * @returns {Node[]} the nodes to show.
 */
export function jobMatch(result) {
  if (!result || typeof result !== "object") return [];
  const value = score(result);
  const head =
    value === null
      ? null
      : el("div", { cls: "score" }, [
          el("span", { cls: "label", text: t("workbench.score_label") }),
          el("strong", {
            testid: "match-score",
            attrs: { "data-score": value },
            text: t("workbench.score_of", { score: value }),
          }),
          el("meter", { attrs: { min: 0, max: 100, low: 50, high: 75, optimum: 100, value } }),
        ]);
  return [
    head,
    paragraphs(result.overall_assessment),
    section("workbench.sec_strengths", [
      pairs(result.strengths, "point", "evidence", "workbench.evidence"),
    ]),
    section("workbench.sec_weaknesses", [
      pairs(result.weaknesses, "point", "suggestion", "workbench.suggestion"),
    ]),
    section("workbench.sec_cover_letter", [paragraphs(result.cover_letter_script)]),
  ].filter(Boolean);
}

/**
 * The customized résumé: its Markdown rendered, and what was changed and why.
 *
 * @param {object} result the result (or the streamed part).
 * @returns {Node[]} the nodes to show.
 */
export function customizedResume(result) {
  if (!result || typeof result !== "object") return [];
  if (result.degraded) return degraded(result);
  const markdown = str(result.customized_resume_markdown);
  const changes = list(result.customization_summary).filter(
    (c) => c && typeof c === "object" && str(c.section),
  );
  return [
    markdown ? el("div", { cls: "markdown" }, [renderMarkdown(markdown, { headingOffset: 3 })]) : null,
    section("workbench.sec_changes", [
      changes.length
        ? el(
            "ul",
            { cls: "entries" },
            changes.map((c) =>
              el("li", {}, [
                el("strong", { text: str(c.section) }),
                str(c.change_reason) ? el("p", { cls: "muted", text: str(c.change_reason) }) : null,
              ]),
            ),
          )
        : null,
    ]),
  ].filter(Boolean);
}

/**
 * The interview preparation, complete or as far as it is streamed.
 *
 * @param {object} result the result, or the partial object read from the stream.
 * @returns {Node[]} the nodes to show.
 */
export function interviewPrep(result) {
  if (!result || typeof result !== "object") return [];
  return [
    section("workbench.sec_self_introduction", [paragraphs(result.self_introduction_script)]),
    section("workbench.sec_questions", [
      pairs(result.potential_questions, "question", "answer_guideline", "workbench.answer_guideline"),
    ]),
    section("workbench.sec_reverse_questions", [bullets(result.reverse_questions)]),
  ].filter(Boolean);
}

/** The renderer of each step's result. */
export const RENDERERS = {
  resume_summary: assetSummary,
  detailed_resume_summary: assetSummary,
  job_summary: jobSummary,
  job_match: jobMatch,
  resume_customize: customizedResume,
  interview_prep: interviewPrep,
};
