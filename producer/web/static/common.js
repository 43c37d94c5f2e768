// Every page: texts from the dictionaries (embedded by the server) and the language switch.
const node = document.getElementById("texts");
const texts = node ? JSON.parse(node.textContent) : {};

/** The page language's text for `key`, `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const template = texts[key];
  if (template === undefined) {
    throw new Error(`missing text: ${key}`);
  }
  return template.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : ""));
}

/** Whether the dictionaries have `key` (for codes that come from the server). */
export function hasText(key) {
  return Object.prototype.hasOwnProperty.call(texts, key);
}

/** A duration in ms as the dictionaries write it. */
export function formatMs(value) {
  if (value === null || value === undefined) return t("common.none");
  if (value < 1000) return t("common.unit_ms", { n: Math.round(value) });
  return t("common.unit_s", { n: (value / 1000).toFixed(1) });
}

/** A wall-clock time (digits only) in the page's language. */
export function clock(ms) {
  const locale = document.documentElement.lang === "zh" ? "zh-CN" : "en-GB";
  return new Date(ms).toLocaleTimeString(locale, { hour12: false });
}

// The switch is a plain link to the other language's page; remembering the choice in the
// `lang` cookie makes the paths without a locale (`/`, `/queues`) go there next time.
for (const link of document.querySelectorAll("[data-testid=lang-switch]")) {
  link.addEventListener("click", () => {
    const secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = `lang=${link.dataset.lang}; Path=/; Max-Age=31536000; SameSite=Lax${secure}`;
  });
}
