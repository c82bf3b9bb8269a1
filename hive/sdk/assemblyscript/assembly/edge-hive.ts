// edge-hive: the Edge Hive AssemblyScript SDK, guest ABI v1 (see docs/abi.md and docs/sdk-assemblyscript.md).
//
// A function's source (assembly/index.ts) registers one handler:
//
//     import { Request, Response, serve } from "edge-hive";
//
//     serve((req: Request): Response => Response.text("Hello from " + req.path));
//
// `edge-hive function build <folder>` copies this package into the function's node_modules and
// compiles a generated entry that re-exports the ABI functions (hive_abi_v1, hive_alloc, hive_free,
// hive_handle) and imports the source, with asc (runtime incremental, WASI through
// @assemblyscript/wasi-shim, json-as as the JSON transform; see asconfig.json).
//
// Memory: requests and responses are ordinary managed objects, collected by the incremental GC. The
// request buffer the host writes into comes from `heap.alloc` (never collected), and the response
// envelope stays valid until the next call, as the ABI demands.
//
// Outbound HTTP and key-value stores (docs/sdk-assemblyscript.md, "Fetch and KV"): `fetch(url, init)`
// returns a FetchResponse synchronously (it blocks the call; the host keeps the worker serving),
// `fetchSend` / `PendingFetch.wait` / `fetchWaitAny` run several at once, and `kv.get`, `set`, `setBytes`,
// `delete`, `list`, `incr` reach the stores the manifest grants. Each returns its error as a value.
//
// Failures: a malformed request envelope gets a 400 `bad_request`; no handler or a status outside
// 100..599 a 500 `handler_failed`. AssemblyScript has no exceptions: `throw`, a failed assertion, an
// out-of-bounds access or running out of memory aborts; the abort is logged with hive.log (level
// error) and traps, and the host answers 502 and replaces the instance.

import { JSON } from "json-as";
import { validateJSON } from "json-as/assembly/util/validateJson";

export const ABI_VERSION: i32 = 1;
export const MAX_HEADERS: i32 = 256;
export const MAX_HEADER_NAME: i32 = 256;
export const MAX_HEADER_VALUE: i32 = 16384;
/** The request header carrying the verified JWT claims; see Request.authClaims(). */
export const AUTH_CLAIMS_HEADER = "x-hive-auth-claims";

// ---- logging -----------------------------------------------------------------------------------------

export enum Level {
  Debug = 0,
  Info = 1,
  Warn = 2,
  Error = 3,
}

// @ts-ignore: decorator
@external("hive", "log")
declare function hostLog(level: i32, ptr: usize, len: usize): void;

/** Writes one line to the function's log (tagged with the function name by the host). */
export function logAt(level: Level, message: string): void {
  const bytes = String.UTF8.encode(message, false, String.UTF8.ErrorMode.REPLACE);
  hostLog(<i32>level, changetype<usize>(bytes), <usize>bytes.byteLength);
}

export namespace log {
  export function debug(message: string): void {
    logAt(Level.Debug, message);
  }
  export function info(message: string): void {
    logAt(Level.Info, message);
  }
  export function warn(message: string): void {
    logAt(Level.Warn, message);
  }
  export function error(message: string): void {
    logAt(Level.Error, message);
  }
}

/** `--use abort=...` target: log the message and location, then trap (the host answers 502). */
export function hiveAbort(
  message: string | null = null,
  fileName: string | null = null,
  lineNumber: u32 = 0,
  columnNumber: u32 = 0,
): void {
  let line = "abort: " + (message !== null ? message : "(no message)");
  if (fileName !== null) {
    line += " in " + fileName + "(" + lineNumber.toString() + ":" + columnNumber.toString() + ")";
  }
  logAt(Level.Error, line);
  unreachable();
}

/** `--use trace=...` target: `trace(message, n, a0..a4)` as one debug line. */
export function hiveTrace(
  message: string,
  n: i32 = 0,
  a0: f64 = 0,
  a1: f64 = 0,
  a2: f64 = 0,
  a3: f64 = 0,
  a4: f64 = 0,
): void {
  let line = "trace: " + message;
  if (n > 0) line += " " + a0.toString();
  if (n > 1) line += ", " + a1.toString();
  if (n > 2) line += ", " + a2.toString();
  if (n > 3) line += ", " + a3.toString();
  if (n > 4) line += ", " + a4.toString();
  logAt(Level.Debug, line);
}

// ---- UTF-8 -------------------------------------------------------------------------------------------

/** Decodes UTF-8 like `TextDecoder` (and Python's "replace"): ill-formed sequences become U+FFFD. */
export function decodeUtf8(ptr: usize, len: usize): string {
  // Fast path: plain ASCII and well-formed UTF-8 decode with the standard library.
  if (isWellFormed(ptr, len)) return String.UTF8.decodeUnsafe(ptr, len);
  const parts = new Array<string>();
  let start: usize = 0;
  let i: usize = 0;
  while (i < len) {
    const k = utf8Seq(ptr + i, len - i);
    if (k > 0) {
      i += <usize>k;
      continue;
    }
    if (i > start) parts.push(String.UTF8.decodeUnsafe(ptr + start, i - start));
    parts.push("\uFFFD");
    i += <usize>-k;
    start = i;
  }
  if (len > start) parts.push(String.UTF8.decodeUnsafe(ptr + start, len - start));
  return parts.join("");
}

