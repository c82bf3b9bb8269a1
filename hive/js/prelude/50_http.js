// Headers, Blob, File, FormData, a small ReadableStream, Request and Response.

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HTTP_WS = /^[\t\n\r ]+|[\t\n\r ]+$/g;
const kHeaders = Symbol("headers");

// Names seen before skip the token check (the same few names come with every request).
const knownNames = new Map();
// A value of printable ASCII without surrounding whitespace needs no normalizing.
const PLAIN_VALUE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

function headerName(name) {
  name = String(name);
  let lower = knownNames.get(name);
  if (lower !== undefined) return lower;
  if (!TOKEN.test(name)) throw new TypeError(`Header name is not valid: ${JSON.stringify(name)}`);
  lower = name.toLowerCase();
  if (knownNames.size < 512) knownNames.set(name, lower);
  return lower;
}

function headerValue(value) {
  value = String(value);
  if (PLAIN_VALUE.test(value)) return value;
  value = value.replace(HTTP_WS, "");
  if (/[\0\r\n]/.test(value)) throw new TypeError(`Header value is not valid: ${JSON.stringify(value)}`);
  if (/[^\u0000-\u00ff]/.test(value)) throw new TypeError(`Header value is not a ByteString (a character is above U+00FF): ${JSON.stringify(value)}`);
  return value;
}

class Headers {
  constructor(init) {
    this[kHeaders] = []; // [lowercase name, value] in insertion order, repeats kept
    if (init === undefined || init === null) return;
    if (init instanceof Headers) {
      this[kHeaders] = init[kHeaders].map((p) => [p[0], p[1]]);
    } else if (typeof init === "object") {
      if (typeof init[Symbol.iterator] === "function") {
        for (const pair of init) {
          const p = [...pair];
          if (p.length !== 2) throw new TypeError("Headers: each header must be a [name, value] pair");
          this.append(p[0], p[1]);
        }
      } else {
        for (const k of Object.keys(init)) this.append(k, init[k]);
      }
    } else {
      throw new TypeError("Headers: init must be an object, an array of pairs or Headers");
    }
  }
  append(name, value) {
    this[kHeaders].push([headerName(name), headerValue(value)]);
  }
  delete(name) {
    name = headerName(name);
    this[kHeaders] = this[kHeaders].filter((p) => p[0] !== name);
  }
  get(name) {
    name = headerName(name);
    let out = null;
    for (const p of this[kHeaders]) if (p[0] === name) out = out === null ? p[1] : `${out}, ${p[1]}`;
    return out;
  }
  getSetCookie() {
    return this[kHeaders].filter((p) => p[0] === "set-cookie").map((p) => p[1]);
  }
  has(name) {
    name = headerName(name);
    return this[kHeaders].some((p) => p[0] === name);
  }
  set(name, value) {
    name = headerName(name);
    value = headerValue(value);
    const list = this[kHeaders];
    const i = list.findIndex((p) => p[0] === name);
    if (i < 0) {
      list.push([name, value]);
      return;
    }
    list[i] = [name, value];
    this[kHeaders] = list.filter((p, j) => j <= i || p[0] !== name);
  }
  // Iteration is sorted and combined (set-cookie stays one entry per cookie), as the Fetch standard says.
  *entries() {
    const names = [...new Set(this[kHeaders].map((p) => p[0]))].sort();
    for (const name of names) {
      if (name === "set-cookie") for (const v of this.getSetCookie()) yield [name, v];
      else yield [name, this.get(name)];
    }
  }
  *keys() { for (const [k] of this.entries()) yield k; }
  *values() { for (const [, v] of this.entries()) yield v; }
  forEach(cb, thisArg) {
    for (const [k, v] of this.entries()) cb.call(thisArg, v, k, this);
  }
  [Symbol.iterator]() { return this.entries(); }
  [customInspect](show) { return `Headers ${show(Object.fromEntries(this.entries()))}`; }
}

// A Headers over [name, value, name, value, ...] from the request envelope (names already lowercase).
function headersFromWire(flat) {
  const h = new Headers();
  const list = h[kHeaders];
  for (let i = 0; i < flat.length; i += 2) list.push([flat[i], flat[i + 1]]);
  return h;
}

