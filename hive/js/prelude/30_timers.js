// Timers (run by glue.c's loop within the invocation), structuredClone, AbortController/AbortSignal.

const timers = new Map(); // id -> {cb, args, delay, due, repeat, seq}
let timerSeq = 0;

function addTimer(cb, delay, args, repeat) {
  if (typeof cb !== "function") {
    throw new TypeError("setTimeout/setInterval need a function: Edge Hive does not evaluate strings");
  }
  delay = Number(delay);
  if (!(delay >= 0)) delay = 0;
  if (delay > 2147483647) delay = 1;
  const id = ++timerSeq;
  timers.set(id, { cb, args, delay, due: performance.now() + delay, repeat, seq: id });
  return id;
}

function setTimeout(cb, delay = 0, ...args) {
  return addTimer(cb, delay, args, false);
}

function setInterval(cb, delay = 0, ...args) {
  return addTimer(cb, delay, args, true);
}

function clearTimeout(id) {
  timers.delete(Number(id));
}

// Milliseconds until the next timer is due, or -1 when there is none.
api.nextTimer = () => {
  if (timers.size === 0) return -1;
  let min = Infinity;
  for (const t of timers.values()) if (t.due < min) min = t.due;
  return Math.max(0, min - performance.now());
};

// Run the one timer due first (the C loop runs microtasks after each, as between tasks).
api.fireTimer = () => {
  const now = performance.now();
  let next = null;
  let nextId = 0;
  for (const [id, t] of timers) {
    if (t.due <= now && (!next || t.due < next.due || (t.due === next.due && t.seq < next.seq))) {
      next = t;
      nextId = id;
    }
  }
  if (!next) return;
  if (next.repeat) {
    next.due = Math.max(now, next.due) + Math.max(1, next.delay);
    next.seq = ++timerSeq;
  } else {
    timers.delete(nextId);
  }
  try {
    next.cb.apply(G, next.args);
  } catch (e) {
    reportError(e);
  }
};

// --- structuredClone ---

function cloneError(message) {
  return new DOMException(message, "DataCloneError");
}

function structuredClone(value, options) {
  if (arguments.length === 0) throw new TypeError("structuredClone: 1 argument required");
  if (options?.transfer?.length) throw cloneError("structuredClone: transfer is not supported in Edge Hive");
  return cloneValue(value, new Map());
}

const ERROR_TYPES = { Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };

function cloneValue(v, memo) {
  const t = typeof v;
  if (t === "symbol") throw cloneError(`${String(v)} could not be cloned`);
  if (t === "function") throw cloneError(`${v.name || "function"} could not be cloned`);
  if (v === null || t !== "object") return v;
  if (memo.has(v)) return memo.get(v);
  let out;
  if (Array.isArray(v)) {
    out = new Array(v.length);
    memo.set(v, out);
    for (const k of Object.keys(v)) out[k] = cloneValue(v[k], memo);
    return out;
  }
  if (v instanceof Date) out = new Date(v.getTime());
  else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
  else if (v instanceof Boolean || v instanceof Number || v instanceof String) out = Object(v.valueOf());
  else if (typeof BigInt !== "undefined" && v instanceof BigInt) out = Object(v.valueOf());
  else if (v instanceof ArrayBuffer) out = v.slice(0);
  else if (v instanceof DataView) out = new DataView(cloneValue(v.buffer, memo), v.byteOffset, v.byteLength);
  else if (ArrayBuffer.isView(v)) out = new v.constructor(cloneValue(v.buffer, memo), v.byteOffset, v.length);
  else if (typeof Blob !== "undefined" && v instanceof Blob) out = v; // immutable
  else if (v instanceof Error) {
    const Ctor = ERROR_TYPES[v.name] ?? Error;
    out = new Ctor(v.message);
    memo.set(v, out);
    if (typeof v.stack === "string") Object.defineProperty(out, "stack", { value: v.stack, writable: true, configurable: true });
    if ("cause" in v) out.cause = cloneValue(v.cause, memo);
    return out;
  } else if (v instanceof Map) {
    out = new Map();
    memo.set(v, out);
    for (const [k, x] of v) out.set(cloneValue(k, memo), cloneValue(x, memo));
    return out;
  } else if (v instanceof Set) {
    out = new Set();
    memo.set(v, out);
    for (const x of v) out.add(cloneValue(x, memo));
    return out;
  } else if (v instanceof Promise || v instanceof WeakMap || v instanceof WeakSet || v instanceof WeakRef) {
    throw cloneError(`${ctorName(v)} could not be cloned`);
  } else {
    out = {};
    memo.set(v, out);
    for (const k of Object.keys(v)) out[k] = cloneValue(v[k], memo);
    return out;
  }
  memo.set(v, out);
  return out;
}

// --- AbortController / AbortSignal ---

const kAborted = Symbol("aborted");
const kReason = Symbol("reason");

function abortSignal(signal, reason) {
  if (signal[kAborted]) return;
  signal[kAborted] = true;
  signal[kReason] = reason === undefined ? new DOMException("This operation was aborted", "AbortError") : reason;
  const event = new Event("abort");
  if (typeof signal.onabort === "function") {
    try {
      signal.onabort.call(signal, event);
    } catch (e) {
      reportError(e);
    }
  }
  signal.dispatchEvent(event);
}

class AbortSignal extends EventTarget {
  constructor(key) {
    if (key !== kInternal) throw new TypeError("Illegal constructor: use new AbortController().signal");
    super();
    this[kAborted] = false;
    this[kReason] = undefined;
    this.onabort = null;
  }
  get aborted() { return this[kAborted]; }
  get reason() { return this[kReason]; }
  throwIfAborted() {
    if (this[kAborted]) throw this[kReason];
  }
  static abort(reason) {
    const s = new AbortSignal(kInternal);
    abortSignal(s, reason);
    return s;
  }
  static timeout(ms) {
    const s = new AbortSignal(kInternal);
    setTimeout(() => abortSignal(s, new DOMException("Signal timed out.", "TimeoutError")), ms);
    return s;
  }
  static any(signals) {
    const s = new AbortSignal(kInternal);
    for (const sig of signals) {
      if (sig.aborted) {
        abortSignal(s, sig.reason);
        return s;
      }
    }
    for (const sig of signals) sig.addEventListener("abort", () => abortSignal(s, sig.reason), { once: true });
    return s;
  }
}

class AbortController {
  #signal = new AbortSignal(kInternal);
  get signal() { return this.#signal; }
  abort(reason) {
    abortSignal(this.#signal, reason);
  }
}

defineGlobals({ setTimeout, setInterval, clearTimeout, clearInterval: clearTimeout, structuredClone, AbortController, AbortSignal });
