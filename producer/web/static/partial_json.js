// JSON read as it streams: the value so far of a text that may stop anywhere.
//
// A model writes its answer one token batch at a time, so the page holds e.g.
// `{"match_score": 80, "strengths": [{"point": "Pyth`. `parsePartial` returns what is
// already certain: `{match_score: 80, strengths: [{point: "Pyth"}]}`. A string cut short
// is kept as far as it goes (the text grows on screen as it is written); a number, `true`,
// `false` or `null` cut short is left out (`8` may yet become `80`), and so is a key whose
// value has not begun. Text before the first `{` (a code fence, a sentence) is skipped, and
// anything that is not JSON ends the reading there: the caller gets what came before.

const WHITESPACE = new Set([" ", "\t", "\n", "\r"]);
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const LITERALS = [
  ["true", true],
  ["false", false],
  ["null", null],
];

class Reader {
  constructor(text, start) {
    this.text = text;
    this.at = start;
  }

  skipSpace() {
    while (this.at < this.text.length && WHITESPACE.has(this.text[this.at])) this.at += 1;
  }

  get ended() {
    return this.at >= this.text.length;
  }

  // Each reader returns { value, complete }; value is undefined when nothing is certain.
  value() {
    this.skipSpace();
    if (this.ended) return { value: undefined, complete: false };
    const c = this.text[this.at];
    if (c === "{") return this.object();
    if (c === "[") return this.array();
    if (c === '"') return this.string();
    if (c === "-" || (c >= "0" && c <= "9")) return this.number();
    return this.literal();
  }

  object() {
    const out = {};
    this.at += 1;
    for (;;) {
      this.skipSpace();
      if (this.ended) return { value: out, complete: false };
      if (this.text[this.at] === "}") {
        this.at += 1;
        return { value: out, complete: true };
      }
      if (this.text[this.at] !== '"') return { value: out, complete: false, broken: true };
      const key = this.string();
      if (!key.complete) return { value: out, complete: false };
      this.skipSpace();
      if (this.ended) return { value: out, complete: false };
      if (this.text[this.at] !== ":") return { value: out, complete: false, broken: true };
      this.at += 1;
      const item = this.value();
      if (item.value !== undefined) out[key.value] = item.value;
      if (!item.complete) return { value: out, complete: false, broken: item.broken };
      const stop = this.afterItem(out, "}");
      if (stop) return stop;
    }
  }

  array() {
    const out = [];
    this.at += 1;
    for (;;) {
      this.skipSpace();
      if (this.ended) return { value: out, complete: false };
      if (this.text[this.at] === "]") {
        this.at += 1;
        return { value: out, complete: true };
      }
      const item = this.value();
      if (item.value !== undefined) out.push(item.value);
      if (!item.complete) return { value: out, complete: false, broken: item.broken };
      const stop = this.afterItem(out, "]");
      if (stop) return stop;
    }
  }

  // After an object's or array's item: a comma goes on to the next one and `close` is left
  // for the loop to see (null: carry on); the end of the text or anything else stops it.
  afterItem(out, close) {
    this.skipSpace();
    if (this.ended) return { value: out, complete: false };
    const next = this.text[this.at];
    if (next === ",") {
      this.at += 1;
      return null;
    }
    return next === close ? null : { value: out, complete: false, broken: true };
  }

  string() {
    let out = "";
    this.at += 1;
    while (this.at < this.text.length) {
      const c = this.text[this.at];
      if (c === '"') {
        this.at += 1;
        return { value: out, complete: true };
      }
      if (c !== "\\") {
        out += c;
        this.at += 1;
        continue;
      }
      const code = this.text[this.at + 1];
      if (code === undefined) break; // a backslash at the very end: wait for the rest
      if (code === "u") {
        const hex = this.text.slice(this.at + 2, this.at + 6);
        if (hex.length < 4) break;
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) return { value: out, complete: false, broken: true };
        out += String.fromCharCode(parseInt(hex, 16));
        this.at += 6;
        continue;
      }
      if (!(code in ESCAPES)) return { value: out, complete: false, broken: true };
      out += ESCAPES[code];
      this.at += 2;
    }
    this.at = this.text.length;
    // A lone high surrogate (the first half of a \uXXXX pair) waits for its partner.
    if (/[\ud800-\udbff]$/.test(out)) out = out.slice(0, -1);
    return { value: out, complete: false };
  }

  number() {
    NUMBER.lastIndex = this.at;
    const match = NUMBER.exec(this.text);
    if (!match) {
      // `-` alone at the end is the start of a number; anything else is not JSON.
      const cut = this.text.slice(this.at) === "-";
      this.at = this.text.length;
      return { value: undefined, complete: false, broken: !cut };
    }
    const end = this.at + match[0].length;
    // Digits up to the end of the text may go on (`8` → `80`), and so may `1.` or `1e`.
    if (end >= this.text.length || /[.eE]/.test(this.text[end])) {
      const rest = this.text.slice(end);
      if (end >= this.text.length || /^[.eE][+-]?$/.test(rest)) {
        this.at = this.text.length;
        return { value: undefined, complete: false };
      }
    }
    this.at = end;
    return { value: Number(match[0]), complete: true };
  }

  literal() {
    const rest = this.text.slice(this.at, this.at + 5);
    for (const [word, value] of LITERALS) {
      if (rest.startsWith(word)) {
        this.at += word.length;
        return { value, complete: true };
      }
      if (word.startsWith(rest) && this.at + rest.length >= this.text.length) {
        this.at = this.text.length;
        return { value: undefined, complete: false };
      }
    }
    return { value: undefined, complete: false, broken: true };
  }
}

/**
 * The JSON value that a possibly unfinished text has written so far.
 *
 * @param {string} text the streamed text (a JSON object, maybe after some other text).
 * @returns {{value: (object|undefined), complete: boolean, broken: boolean}} the object so
 *   far (undefined before its `{`), whether it is closed, and whether the text stopped being
 *   JSON somewhere (what came before is kept).
 */
export function parsePartial(text) {
  const start = typeof text === "string" ? text.indexOf("{") : -1;
  if (start < 0) return { value: undefined, complete: false, broken: false };
  const read = new Reader(text, start).object();
  return { value: read.value, complete: read.complete, broken: Boolean(read.broken) };
}