function isWellFormed(ptr: usize, len: usize): bool {
  let i: usize = 0;
  while (i < len) {
    if (load<u8>(ptr + i) < 0x80) {
      i++;
      continue;
    }
    const k = utf8Seq(ptr + i, len - i);
    if (k < 0) return false;
    i += <usize>k;
  }
  return true;
}

// Length of the well-formed sequence at p, or -k: an ill-formed one whose first k bytes become one
// U+FFFD (Unicode's "maximal subpart" rule).
function utf8Seq(p: usize, n: usize): i32 {
  const c = <u32>load<u8>(p);
  if (c < 0x80) return 1;
  let need: i32;
  let lo: u32 = 0x80;
  let hi: u32 = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) {
    need = 1;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 2;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 3;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else {
    return -1;
  }
  for (let i = 1; i <= need; i++) {
    if (<usize>i >= n) return -i;
    const b = <u32>load<u8>(p + <usize>i);
    if (b < lo || b > hi) return -i;
    lo = 0x80;
    hi = 0xbf;
  }
  return need + 1;
}

function utf8(s: string): ArrayBuffer {
  return String.UTF8.encode(s, false, String.UTF8.ErrorMode.REPLACE);
}

// ---- headers -----------------------------------------------------------------------------------------

export class Header {
  constructor(
    public name: string,
    public value: string,
  ) {}
}

function lowerAscii(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return s.toLowerCase();
  }
  return s;
}

function eqIgnoreCase(a: string, b: string): bool {
  if (a.length != b.length) return false;
  for (let i = 0; i < a.length; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x >= 65 && x <= 90) x += 32;
    if (y >= 65 && y <= 90) y += 32;
    if (x != y) return false;
  }
  return true;
}

function isTokenChar(c: i32): bool {
  if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122)) return true;
  // !#$%&'*+-.^_`|~
  return (
    c == 33 || c == 35 || c == 36 || c == 37 || c == 38 || c == 39 || c == 42 || c == 43 || c == 45 ||
    c == 46 || c == 94 || c == 95 || c == 96 || c == 124 || c == 126
  );
}

/** Why the host would refuse this header as the `count`-th one, or null when it is fine. */
export function headerProblem(count: i32, name: string, value: string): string | null {
  if (count >= MAX_HEADERS) return "more than 256 headers";
  if (name.length == 0 || name.length > MAX_HEADER_NAME) return "the name is not an HTTP token of 1 to 256 bytes";
  for (let i = 0; i < name.length; i++) {
    if (!isTokenChar(name.charCodeAt(i))) return "the name is not an HTTP token of 1 to 256 bytes";
  }
  if (String.UTF8.byteLength(value) > MAX_HEADER_VALUE) return "the value is longer than 16 KiB";
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c == 13 || c == 10 || c == 0) return "the value contains CR, LF or NUL";
  }
  return null;
}

/** An ordered, multi-valued header list; lookups ignore case. */
export class Headers {
  entries: Header[] = [];

  get length(): i32 {
    return this.entries.length;
  }

  /** The first value of `name`, or null. */
  get(name: string): string | null {
    for (let i = 0; i < this.entries.length; i++) {
      const h = unchecked(this.entries[i]);
      if (eqIgnoreCase(h.name, name)) return h.value;
    }
    return null;
  }

  /** Every value of `name`, in order. */
  getAll(name: string): string[] {
    const out = new Array<string>();
    for (let i = 0; i < this.entries.length; i++) {
      const h = unchecked(this.entries[i]);
      if (eqIgnoreCase(h.name, name)) out.push(h.value);
    }
    return out;
  }

  has(name: string): bool {
    return this.get(name) !== null;
  }

  /** Adds a header (kept as given; the host lowercases response header names). A header the host
   * would refuse is dropped and logged at warn level; returns whether it was added. */
  append(name: string, value: string): bool {
    const why = headerProblem(this.entries.length, name, value);
    if (why !== null) {
      log.warn('dropped response header "' + name.slice(0, 64) + '": ' + why);
      return false;
    }
    this.entries.push(new Header(name, value));
    return true;
  }

  /** Removes every header `name`, then appends one. */
  set(name: string, value: string): bool {
    this.delete(name);
    return this.append(name, value);
  }

  delete(name: string): void {
    const kept = new Array<Header>();
    for (let i = 0; i < this.entries.length; i++) {
      const h = unchecked(this.entries[i]);
      if (!eqIgnoreCase(h.name, name)) kept.push(h);
    }
    this.entries = kept;
  }
}

// ---- request -----------------------------------------------------------------------------------------

export class Request {
  /** As received, e.g. "GET"; not normalized. */
  method: string = "";
  /** The raw request path, e.g. "/api/v1/edge/hello". */
  path: string = "";
  /** The raw query string without the "?", possibly empty. */
  query: string = "";
  /** In arrival order, names lowercase, repeated headers kept. */
  headers: Headers = new Headers();
  /** Binary-safe. */
  body: Uint8Array = new Uint8Array(0);

