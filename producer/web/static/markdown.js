// A small, safe Markdown renderer for model output (the customized résumé).
//
// It knows headings, bullet and numbered lists (nested by indentation), bold, italic,
// inline code, fenced code, rules and paragraphs. Everything else is text: it builds DOM
// nodes with createElement and text nodes only, never innerHTML, so `<script>`, HTML
// tags, links and images in the model's output show as the characters they are.

const FENCE = /^\s{0,3}(```|~~~)/;
const HEADING = /^\s{0,3}(#{1,6})(?:\s+(.*?))?\s*$/;
const RULE = /^\s{0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const ITEM = /^(\s*)([-*+]|(\d{1,9})[.)])\s+(.*)$/;
const ESCAPABLE = /[\\`*_#+\-.!()[\]{}<>|~]/;

function isSpace(c) {
  return c === undefined || /\s/.test(c);
}

function isWord(c) {
  return c !== undefined && /[\p{L}\p{N}]/u.test(c);
}

// Where the emphasis opened at `open` (by `marker`, `*`/`_` once or twice) closes; -1 if not.
function closing(src, marker, open) {
  const c = marker[0];
  let j = open;
  for (;;) {
    j = src.indexOf(marker, j);
    if (j === -1) return -1;
    const doubled = marker.length === 1 && (src[j + 1] === c || src[j - 1] === c);
    if (j > open && !isSpace(src[j - 1]) && !doubled && (c !== "_" || !isWord(src[j + marker.length]))) {
      return j;
    }
    j += marker.length;
  }
}

/**
 * Inline Markdown as a tree: `{t: "text", v}`, `{t: "code", v}`, `{t: "strong"|"em", c: [...]}`.
 *
 * @param {string} src one line or paragraph of text.
 * @returns {Array<object>} the nodes.
 */
export function parseInline(src) {
  const out = [];
  let text = "";
  const flush = () => {
    if (text) out.push({ t: "text", v: text });
    text = "";
  };
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === "\\" && ESCAPABLE.test(src[i + 1] ?? "")) {
      text += src[i + 1];
      i += 2;
      continue;
    }
    if (c === "`") {
      const end = src.indexOf("`", i + 1);
      if (end > i + 1) {
        flush();
        out.push({ t: "code", v: src.slice(i + 1, end) });
        i = end + 1;
        continue;
      }
    }
    if (c === "*" || c === "_") {
      const run = src[i + 1] !== c ? 1 : src[i + 2] !== c ? 2 : 3;
      const marker = c.repeat(run);
      const open = i + run;
      const canOpen = !isSpace(src[open]) && (c !== "_" || !isWord(src[i - 1]));
      const close = canOpen ? closing(src, marker, open) : -1;
      if (close > open) {
        flush();
        const inner = parseInline(src.slice(open, close));
        if (run === 3) out.push({ t: "strong", c: [{ t: "em", c: inner }] });
        else out.push({ t: run === 2 ? "strong" : "em", c: inner });
        i = close + run;
        continue;
      }
      text += marker;
      i += marker.length;
      continue;
    }
    text += c;
    i += 1;
  }
  flush();
  return out;
}

/**
 * Markdown blocks as a tree: `heading {level, c}`, `para {lines: [inline]}`, `list {ordered,
 * start, items: [{c, lists: [list]}]}`, `pre {v}`, `rule`.
 *
 * @param {string} src the Markdown text.
 * @returns {Array<object>} the blocks.
 */