const NON_ASCII = /[\u0080-\u00ff]/;

// Values go out as byte strings: a character of U+0080..U+00FF is that one byte (Latin-1).
function headersToWire(h) {
  const out = [];
  for (const p of h[kHeaders]) out.push(p[0], NON_ASCII.test(p[1]) ? Uint8Array.from(p[1], (c) => c.charCodeAt(0)) : p[1]);
  return out;
}

// --- Blob and File ---

const kBytes = Symbol("bytes");
const kType = Symbol("type");

function blobType(t) {
  t = t === undefined ? "" : String(t);
  return /^[\x20-\x7e]*$/.test(t) ? t.toLowerCase() : "";
}

class Blob {
  constructor(parts = [], options = {}) {
    const chunks = [];
    if (typeof parts !== "object" || parts === null || typeof parts[Symbol.iterator] !== "function") {
      throw new TypeError("Blob: the parts must be a sequence");
    }
    for (const part of parts) {
      if (part instanceof Blob) chunks.push(part[kBytes]);
      else if (part instanceof ArrayBuffer || ArrayBuffer.isView(part)) chunks.push(copyU8(part));
      else chunks.push(utf8Encode(part));
    }
    this[kBytes] = chunks.length ? concatU8(chunks) : new Uint8Array(0);
    this[kType] = blobType(options?.type);
  }
  get size() { return this[kBytes].length; }
  get type() { return this[kType]; }
  async text() { return utf8Decode(this[kBytes]); }
  async arrayBuffer() { return this[kBytes].slice().buffer; }
  async bytes() { return this[kBytes].slice(); }
  slice(start = 0, end = this.size, type = "") {
    const n = this.size;
    const rel = (x) => (x < 0 ? Math.max(n + x, 0) : Math.min(x, n));
    const b = new Blob([], { type });
    b[kBytes] = this[kBytes].slice(rel(Number(start) || 0), rel(end === undefined ? n : Number(end) || 0));
    return b;
  }
  stream() { return streamOf(this[kBytes].slice()); }
  get [Symbol.toStringTag]() { return "Blob"; }
  [customInspect]() { return `${this.constructor.name} { size: ${this.size}, type: ${JSON.stringify(this.type)} }`; }
}