  /** The claims of the caller's JWT as compact JSON (parse it with json-as), set by the server after it
   * verified the token (auth.mode "jwt"); the server drops any copy a client sent. Null when the
   * function has no verified token (public or API-key functions). */
  authClaims(): string | null {
    return this.headers.get(AUTH_CLAIMS_HEADER);
  }

  /** The body decoded as UTF-8 (ill-formed sequences become U+FFFD). */
  text(): string {
    return decodeUtf8(this.body.dataStart, <usize>this.body.length);
  }

  /** True when the body is syntactically valid JSON (RFC 8259). */
  isJson(): bool {
    return validateJSON(this.text());
  }

  /** The body parsed as a JSON object (json-as dynamic `JSON.Obj`), or null when it is not valid JSON
   * or not an object. Never aborts. */
  jsonObject(): JSON.Obj | null {
    const text = this.text();
    if (!isObjectText(text) || !validateJSON(text)) return null;
    return JSON.parse<JSON.Obj>(text);
  }

  /** The body parsed into `T` (a `@json` class, array, map, ...), or null when the body is not valid
   * JSON. Valid JSON of another shape than `T` aborts inside json-as (a 502): check first with
   * `jsonObject()` when the input is untrusted and the shape matters. */
  json<T>(): T | null {
    const text = this.text();
    if (!validateJSON(text)) return null;
    return JSON.parse<T>(text);
  }

  /** The first value of query parameter `name`, percent-decoded ('+' is a space), or null. */
  queryParam(name: string): string | null {
    const pairs = this.query.split("&");
    for (let i = 0; i < pairs.length; i++) {
      const pair = unchecked(pairs[i]);
      if (pair.length == 0) continue;
      const eq = pair.indexOf("=");
      const key = percentDecode(eq < 0 ? pair : pair.slice(0, eq));
      if (key == name) return eq < 0 ? "" : percentDecode(pair.slice(eq + 1));
    }
    return null;
  }
}

function isObjectText(text: string): bool {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 32 || c == 9 || c == 10 || c == 13) continue;
    return c == 123; // {
  }
  return false;
}

