// The engine's prelude: the web APIs a Supabase-style function uses, on top of QuickJS-ng.
// hive/js/engine.py concatenates these files in name order into one factory function,
//   (function (native) { "use strict"; <files> })
// which glue.c calls once per instance with its C natives (write, encode, decode, digest, hmac,
// random, env). Whatever a file adds to `api` is how the C side drives the instance: dispatch,
// nextTimer, fireTimer, endInvocation, formatError, hasHandler.

const api = {};
const G = globalThis;
const kInternal = Symbol("internal");

function defineGlobal(name, value) {
  Object.defineProperty(G, name, { value, writable: true, configurable: true, enumerable: false });
}

function defineGlobals(table) {
  for (const name of Object.keys(table)) defineGlobal(name, table[name]);
}

// A BufferSource as a Uint8Array over the same memory (no copy).
function toU8(data, what = "The data") {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof SharedArrayBuffer !== "undefined" && data instanceof SharedArrayBuffer) return new Uint8Array(data);
  throw new TypeError(`${what} must be an ArrayBuffer or an ArrayBufferView (such as a Uint8Array)`);
}

function copyU8(data, what) {
  return toU8(data, what).slice();
}

function concatU8(chunks) {
  if (chunks.length === 1) return chunks[0];
  let n = 0;
  for (const c of chunks) n += c.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

// --- DOMException ---

const DOM_CODES = {
  IndexSizeError: 1, HierarchyRequestError: 3, WrongDocumentError: 4, InvalidCharacterError: 5,
  NoModificationAllowedError: 7, NotFoundError: 8, NotSupportedError: 9, InvalidStateError: 11,
  SyntaxError: 12, InvalidModificationError: 13, NamespaceError: 14, InvalidAccessError: 15,
  TypeMismatchError: 17, SecurityError: 18, NetworkError: 19, AbortError: 20, URLMismatchError: 21,
  QuotaExceededError: 22, TimeoutError: 23, InvalidNodeTypeError: 24, DataCloneError: 25,
};

class DOMException extends Error {
  #name;
  #code;
  constructor(message = "", name = "Error") {
    super(String(message));
    this.#name = String(name);
    this.#code = DOM_CODES[this.#name] ?? 0;
  }
  get name() { return this.#name; }
  get code() { return this.#code; }
}
for (const [name, code] of Object.entries(DOM_CODES)) {
  const constName = name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase().replace(/_ERROR$/, "_ERR");
  Object.defineProperty(DOMException, constName, { value: code, enumerable: true });
}

// --- Event and EventTarget (what AbortSignal needs) ---

const kStop = Symbol("stop");
const kTarget = Symbol("target");
const kListeners = Symbol("listeners");

class Event {
  #type;
  #cancelable;
  #defaultPrevented = false;
  constructor(type, init = {}) {
    if (arguments.length === 0) throw new TypeError("Event: the type argument is required");
    this.#type = String(type);
    this.#cancelable = !!init?.cancelable;
    this.bubbles = !!init?.bubbles;
    this.composed = !!init?.composed;
    this.timeStamp = performance.now();
    this[kTarget] = null;
    this[kStop] = false;
  }
  get type() { return this.#type; }
  get target() { return this[kTarget]; }
  get currentTarget() { return this[kTarget]; }
  get cancelable() { return this.#cancelable; }
  get defaultPrevented() { return this.#defaultPrevented; }
  get isTrusted() { return false; }
  preventDefault() { if (this.#cancelable) this.#defaultPrevented = true; }
  stopPropagation() {}
  stopImmediatePropagation() { this[kStop] = true; }
  composedPath() { return this[kTarget] ? [this[kTarget]] : []; }
}

class CustomEvent extends Event {
  #detail;
  constructor(type, init = {}) {
    super(type, init);
    this.#detail = init?.detail ?? null;
  }
  get detail() { return this.#detail; }
}

function listenerOptions(options) {
  return typeof options === "boolean" ? { capture: options } : (options ?? {});
}

class EventTarget {
  constructor() {
    Object.defineProperty(this, kListeners, { value: new Map() });
  }
  addEventListener(type, listener, options) {
    if (listener == null) return;
    const opts = listenerOptions(options);
    const capture = !!opts.capture;
    let list = this[kListeners].get(type);
    if (!list) this[kListeners].set(type, (list = []));
    if (list.some((l) => l.listener === listener && l.capture === capture)) return;
    const signal = opts.signal;
    if (signal?.aborted) return;
    list.push({ listener, capture, once: !!opts.once });
    signal?.addEventListener("abort", () => this.removeEventListener(type, listener, { capture }));
  }
  removeEventListener(type, listener, options) {
    const list = this[kListeners].get(type);
    if (!list) return;
    const capture = !!listenerOptions(options).capture;
    const i = list.findIndex((l) => l.listener === listener && l.capture === capture);
    if (i >= 0) list.splice(i, 1);
  }
  dispatchEvent(event) {
    if (!(event instanceof Event)) throw new TypeError("dispatchEvent: the argument is not an Event");
    event[kTarget] = this;
    const list = this[kListeners].get(event.type);
    for (const l of list ? list.slice() : []) {
      if (l.once) this.removeEventListener(event.type, l.listener, { capture: l.capture });
      try {
        if (typeof l.listener === "function") l.listener.call(this, event);
        else l.listener.handleEvent(event);
      } catch (e) {
        reportError(e);
      }
      if (event[kStop]) break;
    }
    return !event.defaultPrevented;
  }
}

// --- inspecting values for console.* and error messages ---

const customInspect = Symbol.for("Deno.customInspect");
const nodeInspect = Symbol.for("nodejs.util.inspect.custom");
const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const MAX_DEPTH = 4;
const MAX_ITEMS = 100;

function formatError(e, depth = 0) {
  if (e === null || typeof e !== "object" || !("message" in e || "stack" in e)) return inspect(e);
  let head;
  try {
    const name = e.name === undefined ? "Error" : String(e.name);
    const message = e.message === undefined ? "" : String(e.message);
    head = message ? `${name}: ${message}` : name;
  } catch {
    head = "Error";
  }
  let stack = "";
  try {
    stack = typeof e.stack === "string" ? e.stack.replace(/\s+$/, "") : "";
  } catch {}
  // The prelude's own frames say nothing about the function (unless there are no others).
  const own = stack.split("\n").filter((line) => !line.includes("(hive:prelude:"));
  if (own.some((line) => line.trim().startsWith("at "))) stack = own.join("\n");
  // QuickJS's stack lists the frames only; other engines' start with the "Name: message" line.
  let out = stack && !stack.startsWith(head) ? `${head}\n${stack}` : stack || head;
  if (depth < 3 && e.cause !== undefined) out += `\nCaused by: ${formatError(e.cause, depth + 1)}`;
  if (depth < 3 && Array.isArray(e.errors)) {
    for (const inner of e.errors.slice(0, 10)) out += `\n  ${formatError(inner, depth + 1).replace(/\n/g, "\n  ")}`;
  }
  return out;
}

function inspect(value, opts = {}) {
  return fmt(value, 0, [], opts.depth ?? MAX_DEPTH, true);
}

function quote(s) {
  return JSON.stringify(s);
}

function ctorName(v) {
  try {
    const proto = Object.getPrototypeOf(v);
    if (proto === null) return "[Object: null prototype]";
    const name = proto.constructor?.name;
    return typeof name === "string" ? name : "";
  } catch {
    return "";
  }
}

function joinItems(open, items, close, indent) {
  if (items.length === 0) return `${open}${close}`;
  const one = `${open} ${items.join(", ")} ${close}`;
  if (one.length <= 76 && !one.includes("\n")) return one;
  const pad = "  ".repeat(indent + 1);
  return `${open}\n${pad}${items.map((s) => s.replace(/\n/g, `\n${pad}`)).join(`,\n${pad}`)}\n${"  ".repeat(indent)}${close}`;
}

function fmt(v, level, seen, maxDepth, top) {
  switch (typeof v) {
    case "string":
      return top ? v : quote(v);
    case "number":
      return Object.is(v, -0) ? "-0" : String(v);
    case "bigint":
      return `${v}n`;
    case "boolean":
    case "undefined":
      return String(v);
    case "symbol":
      return v.toString();
    case "function": {
      const src = Function.prototype.toString.call(v);
      if (src.startsWith("class")) return `[class ${v.name || "(anonymous)"}]`;
      const kind = v.constructor?.name === "AsyncFunction" ? "AsyncFunction" : "Function";
      return `[${kind}: ${v.name || "(anonymous)"}]`;
    }
  }
  if (v === null) return "null";
  if (seen.includes(v)) return "[Circular]";
  if (typeof v[customInspect] === "function") {
    try {
      return String(v[customInspect]((x) => fmt(x, level + 1, seen, maxDepth, false)));
    } catch {}
  }
  if (v instanceof Error) return formatError(v);
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? "Invalid Date" : v.toISOString();
  if (v instanceof RegExp) return String(v);
  if (v instanceof Promise) return "Promise { <unknown> }";
  if (v instanceof WeakMap || v instanceof WeakSet) return `${ctorName(v)} { <items unknown> }`;
  const name = ctorName(v);
  if (v instanceof ArrayBuffer) return `ArrayBuffer { byteLength: ${v.byteLength} }`;
  if (level >= maxDepth) return Array.isArray(v) ? "[Array]" : `[${name || "Object"}]`;
  seen.push(v);
  try {
    const sub = (x) => fmt(x, level + 1, seen, maxDepth, false);
    if (Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView))) {
      const items = [];
      const n = Math.min(v.length, MAX_ITEMS);
      for (let i = 0; i < n; i++) items.push(i in v ? sub(v[i]) : "<empty>");
      if (v.length > n) items.push(`... ${v.length - n} more items`);
      const prefix = Array.isArray(v) ? (name === "Array" ? "" : `${name}(${v.length}) `) : `${name}(${v.length}) `;
      return prefix + joinItems("[", items, "]", level);
    }
    if (v instanceof Map) {
      const items = [];
      for (const [k, x] of v) {
        if (items.length >= MAX_ITEMS) { items.push("..."); break; }
        items.push(`${sub(k)} => ${sub(x)}`);
      }
      return `Map(${v.size}) ` + joinItems("{", items, "}", level);
    }
    if (v instanceof Set) {
      const items = [];
      for (const x of v) {
        if (items.length >= MAX_ITEMS) { items.push("..."); break; }
        items.push(sub(x));
      }
      return `Set(${v.size}) ` + joinItems("{", items, "}", level);
    }
    const items = [];
    for (const k of Object.keys(v)) {
      if (items.length >= MAX_ITEMS) { items.push("..."); break; }
      let x;
      try {
        x = sub(v[k]);
      } catch {
        x = "[Getter]";
      }
      items.push(`${IDENT.test(k) ? k : quote(k)}: ${x}`);
    }
    const prefix = name === "Object" ? "" : `${name || "Object"} `;
    return prefix + joinItems("{", items, "}", level);
  } finally {
    seen.pop();
  }
}

// console.log's format string: %s %d %i %f %o %O %j %c %%.
function formatArgs(args) {
  let out = [];
  let rest = args;
  if (typeof args[0] === "string" && args.length > 1 && args[0].includes("%")) {
    let i = 1;
    const first = args[0].replace(/%([sdifoOjc%])/g, (m, c) => {
      if (c === "%") return "%";
      if (i >= args.length) return m;
      const a = args[i++];
      switch (c) {
        case "s": return typeof a === "string" ? a : fmt(a, 1, [], MAX_DEPTH, false);
        case "d":
        case "i": {
          if (typeof a === "bigint") return `${a}n`;
          const n = Number(a);
          return String(c === "i" ? Math.trunc(n) : n);
        }
        case "f": return String(Number(a));
        case "j": try { return JSON.stringify(a); } catch { return "[Circular]"; }
        case "c": return "";
        default: return fmt(a, 0, [], MAX_DEPTH, false);
      }
    });
    out.push(first);
    rest = args.slice(i);
  } else if (args.length) {
    out.push(fmt(args[0], 0, [], MAX_DEPTH, true));
    rest = args.slice(1);
  }
  for (const a of rest) out.push(fmt(a, 0, [], MAX_DEPTH, true));
  return out.join(" ");
}

// --- console: stdout for log/info/debug, stderr for warn/error; the host makes them log lines ---

let groupIndent = "";

function emit(fd, text) {
  if (groupIndent) text = groupIndent + text.replace(/\n/g, `\n${groupIndent}`);
  native.write(fd, text + "\n");
}

const counts = new Map();
const timersByLabel = new Map();

const console = {
  log: (...args) => emit(1, formatArgs(args)),
  info: (...args) => emit(1, formatArgs(args)),
  debug: (...args) => emit(1, formatArgs(args)),
  warn: (...args) => emit(2, formatArgs(args)),
  error: (...args) => emit(2, formatArgs(args)),
  trace: (...args) => {
    const stack = new Error().stack.split("\n").slice(1).join("\n");
    emit(2, `Trace${args.length ? ": " + formatArgs(args) : ""}\n${stack}`);
  },
  assert: (cond, ...args) => {
    if (!cond) emit(2, args.length ? `Assertion failed: ${formatArgs(args)}` : "Assertion failed");
  },
  dir: (obj) => emit(1, fmt(obj, 0, [], MAX_DEPTH, false)),
  dirxml: (...args) => emit(1, formatArgs(args)),
  table: (data) => emit(1, fmt(data, 0, [], MAX_DEPTH, false)),
  count: (label = "default") => {
    const n = (counts.get(label) ?? 0) + 1;
    counts.set(label, n);
    emit(1, `${label}: ${n}`);
  },
  countReset: (label = "default") => counts.delete(label),
  time: (label = "default") => timersByLabel.set(label, performance.now()),
  timeLog: (label = "default", ...args) => {
    const t = timersByLabel.get(label);
    if (t !== undefined) emit(1, `${label}: ${(performance.now() - t).toFixed(3)}ms ${formatArgs(args)}`.trimEnd());
  },
  timeEnd: (label = "default") => {
    const t = timersByLabel.get(label);
    if (t === undefined) return;
    timersByLabel.delete(label);
    emit(1, `${label}: ${(performance.now() - t).toFixed(3)}ms`);
  },
  group: (...args) => {
    if (args.length) emit(1, formatArgs(args));
    groupIndent += "  ";
  },
  groupCollapsed: (...args) => console.group(...args),
  groupEnd: () => { groupIndent = groupIndent.slice(2); },
  clear: () => {},
};

function reportError(e) {
  emit(2, `Uncaught ${formatError(e)}`);
}

defineGlobals({ DOMException, Event, CustomEvent, EventTarget, console, reportError, self: G });
api.formatError = (e) => formatError(e);