class File extends Blob {
  #name;
  #lastModified;
  constructor(bits, name, options = {}) {
    if (arguments.length < 2) throw new TypeError("File: 2 arguments required (bits, name)");
    super(bits, options);
    this.#name = String(name);
    this.#lastModified = options?.lastModified === undefined ? Date.now() : Number(options.lastModified);
  }
  get name() { return this.#name; }
  get lastModified() { return this.#lastModified; }
  get webkitRelativePath() { return ""; }
  get [Symbol.toStringTag]() { return "File"; }
}

// --- FormData ---

const kEntries = Symbol("entries");

function formEntry(name, value, filename) {
  name = String(name);
  if (value instanceof Blob) {
    if (!(value instanceof File) || filename !== undefined) {
      const f = new File([], filename === undefined ? (value instanceof File ? value.name : "blob") : String(filename), { type: value.type });
      f[kBytes] = value[kBytes];
      value = f;
    }
    return [name, value];
  }
  return [name, String(value)];
}

class FormData {
  constructor(form) {
    if (form !== undefined) throw new TypeError("FormData(form): there is no HTML form in Edge Hive; build it with append()");
    this[kEntries] = [];
  }
  append(name, value, filename) { this[kEntries].push(formEntry(name, value, filename)); }
  delete(name) {
    name = String(name);
    this[kEntries] = this[kEntries].filter((e) => e[0] !== name);
  }
  get(name) {
    name = String(name);
    const e = this[kEntries].find((x) => x[0] === name);
    return e ? e[1] : null;
  }
  getAll(name) {
    name = String(name);
    return this[kEntries].filter((e) => e[0] === name).map((e) => e[1]);
  }
  has(name) {
    name = String(name);
    return this[kEntries].some((e) => e[0] === name);
  }
  set(name, value, filename) {
    const entry = formEntry(name, value, filename);
    const list = this[kEntries];
    const i = list.findIndex((e) => e[0] === entry[0]);
    if (i < 0) {
      list.push(entry);
      return;
    }
    list[i] = entry;
    this[kEntries] = list.filter((e, j) => j <= i || e[0] !== entry[0]);
  }
  forEach(cb, thisArg) {
    for (const [k, v] of this[kEntries].slice()) cb.call(thisArg, v, k, this);
  }
  *entries() { for (const e of this[kEntries]) yield [e[0], e[1]]; }
  *keys() { for (const e of this[kEntries]) yield e[0]; }
  *values() { for (const e of this[kEntries]) yield e[1]; }
  [Symbol.iterator]() { return this.entries(); }
  [customInspect](show) { return `FormData ${show(this[kEntries])}`; }
}

const escapeFormName = (s) => s.replace(/\r/g, "%0D").replace(/\n/g, "%0A").replace(/"/g, "%22");

function encodeMultipart(fd) {
  const rnd = new Uint8Array(12);
  native.random(rnd);
  const boundary = `----EdgeHiveFormBoundary${Array.from(rnd, (x) => x.toString(16).padStart(2, "0")).join("")}`;
  const chunks = [];
  for (const [name, value] of fd[kEntries]) {
    let head = `--${boundary}\r\nContent-Disposition: form-data; name="${escapeFormName(name)}"`;
    if (value instanceof File) {
      head += `; filename="${escapeFormName(value.name)}"\r\nContent-Type: ${value.type || "application/octet-stream"}`;
      chunks.push(utf8Encode(`${head}\r\n\r\n`), value[kBytes], utf8Encode("\r\n"));
    } else {
      chunks.push(utf8Encode(`${head}\r\n\r\n${value.replace(/\r(?!\n)|(?<!\r)\n/g, "\r\n")}\r\n`));
    }
  }
  chunks.push(utf8Encode(`--${boundary}--\r\n`));
  return { bytes: concatU8(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

function indexOfBytes(hay, needle, from) {
  const first = needle[0];
  for (let i = hay.indexOf(first, from); i >= 0 && i + needle.length <= hay.length; i = hay.indexOf(first, i + 1)) {
    let ok = true;
    for (let j = 1; j < needle.length; j++) {
      if (hay[i + j] !== needle[j]) {
        ok = false;
        break;
      }
    }
    if (ok) return i;
  }
  return -1;
}

// "type/subtype; a=b; c="d"" -> {essence, params}
function parseMime(value) {
  if (value === null || value === undefined) return { essence: "", params: {} };
  const [essence, ...rest] = String(value).split(";");
  const params = {};
  const re = /\s*([^=\s]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/y;
  const tail = rest.join(";");
  for (const part of tail.split(/;(?=(?:[^"]*"[^"]*")*[^"]*$)/)) {
    re.lastIndex = 0;
    const m = re.exec(part);
    if (m) params[m[1].toLowerCase()] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3].trim();
  }
  return { essence: essence.trim().toLowerCase(), params };
}

function parseMultipart(bytes, boundary) {
  const fd = new FormData();
  const delim = utf8Encode(`--${boundary}`);
  let at = indexOfBytes(bytes, delim, 0);
  if (at < 0) throw new TypeError("formData(): the multipart body has no boundary line");
  for (;;) {
    at += delim.length;
    if (bytes[at] === 0x2d && bytes[at + 1] === 0x2d) return fd; // "--": the end
    if (bytes[at] === 0x0d && bytes[at + 1] === 0x0a) at += 2;
    const headEnd = indexOfBytes(bytes, utf8Encode("\r\n\r\n"), at);
    if (headEnd < 0) throw new TypeError("formData(): a multipart part has no header end");
    const head = utf8Decode(bytes.subarray(at, headEnd));
    const next = indexOfBytes(bytes, utf8Encode(`\r\n--${boundary}`), headEnd + 4);
    if (next < 0) throw new TypeError("formData(): the multipart body is not terminated");
    const body = bytes.subarray(headEnd + 4, next);
    let disposition = null;
    let type = "";
    for (const line of head.split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === "content-disposition") disposition = parseMime(value);
      else if (name === "content-type") type = value;
    }
    if (!disposition || disposition.params.name === undefined) throw new TypeError("formData(): a multipart part has no name");
    const name = disposition.params.name;
    if (disposition.params.filename !== undefined) fd.append(name, new File([body], disposition.params.filename, { type }));
    else fd.append(name, utf8Decode(body));
    at = next + 2;
  }
}

// --- ReadableStream: enough for request/response bodies and for reading them chunk by chunk ---

const kStream = Symbol("stream");

class ReadableStream {
  constructor(source = {}, strategy) {
    const state = { queue: [], closed: false, errored: false, error: undefined, waiters: [], locked: false, disturbed: false, pulling: false, source };
    this[kStream] = state;
    const controller = {
      enqueue(chunk) {
        if (state.closed || state.errored) throw new TypeError("ReadableStream: enqueue after close");
        const w = state.waiters.shift();
        if (w) w.resolve({ value: chunk, done: false });
        else state.queue.push(chunk);
      },
      close() {
        state.closed = true;
        if (state.queue.length === 0) for (const w of state.waiters.splice(0)) w.resolve({ value: undefined, done: true });
      },
      error(e) {
        state.errored = true;
        state.error = e;
        state.queue = [];
        for (const w of state.waiters.splice(0)) w.reject(e);
      },
      get desiredSize() { return state.queue.length ? 0 : 1; },
    };
    state.controller = controller;
    try {
      const started = source.start?.(controller);
      if (started && typeof started.then === "function") started.then(undefined, (e) => controller.error(e));
    } catch (e) {
      controller.error(e);
    }
  }
  get locked() { return this[kStream].locked; }
  getReader() {
    const s = this[kStream];
    if (s.locked) throw new TypeError("ReadableStream is locked: it is being read already");
    s.locked = true;
    return new ReadableStreamDefaultReader(this);
  }
  async cancel(reason) {
    const s = this[kStream];
    s.closed = true;
    s.queue = [];
    for (const w of s.waiters.splice(0)) w.resolve({ value: undefined, done: true });
    await s.source.cancel?.(reason);
  }
  async *values() {
    const reader = this.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.releaseLock();
    }
  }
  [Symbol.asyncIterator]() { return this.values(); }
  static from(iterable) {
    const it = iterable[Symbol.asyncIterator] ? iterable[Symbol.asyncIterator]() : iterable[Symbol.iterator]();
    return new ReadableStream({
      async pull(c) {
        const { value, done } = await it.next();
        if (done) c.close();
        else c.enqueue(value);
      },
    });
  }
}

class ReadableStreamDefaultReader {
  #stream;
  constructor(stream) {
    this.#stream = stream;
  }
  read() {
    const s = this.#stream?.[kStream];
    if (!s) return Promise.reject(new TypeError("the reader was released"));
    s.disturbed = true;
    if (s.queue.length) {
      const value = s.queue.shift();
      if (s.closed && s.queue.length === 0) for (const w of s.waiters.splice(0)) w.resolve({ value: undefined, done: true });
      return Promise.resolve({ value, done: false });
    }
    if (s.errored) return Promise.reject(s.error);
    if (s.closed) return Promise.resolve({ value: undefined, done: true });
    const p = new Promise((resolve, reject) => s.waiters.push({ resolve, reject }));
    if (s.source.pull && !s.pulling) {
      s.pulling = true;
      Promise.resolve()
        .then(() => s.source.pull(s.controller))
        .then(
          () => { s.pulling = false; },
          (e) => { s.pulling = false; s.controller.error(e); },
        );
    }
    return p;
  }
  releaseLock() {
    if (this.#stream) this.#stream[kStream].locked = false;
    this.#stream = null;
  }
  cancel(reason) { return this.#stream?.cancel(reason); }
  get closed() { return Promise.resolve(undefined); }
}

function streamOf(bytes) {
  return new ReadableStream({
    start(c) {
      if (bytes.length) c.enqueue(bytes);
      c.close();
    },
  });
}

async function readAll(stream) {
  const reader = stream.getReader();
  const chunks = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (typeof value === "string") chunks.push(utf8Encode(value));
    else chunks.push(toU8(value, "a body stream's chunk"));
  }
  reader.releaseLock();
  return chunks.length ? concatU8(chunks) : new Uint8Array(0);
}

// --- bodies ---

const kBody = Symbol("body");

// -> {src: null | string | Uint8Array | ReadableStream, type: content-type or null}
function extractBody(body) {
  if (body === null || body === undefined) return { src: null, type: null };
  if (typeof body === "string") return { src: body, type: "text/plain;charset=UTF-8" };
  if (body instanceof Uint8Array || body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return { src: copyU8(body), type: null };
  if (body instanceof URLSearchParams) return { src: body.toString(), type: "application/x-www-form-urlencoded;charset=UTF-8" };
  if (body instanceof FormData) {
    const m = encodeMultipart(body);
    return { src: m.bytes, type: m.type };
  }
  if (body instanceof Blob) return { src: body[kBytes], type: body.type || null };
  if (body instanceof ReadableStream) {
    if (body.locked || body[kStream].disturbed) throw new TypeError("the body stream is locked or already read");
    return { src: body, type: null };
  }
  if (typeof body[Symbol.asyncIterator] === "function") return { src: ReadableStream.from(body), type: null };
  return { src: String(body), type: "text/plain;charset=UTF-8" };
}

function bodyState(src) {
  return { src, used: false };
}

async function consume(owner, what) {
  const b = owner[kBody];
  if (b.used || (b.src instanceof ReadableStream && b.src[kStream].disturbed)) {
    throw new TypeError(`${what}: the body has already been read`);
  }
  b.used = true;
  const src = b.src;
  if (src instanceof ReadableStream) return readAll(src);
  return src;
}

const asBytes = (x) => (x === null ? new Uint8Array(0) : typeof x === "string" ? utf8Encode(x) : x);

// Body methods shared by Request and Response.
const BodyMixin = {
  get body() {
    const b = this[kBody];
    if (b.src === null) return null;
    if (!(b.src instanceof ReadableStream)) {
      const bytes = asBytes(b.src);
      b.src = streamOf(b.used ? new Uint8Array(0) : bytes);
    }
    return b.src;
  },
  get bodyUsed() {
    const b = this[kBody];
    return b.used || (b.src instanceof ReadableStream && b.src[kStream].disturbed);
  },
  async text() {
    const x = await consume(this, "text()");
    return typeof x === "string" ? x : x === null ? "" : utf8Decode(x);
  },
  async json() {
    return JSON.parse(await this.text());
  },
  async arrayBuffer() {
    return asBytes(await consume(this, "arrayBuffer()")).slice().buffer;
  },
  async bytes() {
    return asBytes(await consume(this, "bytes()")).slice();
  },
  async blob() {
    const bytes = asBytes(await consume(this, "blob()"));
    const b = new Blob([], { type: this.headers.get("content-type") ?? "" });
    b[kBytes] = bytes.slice();
    return b;
  },
  async formData() {
    const mime = parseMime(this.headers.get("content-type"));
    if (mime.essence === "multipart/form-data") {
      if (!mime.params.boundary) throw new TypeError("formData(): the multipart content-type has no boundary");
      return parseMultipart(asBytes(await consume(this, "formData()")), mime.params.boundary);
    }
    if (mime.essence === "application/x-www-form-urlencoded") {
      const fd = new FormData();
      for (const [k, v] of parseUrlencoded(await this.text())) fd.append(k, v);
      return fd;
    }
    throw new TypeError(`formData(): the content-type ${JSON.stringify(this.headers.get("content-type") ?? "")} is neither multipart/form-data nor application/x-www-form-urlencoded`);
  },
};

function mixBody(cls) {
  for (const [name, desc] of Object.entries(Object.getOwnPropertyDescriptors(BodyMixin))) {
    Object.defineProperty(cls.prototype, name, { ...desc, enumerable: false });
  }
}

function cloneBody(owner, what) {
  const b = owner[kBody];
  if (b.used || (b.src instanceof ReadableStream && b.src[kStream].disturbed)) throw new TypeError(`${what}: the body has already been read`);
  if (b.src instanceof ReadableStream) {
    // Buffer the stream once; both copies then read the same bytes.
    const original = b.src;
    const bytes = readAll(original);
    const branch = () => new ReadableStream({ async start(c) { const x = await bytes; if (x.length) c.enqueue(x.slice()); c.close(); } });
    b.src = branch();
    return bodyState(branch());
  }
  return bodyState(b.src);
}

// --- Request ---

const kReq = Symbol("request");
const METHODS = new Set(["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"]);

function normalizeMethod(m) {
  m = String(m);
  if (!TOKEN.test(m)) throw new TypeError(`'${m}' is not a valid HTTP method`);
  const upper = m.toUpperCase();
  if (upper === "CONNECT" || upper === "TRACE" || upper === "TRACK") throw new TypeError(`'${m}' HTTP method is unsupported`);
  return METHODS.has(upper) ? upper : m;
}

class Request {
  constructor(input, init = {}) {
    if (arguments.length === 0) throw new TypeError("Request: 1 argument required");
    init = init ?? {};
    let r;
    let body = bodyState(null);
    if (input instanceof Request) {
      const o = input[kReq];
      r = { ...o, headers: new Headers(input.headers) };
      if (init.body === undefined && input[kBody].src !== null) {
        if (input.bodyUsed) throw new TypeError("Request: the input request's body has already been read");
        body = input[kBody];
        input[kBody] = { src: body.src, used: true };
      }
    } else {
      const url = new URL(String(input)).href;
      r = { method: "GET", url, headers: new Headers(), signal: null, redirect: "follow", credentials: "same-origin", mode: "cors", cache: "default", referrer: "about:client", referrerPolicy: "", integrity: "", keepalive: false };
    }
    if (init.method !== undefined) r.method = normalizeMethod(init.method);
    if (init.headers !== undefined) r.headers = new Headers(init.headers);
    if (init.signal !== undefined) r.signal = init.signal;
    for (const k of ["redirect", "credentials", "mode", "cache", "referrer", "referrerPolicy", "integrity"]) {
      if (init[k] !== undefined) r[k] = String(init[k]);
    }
    if (init.keepalive !== undefined) r.keepalive = !!init.keepalive;
    if (init.body !== undefined && init.body !== null) {
      if (r.method === "GET" || r.method === "HEAD") throw new TypeError("Request with GET/HEAD method cannot have body.");
      const ex = extractBody(init.body);
      body = bodyState(ex.src);
      if (ex.type && !r.headers.has("content-type")) r.headers.set("content-type", ex.type);
    } else if (init.body === null) {
      body = bodyState(null);
    }
    if (!r.signal) r.signal = new AbortController().signal;
    this[kReq] = r;
    this[kBody] = body;
  }
  get method() { return this[kReq].method; }
  get url() { return this[kReq].url; }
  get headers() {
    const r = this[kReq];
    if (r.headers === null) r.headers = headersFromWire(r.flat); // a server request's, made when first read
    return r.headers;
  }
  get signal() {
    const r = this[kReq];
    if (!r.signal) r.signal = new AbortController().signal;
    return r.signal;
  }
  get redirect() { return this[kReq].redirect; }
  get credentials() { return this[kReq].credentials; }
  get mode() { return this[kReq].mode; }
  get cache() { return this[kReq].cache; }
  get referrer() { return this[kReq].referrer; }
  get referrerPolicy() { return this[kReq].referrerPolicy; }
  get integrity() { return this[kReq].integrity; }
  get keepalive() { return this[kReq].keepalive; }
  get destination() { return ""; }
  get duplex() { return "half"; }
  clone() {
    const c = Object.create(Request.prototype);
    c[kReq] = { ...this[kReq], headers: new Headers(this.headers) };
    c[kBody] = cloneBody(this, "Request.clone()");
    return c;
  }
  [customInspect](show) { return `Request ${show({ method: this.method, url: this.url, headers: this.headers })}`; }
}
mixBody(Request);

// The request a handler receives: built from the envelope without re-validating what the host checked.
function serverRequest(method, url, flatHeaders, body) {
  const req = Object.create(Request.prototype);
  req[kReq] = {
    method, url, headers: null, flat: flatHeaders, signal: null, redirect: "follow", credentials: "same-origin",
    mode: "cors", cache: "default", referrer: "about:client", referrerPolicy: "", integrity: "", keepalive: false,
  };
  req[kBody] = bodyState(body);
  return req;
}

// --- Response ---

const kRes = Symbol("response");
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);

function setDefaultType(headers, type) {
  const list = headers[kHeaders];
  if (list.length === 0 || !headers.has("content-type")) list.push(["content-type", type]);
}

// The Response constructor's steps; `type` (Response.json's) replaces the body's own content-type.
function initResponse(res, body, init, type) {
  let status = 200;
  let statusText = "";
  let headers;
  if (init === undefined || init === null) {
    headers = new Headers();
  } else {
    if (init.status !== undefined) {
      status = Number(init.status);
      if (!Number.isInteger(status) || status < 200 || status > 599) {
        throw new RangeError(`The status provided (${init.status}) is outside the range [200, 599].`);
      }
    }
    if (init.statusText !== undefined) {
      statusText = String(init.statusText);
      if (/[\r\n]/.test(statusText)) throw new TypeError("Response: the statusText has a line break");
    }
    headers = new Headers(init.headers);
  }
  let src = null;
  if (body !== null && body !== undefined) {
    if (NULL_BODY_STATUS.has(status)) throw new TypeError(`Response with null body status (${status}) cannot have body`);
    const ex = extractBody(body);
    src = ex.src;
    if (type || ex.type) setDefaultType(headers, type || ex.type);
  }
  res[kRes] = { status, statusText, headers, type: "default", url: "", redirected: false };
  res[kBody] = bodyState(src);
  return res;
}

class Response {
  constructor(body = null, init = undefined) {
    initResponse(this, body, init, null);
  }
  static json(data, init = undefined) {
    const text = JSON.stringify(data);
    if (text === undefined) throw new TypeError("Response.json: the data is not JSON-serializable");
    return initResponse(Object.create(Response.prototype), text, init, "application/json");
  }
  static redirect(url, status = 302) {
    if (!REDIRECT_STATUS.has(status)) throw new RangeError(`Response.redirect: ${status} is not a redirect status`);
    return new Response(null, { status, headers: { location: new URL(String(url)).href } });
  }
  static error() {
    const res = new Response(null, { status: 200 });
    res[kRes].status = 0;
    res[kRes].type = "error";
    return res;
  }
  get type() { return this[kRes].type; }
  get url() { return this[kRes].url; }
  get redirected() { return this[kRes].redirected; }
  get status() { return this[kRes].status; }
  get ok() { return this[kRes].status >= 200 && this[kRes].status <= 299; }
  get statusText() { return this[kRes].statusText; }
  get headers() { return this[kRes].headers; }
  clone() {
    const c = Object.create(Response.prototype);
    c[kRes] = { ...this[kRes], headers: new Headers(this[kRes].headers) };
    c[kBody] = cloneBody(this, "Response.clone()");
    return c;
  }
  [customInspect](show) { return `Response ${show({ status: this.status, statusText: this.statusText, headers: this.headers })}`; }
}
mixBody(Response);

// [status, [name, value, ...], body (string | Uint8Array | null)] for glue.c's response envelope;
// a promise of it only when the body is a stream.
function responseToWire(res) {
  const r = res[kRes];
  const b = res[kBody];
  const body = b.src;
  if (b.used || (body instanceof ReadableStream && body[kStream].disturbed)) throw new TypeError("the handler returned a Response whose body was already read");
  b.used = true;
  if (body instanceof ReadableStream) return readAll(body).then((bytes) => [r.status, headersToWire(r.headers), bytes]);
  return [r.status, headersToWire(r.headers), body];
}

defineGlobals({ Headers, Blob, File, FormData, ReadableStream, ReadableStreamDefaultReader, Request, Response });