function hexValue(c: i32): i32 {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Decodes %XX escapes (as UTF-8) and '+' (form encoding); a malformed escape stays as it is. */
export function percentDecode(s: string): string {
  if (s.indexOf("%") < 0 && s.indexOf("+") < 0) return s;
  const raw = utf8(s);
  const src = changetype<usize>(raw);
  const n = <usize>raw.byteLength;
  const out = heap.alloc(n > 0 ? n : 1);
  let o: usize = 0;
  for (let i: usize = 0; i < n; ) {
    const c = <i32>load<u8>(src + i);
    if (c == 43) {
      store<u8>(out + o++, 32);
      i++;
    } else if (c == 37 && i + 2 < n && hexValue(load<u8>(src + i + 1)) >= 0 && hexValue(load<u8>(src + i + 2)) >= 0) {
      store<u8>(out + o++, <u8>((hexValue(load<u8>(src + i + 1)) << 4) | hexValue(load<u8>(src + i + 2))));
      i += 3;
    } else {
      store<u8>(out + o++, <u8>c);
      i++;
    }
  }
  const result = decodeUtf8(out, o);
  heap.free(out);
  return result;
}

class EnvelopeReader {
  pos: usize = 0;
  ok: bool = true;

  constructor(
    public ptr: usize,
    public len: usize,
  ) {}

  u32(): u32 {
    if (!this.ok || this.len - this.pos < 4) {
      this.ok = false;
      return 0;
    }
    const v = load<u32>(this.ptr + this.pos);
    this.pos += 4;
    return v;
  }

  /** (offset, length) of the next field, bounds-checked; check `ok` after. */
  field(): usize {
    const n = <usize>this.u32();
    if (!this.ok || this.len - this.pos < n) {
      this.ok = false;
      return 0;
    }
    const at = this.pos;
    this.pos += n;
    this.last = n;
    return at;
  }

  last: usize = 0;

  text(): string {
    const at = this.field();
    return this.ok ? decodeUtf8(this.ptr + at, this.last) : "";
  }
}

/** Decodes a request envelope; null when it is malformed. Every length is checked. */
export function decodeRequest(ptr: usize, len: usize): Request | null {
  const r = new EnvelopeReader(ptr, len);
  const req = new Request();
  req.method = r.text();
  req.path = r.text();
  req.query = r.text();
  const count = <usize>r.u32();
  // Each header takes at least 8 bytes, so a lying count can't ask for a huge array.
  if (!r.ok || count > (len - r.pos) / 8) return null;
  for (let i: usize = 0; i < count; i++) {
    const name = r.text();
    const value = r.text();
    if (!r.ok) return null;
    req.headers.entries.push(new Header(name, value));
  }
  const at = r.field();
  if (!r.ok || r.pos != len) return null;
  const body = new Uint8Array(<i32>r.last);
  memory.copy(body.dataStart, ptr + at, r.last);
  req.body = body;
  return req;
}

// ---- response ----------------------------------------------------------------------------------------

export class Response {
  headers: Headers = new Headers();
  private buf: Uint8Array = new Uint8Array(0);
  private len: i32 = 0;

  constructor(public status: i32 = 200) {}

  /** The body bytes (a view; `append` and `write` may replace it). */
  get body(): Uint8Array {
    return this.len == this.buf.length ? this.buf : this.buf.subarray(0, this.len);
  }

  set body(data: Uint8Array) {
    this.buf = data;
    this.len = data.length;
  }

  /** Adds a header and returns the response, for chaining. A header the host would refuse is dropped
   * and logged at warn level. */
  header(name: string, value: string): Response {
    this.headers.append(name, value);
    return this;
  }

  /** Replaces the body (not copied). */
  setBody(data: Uint8Array): Response {
    this.body = data;
    return this;
  }

  /** Replaces the body with the UTF-8 bytes of `text`. */
  setText(text: string): Response {
    this.body = Uint8Array.wrap(utf8(text));
    return this;
  }

  /** Appends bytes to the body (amortized: the buffer grows by doubling). */
  append(data: Uint8Array): Response {
    const n = data.length;
    // Spare capacity exists only in buffers this method allocated, so a body set by the caller is
    // never written into.
    if (n > this.buf.length - this.len) {
      let cap = this.buf.length > 32 ? this.buf.length : 32;
      while (cap - this.len < n) {
        if (cap >= 1 << 30) throw new Error("response body over 1 GiB");
        cap <<= 1;
      }
      const grown = new Uint8Array(cap);
      memory.copy(grown.dataStart, this.buf.dataStart, <usize>this.len);
      this.buf = grown;
    }
    memory.copy(this.buf.dataStart + <usize>this.len, data.dataStart, <usize>n);
    this.len += n;
    return this;
  }

  /** Appends the UTF-8 bytes of `text` to the body. */
  write(text: string): Response {
    return this.append(Uint8Array.wrap(utf8(text)));
  }

  /** `content-type: text/plain; charset=utf-8`. */
  static text(text: string, status: i32 = 200): Response {
    return new Response(status).header("content-type", "text/plain; charset=utf-8").setText(text);
  }

  /** `content-type: application/json` and `value` serialized by json-as (`JSON.stringify<T>`): a `@json`
   * class, string, number, array, map, `JSON.Obj`, ... */
  static json<T>(value: T, status: i32 = 200): Response {
    return Response.rawJson(JSON.stringify<T>(value), status);
  }

  /** `content-type: application/json` with `json` (already JSON text) as the body. */
  static rawJson(json: string, status: i32 = 200): Response {
    return new Response(status).header("content-type", "application/json").setText(json);
  }

  /** Any content type, any bytes. */
  static bytes(data: Uint8Array, contentType: string, status: i32 = 200): Response {
    return new Response(status).header("content-type", contentType).setBody(data);
  }
}

/** Encodes a response envelope into memory from `heap.alloc`; the caller frees it. */
function encodeResponse(res: Response): usize {
  const entries = res.headers.entries;
  const names = new Array<ArrayBuffer>(entries.length);
  const values = new Array<ArrayBuffer>(entries.length);
  const body = res.body;
  let size: usize = 12 + <usize>body.length;
  for (let i = 0; i < entries.length; i++) {
    const h = unchecked(entries[i]);
    const n = utf8(h.name);
    const v = utf8(h.value);
    unchecked((names[i] = n));
    unchecked((values[i] = v));
    size += 8 + <usize>n.byteLength + <usize>v.byteLength;
  }
  const out = heap.alloc(size);
  let p = out;
  store<u32>(p, <u32>res.status);
  store<u32>(p + 4, <u32>entries.length);
  p += 8;
  for (let i = 0; i < entries.length; i++) {
    p = putField(p, changetype<usize>(unchecked(names[i])), <usize>unchecked(names[i]).byteLength);
    p = putField(p, changetype<usize>(unchecked(values[i])), <usize>unchecked(values[i]).byteLength);
  }
  putField(p, body.dataStart, <usize>body.length);
  lastOutLen = size;
  return out;
}

function putField(p: usize, src: usize, n: usize): usize {
  store<u32>(p, <u32>n);
  memory.copy(p + 4, src, n);
  return p + 4 + n;
}

function errorResponse(status: i32, code: string, message: string): Response {
  return Response.rawJson('{"error":"' + code + '","message":"' + message + '"}', status);
}

// ---- WASI helpers ------------------------------------------------------------------------------------

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "clock_time_get")
declare function clock_time_get(clock: u32, precision: u64, out: usize): u16;

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "environ_sizes_get")
declare function environ_sizes_get(count: usize, size: usize): u16;

// @ts-ignore: decorator
@external("wasi_snapshot_preview1", "environ_get")
declare function environ_get(ptrs: usize, buf: usize): u16;

// @ts-ignore: decorator
@lazy const scratch: usize = memory.data(16);

/** Nanoseconds since the Unix epoch, from the WASI realtime clock (0 if it fails). */
export function nowNanos(): i64 {
  return clock_time_get(0, 1, scratch) == 0 ? load<i64>(scratch) : 0;
}