export function parseMarkdown(src) {
  const lines = String(src ?? "").replace(/\r\n?/g, "\n").split("\n");
  const blocks = [];
  let para = null;
  let stack = []; // open lists: {indent, list}
  const closeAll = () => {
    para = null;
    stack = [];
  };
  for (let n = 0; n < lines.length; n += 1) {
    const line = lines[n];
    if (!line.trim()) {
      para = null;
      // A blank line inside a list keeps it open only if an item follows.
      if (stack.length && !ITEM.test(lines[n + 1] ?? "")) stack = [];
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      closeAll();
      const body = [];
      n += 1;
      while (n < lines.length && !lines[n].trimStart().startsWith(fence[1])) {
        body.push(lines[n]);
        n += 1;
      }
      blocks.push({ t: "pre", v: body.join("\n") });
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      closeAll();
      const words = (heading[2] ?? "").replace(/\s+#+$/, "");
      blocks.push({ t: "heading", level: heading[1].length, c: parseInline(words) });
      continue;
    }
    if (RULE.test(line)) {
      closeAll();
      blocks.push({ t: "rule" });
      continue;
    }
    const item = ITEM.exec(line);
    if (item) {
      para = null;
      const indent = item[1].replace(/\t/g, "    ").length;
      const ordered = item[3] !== undefined;
      while (stack.length > 1 && stack[stack.length - 1].indent > indent) stack.pop();
      let top = stack[stack.length - 1];
      if (top && indent > top.indent && top.list.items.length) {
        const parent = top.list.items[top.list.items.length - 1];
        const list = { t: "list", ordered, start: ordered ? Number(item[3]) : 1, items: [] };
        parent.lists.push(list);
        top = { indent, list };
        stack.push(top);
      } else if (!top || top.list.ordered !== ordered) {
        const list = { t: "list", ordered, start: ordered ? Number(item[3]) : 1, items: [] };
        if (top && stack.length > 1) {
          stack.pop();
          const parent = stack[stack.length - 1].list.items.at(-1);
          parent.lists.push(list);
        } else {
          blocks.push(list);
          stack = [];
        }
        top = { indent, list };
        stack.push(top);
      }
      top.list.items.push({ c: parseInline(item[4]), lists: [] });
      continue;
    }
    if (stack.length && /^\s/.test(line)) {
      // An indented line right after an item continues that item.
      const last = stack[stack.length - 1].list.items.at(-1);
      last.c.push({ t: "text", v: " " }, ...parseInline(line.trim()));
      continue;
    }
    stack = [];
    if (para) {
      para.lines.push(parseInline(line.trim()));
    } else {
      para = { t: "para", lines: [parseInline(line.trim())] };
      blocks.push(para);
    }
  }
  return blocks;
}

function inlineNodes(doc, nodes) {
  const out = [];
  for (const node of nodes) {
    if (node.t === "text") {
      out.push(doc.createTextNode(node.v));
    } else if (node.t === "code") {
      const code = doc.createElement("code");
      code.textContent = node.v;
      out.push(code);
    } else {
      const el = doc.createElement(node.t);
      el.append(...inlineNodes(doc, node.c));
      out.push(el);
    }
  }
  return out;
}

function listNode(doc, list, offset) {
  const el = doc.createElement(list.ordered ? "ol" : "ul");
  if (list.ordered && list.start !== 1) el.setAttribute("start", String(list.start));
  for (const item of list.items) {
    const li = doc.createElement("li");
    li.append(...inlineNodes(doc, item.c));
    for (const sub of item.lists) li.append(listNode(doc, sub, offset));
    el.append(li);
  }
  return el;
}

/**
 * Markdown as DOM nodes, safely (text nodes only).
 *
 * @param {string} src the Markdown text.
 * @param {{headingOffset?: number, doc?: Document}} options `headingOffset` moves heading
 *   levels down (`#` → `<h3>` with 2) so a document's headings sit under the page's own.
 * @returns {DocumentFragment} the rendered blocks.
 */
export function renderMarkdown(src, { headingOffset = 0, doc = document } = {}) {
  const fragment = doc.createDocumentFragment();
  for (const block of parseMarkdown(src)) {
    if (block.t === "heading") {
      const el = doc.createElement(`h${Math.min(6, block.level + headingOffset)}`);
      el.append(...inlineNodes(doc, block.c));
      fragment.append(el);
    } else if (block.t === "para") {
      const p = doc.createElement("p");
      block.lines.forEach((line, index) => {
        if (index) p.append(doc.createElement("br"));
        p.append(...inlineNodes(doc, line));
      });
      fragment.append(p);
    } else if (block.t === "list") {
      fragment.append(listNode(doc, block, headingOffset));
    } else if (block.t === "pre") {
      const pre = doc.createElement("pre");
      const code = doc.createElement("code");
      code.textContent = block.v;
      pre.append(code);
      fragment.append(pre);
    } else if (block.t === "rule") {
      fragment.append(doc.createElement("hr"));
    }
  }
  return fragment;
}