/** Seconds since the Unix epoch, from the WASI realtime clock. */
export function now(): i64 {
  return nowNanos() / 1_000_000_000;
}

function pad(n: i32, width: i32): string {
  let s = n.toString();
  while (s.length < width) s = "0" + s;
  return s;
}

/** RFC 3339 UTC to the second, e.g. "2026-11-24T19:40:00Z", for Unix seconds `secs` (>= 0). */
export function rfc3339(secs: i64): string {
  if (secs < 0) secs = 0;
  const days = <i32>(secs / 86400);
  const rem = <i32>(secs % 86400);
  // Howard Hinnant's civil_from_days.
  const z = days + 719468;
  const era = z / 146097;
  const doe = z - era * 146097;
  const yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const mp = (5 * doy + 2) / 153;
  const d = doy - (153 * mp + 2) / 5 + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  const y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return (
    pad(y, 4) + "-" + pad(m, 2) + "-" + pad(d, 2) + "T" +
    pad(rem / 3600, 2) + ":" + pad((rem / 60) % 60, 2) + ":" + pad(rem % 60, 2) + "Z"
  );
}

let environ: Map<string, string> | null = null;

/** The function's configured values (its `config` table, delivered as the WASI environment), read once
 * per instance. */
export function envMap(): Map<string, string> {
  let map = environ;
  if (map !== null) return map;
  map = new Map<string, string>();
  if (environ_sizes_get(scratch, scratch + 4) == 0) {
    const count = <usize>load<u32>(scratch);
    const size = <usize>load<u32>(scratch + 4);
    const ptrs = heap.alloc(count * 4 + 4);
    const buf = heap.alloc(size + 1);
    if (count > 0 && environ_get(ptrs, buf) == 0) {
      for (let i: usize = 0; i < count; i++) {
        const p = load<u32>(ptrs + i * 4);
        let end = <usize>p;
        while (end < buf + size && load<u8>(end) != 0) end++;
        const kv = decodeUtf8(<usize>p, end - <usize>p);
        const eq = kv.indexOf("=");
        if (eq > 0) map.set(kv.slice(0, eq), kv.slice(eq + 1));
      }
    }
    heap.free(ptrs);
    heap.free(buf);
  }
  environ = map;
  return map;
}

/** A configured value of this function, or null. */
export function env(name: string): string | null {
  const map = envMap();
  return map.has(name) ? map.get(name) : null;
}

// ---- outbound HTTP (fetch) and key-value stores (ABI v1 revision 2: docs/abi.md) -----------------------

// The host calls are imported only by a module that uses them.
// @ts-ignore: decorator
@external("hive", "fetch_send")
declare function hostFetchSend(ptr: usize, len: usize): i32;

// @ts-ignore: decorator
@external("hive", "fetch_wait")
declare function hostFetchWait(handle: i32): i64;

// @ts-ignore: decorator
@external("hive", "kv")
declare function hostKv(ptr: usize, len: usize): i64;

// @ts-ignore: decorator
@external("hive", "result_read")
declare function hostResultRead(handle: i32, ptr: usize, len: usize): i32;

export const MAX_FETCH_HEADERS: i32 = 256;
// AssemblyScript's allocator refuses blocks this large (and aborts on a failed one): a longer result is
// out_of_memory before anything is allocated.
const MAX_RESULT: u32 = (1 << 30) - 64;

/** Why a fetch or KV call failed: a stable snake_case code, the host's (`host_not_allowed`, `timeout`,
 * `quota_exceeded`, ...; docs/abi.md) or the SDK's own (`too_many_pending`, `unknown_handle`,
 * `invalid_argument`, `out_of_memory`, `invalid_result`), and a message. */
export class IoError {
  constructor(
    public code: string,
    public message: string,
  ) {}
}

function invalidResult(): IoError {
  return new IoError("invalid_result", "the host sent a malformed result record");
}

function tooManyPending(): IoError {
  return new IoError("too_many_pending", "64 results are not read yet: wait for some first");
}

/** A result record copied out of the host (unmanaged memory: free it with heap.free). */
class RawResult {
  ptr: usize = 0;
  len: usize = 0;
  error: IoError | null = null;
}

function takeResult(handle: i32, len: u32): RawResult {
  const out = new RawResult();
  if (handle < 1) {
    out.error = invalidResult();
    return out;
  }
  if (len < 4 || len > MAX_RESULT) {
    hostResultRead(handle, 0, 0); // frees the host's slot
    out.error = len < 4 ? invalidResult() : new IoError("out_of_memory", "no memory for the host's result");
    return out;
  }
  const buf = heap.alloc(<usize>len);
  const n = hostResultRead(handle, buf, <usize>len);
  if (n < 0 || <u32>n != len) {
    heap.free(buf);
    out.error = n < 0 ? new IoError("unknown_handle", "the host has no result for this handle") : invalidResult();
    return out;
  }
  out.ptr = buf;
  out.len = <usize>len;
  return out;
}

/** Reads the result's kind: a reader after it for an ok result; null with `raw.error` set otherwise. */
function resultReader(raw: RawResult): EnvelopeReader | null {
  if (raw.error !== null) return null;
  const r = new EnvelopeReader(raw.ptr, raw.len);
  const kind = r.u32();
  if (r.ok && kind == 0) return r;
  if (r.ok && kind == 1) {
    const code = r.text();
    const message = r.text();
    if (r.ok && r.pos == r.len && code.length > 0) {
      raw.error = new IoError(code, message);
      return null;
    }
  }
  raw.error = invalidResult();
  return null;
}

function packedHandle(packed: i64): i32 {
  return packed < 0 ? -1 : <i32>(<u64>packed >> 32);
}

/** Builds a host-call record in unmanaged memory. */
class RecordWriter {
  parts: ArrayBuffer[] = [];
  size: usize = 0;

  field(data: ArrayBuffer): void {
    this.u32(<u32>data.byteLength);
    this.parts.push(data);
    this.size += <usize>data.byteLength;
  }

  fieldBytes(data: Uint8Array): void {
    this.field(data.slice().buffer);
  }

  u32(v: u32): void {
    const b = new ArrayBuffer(4);
    store<u32>(changetype<usize>(b), v);
    this.parts.push(b);
    this.size += 4;
  }

  u64(v: u64): void {
    const b = new ArrayBuffer(8);
    store<u64>(changetype<usize>(b), v);
    this.parts.push(b);
    this.size += 8;
  }

  /** The record (heap.alloc'd; the caller frees it) and its length in `size`. */
  build(): usize {
    const out = heap.alloc(this.size > 0 ? this.size : 1);
    let p = out;
    for (let i = 0; i < this.parts.length; i++) {
      const part = unchecked(this.parts[i]);
      memory.copy(p, changetype<usize>(part), <usize>part.byteLength);
      p += <usize>part.byteLength;
    }
    return out;
  }
}

/** What `fetch` sends besides the URL; every field is optional in an object literal. */
export class RequestInit {
  method: string = "GET";
  /** At most 256; sent as given, repeated names included. */
  headers: Headers | null = null;
  /** The body as text (UTF-8), or ... */
  body: string | null = null;
  /** ... as bytes (these win when both are set). */
  bytes: Uint8Array | null = null;
}

/** An upstream's response, or the `error` that kept it from coming (then `status` is 0). */
export class FetchResponse {
  /** Which request this answers (see `fetchWaitAny`). */
  handle: i32 = 0;
  status: i32 = 0;
  /** As the upstream sent them, in order. */
  headers: Headers = new Headers();
  error: IoError | null = null;
  private data: Uint8Array = new Uint8Array(0);

  /** True for a 2xx response. */
  get ok(): bool {
    return this.error === null && this.status >= 200 && this.status < 300;
  }

  /** The body bytes. */
  bytes(): Uint8Array {
    return this.data;
  }

  /** The body decoded as UTF-8 (ill-formed sequences become U+FFFD). */
  text(): string {
    return decodeUtf8(this.data.dataStart, <usize>this.data.length);
  }

  /** The body parsed into `T` by json-as, or null when it is not valid JSON (valid JSON of another
   * shape than `T` aborts inside json-as, as `Request.json` does). */
  json<T>(): T | null {
    const text = this.text();
    if (!validateJSON(text)) return null;
    return JSON.parse<T>(text);
  }

  static failed(handle: i32, error: IoError): FetchResponse {
    const res = new FetchResponse();
    res.handle = handle;
    res.error = error;
    return res;
  }

  /** Decodes a fetch result record, every length checked; frees it. */
  static decode(handle: i32, raw: RawResult): FetchResponse {
    const r = resultReader(raw);
    const res = FetchResponse.decodeFrom(handle, r, raw);
    if (raw.ptr != 0) heap.free(raw.ptr);
    return res;
  }

  private static decodeFrom(handle: i32, r: EnvelopeReader | null, raw: RawResult): FetchResponse {
    if (r === null) return FetchResponse.failed(handle, raw.error!);
    const res = new FetchResponse();
    res.handle = handle;
    const status = r.u32();
    const count = <usize>r.u32();
    // Each header takes at least 8 bytes, so a lying count can't ask for a huge array.
    if (!r.ok || status > <u32>i32.MAX_VALUE || count > (r.len - r.pos) / 8) return FetchResponse.failed(handle, invalidResult());
    for (let i: usize = 0; i < count; i++) {
      const name = r.text();
      const value = r.text();
      if (!r.ok) return FetchResponse.failed(handle, invalidResult());
      res.headers.entries.push(new Header(name, value));
    }
    const at = r.field();
    if (!r.ok || r.pos != r.len) return FetchResponse.failed(handle, invalidResult());
    const body = new Uint8Array(<i32>r.last);
    memory.copy(body.dataStart, r.ptr + at, r.last);
    res.status = <i32>status;
    res.data = body;
    return res;
  }
}

/** A started fetch: `wait()` for its response (before the handler returns; an unread result is dropped
 * then, and counts against the 64 a guest may hold). `error` is set when it could not start. */
export class PendingFetch {
  constructor(
    public handle: i32,
    public error: IoError | null,
  ) {}

  /** Blocks until the response is in. */
  wait(): FetchResponse {
    const e = this.error;
    if (e !== null) return FetchResponse.failed(0, e);
    return waitHandle(this.handle);
  }
}

function waitHandle(handle: i32): FetchResponse {
  const packed = hostFetchWait(handle);
  const got = packedHandle(packed);
  if (got < 0) return FetchResponse.failed(handle, new IoError("unknown_handle", "no such pending fetch"));
  if (got < 1 || (handle != 0 && got != handle)) return FetchResponse.failed(handle, invalidResult());
  return FetchResponse.decode(got, takeResult(got, <u32>packed));
}

function fetchRecord(url: string, init: RequestInit | null): RecordWriter | null {
  const w = new RecordWriter();
  let method = "GET";
  let headers: Header[] = [];
  let body = new ArrayBuffer(0);
  if (init !== null) {
    if (init.method.length > 0) method = init.method;
    const h = init.headers;
    if (h !== null) headers = h.entries;
    const bytes = init.bytes;
    const text = init.body;
    if (bytes !== null) body = bytes.slice().buffer;
    else if (text !== null) body = utf8(text);
  }
  if (headers.length > MAX_FETCH_HEADERS) return null;
  w.field(utf8(method));
  w.field(utf8(url));
  w.u32(<u32>headers.length);
  for (let i = 0; i < headers.length; i++) {
    const h = unchecked(headers[i]);
    w.field(utf8(h.name));
    w.field(utf8(h.value));
  }
  w.field(body);
  return w;
}

/** Starts an outbound request and returns at once; several started ones run concurrently. */
export function fetchSend(url: string, init: RequestInit | null = null): PendingFetch {
  const w = fetchRecord(url, init);
  if (w === null) return new PendingFetch(0, new IoError("invalid_argument", "a fetch has at most 256 headers"));
  const record = w.build();
  const handle = hostFetchSend(record, w.size);
  heap.free(record);
  if (handle < 1) return new PendingFetch(0, tooManyPending());
  return new PendingFetch(handle, null);
}

/** Blocks until the first of the started, not yet waited-for requests is done (its `handle` matches the
 * PendingFetch); null when none is pending. */
export function fetchWaitAny(): FetchResponse | null {
  const res = waitHandle(0);
  const e = res.error;
  if (res.handle == 0 && e !== null && e.code == "unknown_handle") return null;
  return res;
}

/** One outbound request to a host the manifest's "allowed_hosts" grants, start to finish. It blocks
 * this call until the upstream answers (the worker keeps serving others meanwhile):
 *
 *     const res = fetch("https://api.example.com/v1/send", { method: "POST", headers: h, body: json });
 *     if (res.error !== null) return Response.text(res.error!.code, 502);
 */
export function fetch(url: string, init: RequestInit | null = null): FetchResponse {
  return fetchSend(url, init).wait();
}

export class KvValue {
  found: bool = false;
  value: Uint8Array | null = null;
  error: IoError | null = null;

  /** The value as UTF-8 text, or null when there is none. */
  text(): string | null {
    const v = this.value;
    return v === null ? null : decodeUtf8(v.dataStart, <usize>v.length);
  }
}

export class KvDeleted {
  deleted: bool = false;
  error: IoError | null = null;
}

export class KvNumber {
  value: i64 = 0;
  error: IoError | null = null;
}

/** One page of keys in order; `cursor` is null on the last page, else pass it to the next `list`. */
export class KvPage {
  keys: string[] = [];
  cursor: string | null = null;
  error: IoError | null = null;
}

/** Runs one KV operation: the result record, or its error. */
function kvCall(w: RecordWriter): RawResult {
  const record = w.build();
  const packed = hostKv(record, w.size);
  heap.free(record);
  const handle = packedHandle(packed);
  if (handle < 0) {
    const out = new RawResult();
    out.error = tooManyPending();
    return out;
  }
  return takeResult(handle, <u32>packed);
}

function kvOp(code: u32, store: string, key: string): RecordWriter {
  const w = new RecordWriter();
  w.u32(code);
  w.field(utf8(store));
  w.field(utf8(key));
  return w;
}

function release(raw: RawResult): void {
  if (raw.ptr != 0) heap.free(raw.ptr);
}

/** Key-value stores the manifest grants by name ("kv": ["default"]): `kv.get(store, key)` and so on. Keys
 * are strings (UTF-8, 1 to 512 bytes); values are strings or bytes (up to 1 MiB). Every call returns its
 * error as a value (`error`, null on success). */
export class kv {
  /** The value of `key` in `store` (`found` false when there is none). */
  static get(store: string, key: string): KvValue {
    const raw = kvCall(kvOp(1, store, key));
    const out = new KvValue();
    const r = resultReader(raw);
    if (r !== null) {
      const found = r.u32();
      const at = r.field();
      if (r.ok && found <= 1 && r.pos == r.len) {
        out.found = found == 1;
        if (out.found) {
          const v = new Uint8Array(<i32>r.last);
          memory.copy(v.dataStart, r.ptr + at, r.last);
          out.value = v;
        }
      } else {
        raw.error = invalidResult();
      }
    }
    out.error = raw.error;
    release(raw);
    return out;
  }

  /** Sets `key` to the UTF-8 bytes of `value`; `ttlMs` > 0 expires it after that many milliseconds. */
  static set(store: string, key: string, value: string, ttlMs: u64 = 0): IoError | null {
    return kv.setBytes(store, key, Uint8Array.wrap(utf8(value)), ttlMs);
  }

  /** Sets `key` to `value`; `ttlMs` > 0 expires it after that many milliseconds. */
  static setBytes(store: string, key: string, value: Uint8Array, ttlMs: u64 = 0): IoError | null {
    const w = kvOp(2, store, key);
    w.fieldBytes(value);
    w.u64(ttlMs);
    const raw = kvCall(w);
    const r = resultReader(raw);
    if (r !== null && r.pos != r.len) raw.error = invalidResult();
    release(raw);
    return raw.error;
  }

  /** Deletes `key`; `deleted` says whether it existed. */
  static delete(store: string, key: string): KvDeleted {
    const raw = kvCall(kvOp(3, store, key));
    const out = new KvDeleted();
    const r = resultReader(raw);
    if (r !== null) {
      const deleted = r.u32();
      if (r.ok && deleted <= 1 && r.pos == r.len) out.deleted = deleted == 1;
      else raw.error = invalidResult();
    }
    out.error = raw.error;
    release(raw);
    return out;
  }

  /** Up to `limit` (1 to 1000) keys that start with `prefix` (may be empty), in order, from `cursor`
   * (null: the start). */
  static list(store: string, prefix: string, cursor: string | null = null, limit: u32 = 100): KvPage {
    const w = kvOp(4, store, prefix);
    w.field(cursor !== null ? utf8(cursor) : new ArrayBuffer(0));
    w.u32(limit);
    const raw = kvCall(w);
    const out = new KvPage();
    const r = resultReader(raw);
    if (r !== null) {
      const count = <usize>r.u32();
      // Each key takes at least 4 bytes, so a lying count can't ask for a huge array.
      if (r.ok && count <= (r.len - r.pos) / 4) {
        const keys = new Array<string>();
        for (let i: usize = 0; i < count && r.ok; i++) keys.push(r.text());
        const next = r.text();
        if (r.ok && r.pos == r.len) {
          out.keys = keys;
          out.cursor = next.length > 0 ? next : null;
        } else {
          raw.error = invalidResult();
        }
      } else {
        raw.error = invalidResult();
      }
    }
    out.error = raw.error;
    release(raw);
    return out;
  }

  /** Adds `delta` to the number at `key` (a missing key counts as 0), atomically; `value` is the new
   * number. A key it creates expires after `ttlMs` (0: never); an existing key keeps its expiry. */
  static incr(store: string, key: string, delta: i64 = 1, ttlMs: u64 = 0): KvNumber {
    const w = kvOp(5, store, key);
    w.u64(<u64>delta);
    w.u64(ttlMs);
    const raw = kvCall(w);
    const out = new KvNumber();
    const r = resultReader(raw);
    if (r !== null) {
      if (r.len - r.pos == 8) out.value = load<i64>(r.ptr + r.pos);
      else raw.error = invalidResult();
    }
    out.error = raw.error;
    release(raw);
    return out;
  }
}

// ---- dispatch and the ABI exports --------------------------------------------------------------------

export type Handler = (req: Request) => Response;

let handler: Handler | null = null;
let lastOut: usize = 0;
let lastOutLen: usize = 0;

/** Registers the request handler; call it once, at the top level of the entry file. */
export function serve(fn: Handler): void {
  handler = fn;
}

function respond(ptr: usize, len: usize): Response {
  const req = decodeRequest(ptr, len);
  if (req === null) return errorResponse(400, "bad_request", "malformed request envelope");
  const fn = handler;
  if (fn === null) return errorResponse(500, "handler_failed", "no handler: call serve(handler) in the entry file");
  const res = fn(req);
  if (res.status < 100 || res.status > 599) {
    log.error("handler returned status " + res.status.toString());
    return errorResponse(500, "handler_failed", "the handler returned an invalid status");
  }
  return res;
}

/** Decodes the envelope at (ptr, len), runs the handler and returns the response envelope's (ptr, len),
 * packed. The envelope stays valid until the next call. */
export function dispatch(ptr: usize, len: usize): u64 {
  if (lastOut != 0) {
    heap.free(lastOut);
    lastOut = 0;
  }
  const out = encodeResponse(respond(ptr, len));
  lastOut = out;
  return ((<u64>out) << 32) | <u64>lastOutLen;
}

export function hive_abi_v1(): void {}

/** Unmanaged memory (never collected): the host keeps this buffer across requests. 16-byte aligned. */
export function hive_alloc(size: usize): usize {
  return heap.alloc(size > 0 ? size : 1);
}

export function hive_free(ptr: usize, size: usize): void {
  if (ptr != 0) heap.free(ptr);
}

export function hive_handle(ptr: usize, len: usize): u64 {
  return dispatch(ptr, len);
}
