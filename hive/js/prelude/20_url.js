// URL and URLSearchParams after the WHATWG URL standard, minus IDNA: non-ASCII host names are
// lowercased but not punycoded, and IPv6 addresses are kept as written (lowercased).

const SPECIAL_PORTS = { ftp: 21, file: null, http: 80, https: 443, ws: 80, wss: 443 };
const isSpecial = (scheme) => Object.prototype.hasOwnProperty.call(SPECIAL_PORTS, scheme);

const codes = (s) => new Set([...s].map((c) => c.charCodeAt(0)));
const FRAGMENT_SET = codes(" \"<>`");
const QUERY_SET = codes(" \"#<>");
const SPECIAL_QUERY_SET = codes(" \"#<>'");
const PATH_SET = codes(" \"#<>?`{}");
const USERINFO_SET = codes(" \"#<>?`{}/:;=@[\\]^|");
const OPAQUE_SET = new Set();
const HEX = Array.from({ length: 256 }, (_, i) => "%" + i.toString(16).toUpperCase().padStart(2, "0"));

// A regex per set finds the strings that need no encoding at all, which are most of them.
const unsafeOf = new Map();

function unsafeRegex(set) {
  let re = unsafeOf.get(set);
  if (!re) {
    const chars = [...set].map((c) => "\\x" + c.toString(16).padStart(2, "0")).join("");
    re = new RegExp(`[^\\x20-\\x7e]${chars ? `|[${chars}]` : ""}`);
    unsafeOf.set(set, re);
  }
  return re;
}

function pctEncode(s, set) {
  if (!unsafeRegex(set).test(s)) return s;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c < 0x7f && !set.has(c)) {
      out += s[i];
    } else if (c < 0x80) {
      out += HEX[c];
    } else {
      let cp = s.codePointAt(i);
      if (cp > 0xffff) i++;
      else if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
      for (const b of utf8Encode(String.fromCodePoint(cp))) out += HEX[b];
    }
  }
  return out;
}

// %XX sequences to bytes, then UTF-8 (invalid sequences become U+FFFD).
function pctDecode(s) {
  if (!s.includes("%")) return s;
  const bytes = utf8Encode(s);
  const out = new Uint8Array(bytes.length);
  let o = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === 0x25 && i + 2 < bytes.length && isHex(bytes[i + 1]) && isHex(bytes[i + 2])) {
      out[o++] = parseInt(String.fromCharCode(bytes[i + 1], bytes[i + 2]), 16);
      i += 2;
    } else {
      out[o++] = b;
    }
  }
  return utf8Decode(out.subarray(0, o));
}

function isHex(b) {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
}

function invalidURL(input, base) {
  return new TypeError(`Invalid URL: ${JSON.stringify(input)}${base === undefined ? "" : ` with base ${JSON.stringify(base)}`}`);
}

// --- hosts ---

const FORBIDDEN_HOST = /[\u0000\t\n\r #/:<>?@[\\\]^|]/;
const FORBIDDEN_DOMAIN = /[\u0000-\u001f #%/:<>?@[\\\]^|\u007f]/;

function parseIPv4Part(p) {
  if (p === "") return NaN;
  let radix = 10;
  if (/^0[xX]/.test(p)) {
    p = p.slice(2);
    radix = 16;
    if (p === "") return 0;
  } else if (p.length > 1 && p[0] === "0") {
    p = p.slice(1);
    radix = 8;
  }
  const re = radix === 16 ? /^[0-9a-fA-F]+$/ : radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  return re.test(p) ? parseInt(p, radix) : NaN;
}

function endsInNumber(domain) {
  const parts = domain.split(".");
  if (parts[parts.length - 1] === "" && parts.length > 1) parts.pop();
  const last = parts[parts.length - 1];
  return /^[0-9]+$/.test(last) || !Number.isNaN(parseIPv4Part(last)) && /^0[xX]/.test(last);
}

function parseIPv4(domain, input) {
  const parts = domain.split(".");
  if (parts[parts.length - 1] === "" && parts.length > 1) parts.pop();
  if (parts.length > 4) throw invalidURL(input);
  const nums = parts.map(parseIPv4Part);
  if (nums.some(Number.isNaN)) throw invalidURL(input);
  for (let i = 0; i < nums.length - 1; i++) if (nums[i] > 255) throw invalidURL(input);
  if (nums[nums.length - 1] >= 256 ** (5 - nums.length)) throw invalidURL(input);
  let v = nums[nums.length - 1];
  for (let i = 0; i < nums.length - 1; i++) v += nums[i] * 256 ** (3 - i);
  return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
}

function parseHost(s, special, input) {
  if (s.startsWith("[")) {
    if (!s.endsWith("]") || !/^\[[0-9A-Fa-f:.]+\]$/.test(s)) throw invalidURL(input);
    return s.toLowerCase();
  }
  if (!special) {
    if (FORBIDDEN_HOST.test(s)) throw invalidURL(input);
    return pctEncode(s, OPAQUE_SET);
  }
  const domain = pctDecode(s).toLowerCase();
  if (domain === "" || FORBIDDEN_DOMAIN.test(domain)) throw invalidURL(input);
  return endsInNumber(domain) ? parseIPv4(domain, input) : domain;
}

// --- the parser: a URL record is {scheme, username, password, host, port, path, opaque, query, fragment} ---

function newRecord(scheme) {
  return { scheme, username: "", password: "", host: null, port: null, path: [], opaque: false, query: null, fragment: null };
}

function copyAuthority(u, base) {
  u.username = base.username;
  u.password = base.password;
  u.host = base.host;
  u.port = base.port;
}

const NEEDS_CLEANING = /^[\u0000-\u0020]|[\u0000-\u0020]$|[\t\n\r]/;
// The common case, such as a request's own URL, in one match: a lowercase host name, no userinfo, and
// nothing the parser would change (no characters to encode, no dot segments, no fragment).
const SIMPLE_URL = /^(https?|wss?):\/\/([a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::([0-9]{1,5}))?((?:\/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*)(?:\?([\x21\x24-\x26\x28-\x3b\x3d\x3f-\x7e]*))?$/;
const NUMERIC_HOST = /(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)$/;
const DOT_SEGMENT = /\/(?:\.|%2e){1,2}(?:\/|$)/i;

function parseSimple(input) {
  const m = SIMPLE_URL.exec(input);
  if (!m || NUMERIC_HOST.test(m[2]) || (m[4] && DOT_SEGMENT.test(m[4]))) return null;
  let port = m[3] === undefined ? null : parseInt(m[3], 10);
  if (port !== null && port > 65535) return null;
  if (port === SPECIAL_PORTS[m[1]]) port = null;
  return {
    scheme: m[1], username: "", password: "", host: m[2], port, path: m[4] ? m[4].slice(1).split("/") : [""],
    opaque: false, query: m[5] === undefined ? null : m[5], fragment: null,
  };
}

function parseURL(input, base, original = input) {
  const simple = parseSimple(input);
  if (simple) return simple;
  if (NEEDS_CLEANING.test(input)) input = input.replace(/^[\u0000-\u0020]+|[\u0000-\u0020]+$/g, "").replace(/[\t\n\r]/g, "");
  const m = /^([A-Za-z][A-Za-z0-9+\-.]*):/.exec(input);
  if (m) {
    const u = newRecord(m[1].toLowerCase());
    const rest = input.slice(m[0].length);
    const special = isSpecial(u.scheme);
    if (u.scheme === "file") {
      if (/^[/\\]{2}/.test(rest)) return afterAuthority(u, rest.slice(2), true, original, true);
      if (base && base.scheme === "file" && !/^[/\\]/.test(rest)) return relative(u, rest, base, true, original);
      u.host = "";
      return parsePath(u, rest, true, false);
    }
    if (special) {
      if (base && base.scheme === u.scheme && !/^[/\\]/.test(rest)) return relative(u, rest, base, true, original);
      return afterAuthority(u, rest.replace(/^[/\\]+/, ""), true, original);
    }
    if (rest.startsWith("//")) return afterAuthority(u, rest.slice(2), false, original);
    if (rest.startsWith("/")) return parsePath(u, rest, false, false);
    return opaquePath(u, rest);
  }
  if (!base) throw invalidURL(original);
  if (base.opaque) {
    if (!input.startsWith("#")) throw invalidURL(original);
    const u = { ...base, path: base.path };
    u.fragment = pctEncode(input.slice(1), FRAGMENT_SET);
    return u;
  }
  return relative(newRecord(base.scheme), input, base, isSpecial(base.scheme), original);
}

function opaquePath(u, rest) {
  const hash = rest.indexOf("#");
  if (hash >= 0) {
    u.fragment = pctEncode(rest.slice(hash + 1), FRAGMENT_SET);
    rest = rest.slice(0, hash);
  }
  const q = rest.indexOf("?");
  if (q >= 0) {
    u.query = pctEncode(rest.slice(q + 1), QUERY_SET);
    rest = rest.slice(0, q);
  }
  u.opaque = true;
  u.path = pctEncode(rest, OPAQUE_SET);
  return u;
}

function relative(u, rest, base, special, original) {
  const slash = special ? /^[/\\]/ : /^\//;
  if (slash.test(rest)) {
    if (special ? /^[/\\]{2}/.test(rest) : rest.startsWith("//")) {
      return afterAuthority(u, special ? rest.replace(/^[/\\]+/, "") : rest.slice(2), special, original, u.scheme === "file");
    }
    copyAuthority(u, base);
    return parsePath(u, rest, special, false);
  }
  copyAuthority(u, base);
  if (rest === "") {
    u.path = base.path.slice();
    u.query = base.query;
    return u;
  }
  if (rest[0] === "?") {
    u.path = base.path.slice();
    return parsePath(u, rest, special, true);
  }
  if (rest[0] === "#") {
    u.path = base.path.slice();
    u.query = base.query;
    u.fragment = pctEncode(rest.slice(1), FRAGMENT_SET);
    return u;
  }
  u.path = base.path.slice(0, -1);
  return parsePath(u, rest, special, true);
}

function afterAuthority(u, rest, special, original, file = false) {
  const end = rest.search(special ? /[/\\?#]/ : /[/?#]/);
  const auth = end < 0 ? rest : rest.slice(0, end);
  rest = end < 0 ? "" : rest.slice(end);
  let hostport = auth;
  const at = auth.lastIndexOf("@");
  if (at >= 0) {
    const info = auth.slice(0, at);
    hostport = auth.slice(at + 1);
    const colon = info.indexOf(":");
    u.username = pctEncode(colon < 0 ? info : info.slice(0, colon), USERINFO_SET);
    u.password = colon < 0 ? "" : pctEncode(info.slice(colon + 1), USERINFO_SET);
  }
  let host = hostport;
  let port = "";
  const colon = hostport.lastIndexOf(":");
  if (colon > hostport.lastIndexOf("]")) {
    host = hostport.slice(0, colon);
    port = hostport.slice(colon + 1);
  }
  if (host === "" && (special && !file || at >= 0 || port !== "")) throw invalidURL(original);
  u.host = host === "" ? "" : parseHost(host, special, original);
  if (file && u.host === "localhost") u.host = "";
  if (port !== "") {
    if (!/^[0-9]+$/.test(port)) throw invalidURL(original);
    const n = parseInt(port, 10);
    if (n > 65535) throw invalidURL(original);
    u.port = n === SPECIAL_PORTS[u.scheme] ? null : n;
  }
  return parsePath(u, rest, special, false);
}

const SINGLE_DOT = new Set([".", "%2e"]);
const DOUBLE_DOT = new Set(["..", ".%2e", "%2e.", "%2e%2e"]);

// Path, then ?query and #fragment. `into`: append to u.path (a relative reference) instead of replacing it.
function parsePath(u, rest, special, into) {
  const hash = rest.indexOf("#");
  if (hash >= 0) {
    u.fragment = pctEncode(rest.slice(hash + 1), FRAGMENT_SET);
    rest = rest.slice(0, hash);
  }
  const q = rest.indexOf("?");
  if (q >= 0) {
    u.query = pctEncode(rest.slice(q + 1), special ? SPECIAL_QUERY_SET : QUERY_SET);
    rest = rest.slice(0, q);
  }
  if (into && rest === "" && q >= 0) return u; // "?x" keeps the base path
  setPath(u, rest, special, into);
  return u;
}

function setPath(u, rest, special, into) {
  const path = into ? u.path : [];
  u.path = path;
  if (special) rest = rest.replace(/\\/g, "/");
  if (rest === "") {
    if (special && !into) path.push("");
    return;
  }
  const segs = rest.split("/");
  if (rest.startsWith("/")) segs.shift();
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i];
    const last = i === segs.length - 1;
    const lower = seg.toLowerCase();
    if (DOUBLE_DOT.has(lower)) {
      if (path.length) path.pop();
      if (last) path.push("");
    } else if (SINGLE_DOT.has(lower)) {
      if (last) path.push("");
    } else {
      path.push(pctEncode(seg, PATH_SET));
    }
  }
}

function pathString(u) {
  if (u.opaque) return u.path;
  const p = u.path.length ? "/" + u.path.join("/") : "";
  return u.host === null && u.path.length > 1 && u.path[0] === "" ? "/." + p : p;
}

function serialize(u, noFragment = false) {
  let out = u.scheme + ":";
  if (u.host !== null) {
    out += "//";
    if (u.username || u.password) out += u.username + (u.password ? ":" + u.password : "") + "@";
    out += u.host + (u.port !== null ? ":" + u.port : "");
  }
  out += pathString(u);
  if (u.query !== null) out += "?" + u.query;
  if (!noFragment && u.fragment !== null) out += "#" + u.fragment;
  return out;
}

// --- application/x-www-form-urlencoded ---

function parseUrlencoded(s) {
  const list = [];
  for (const seq of s.split("&")) {
    if (seq === "") continue;
    const eq = seq.indexOf("=");
    const name = eq < 0 ? seq : seq.slice(0, eq);
    const value = eq < 0 ? "" : seq.slice(eq + 1);
    list.push([pctDecode(name.replace(/\+/g, " ")), pctDecode(value.replace(/\+/g, " "))]);
  }
  return list;
}

const FORM_SAFE = /^[A-Za-z0-9*\-._]*$/;

function formEncode(s) {
  if (FORM_SAFE.test(s)) return s;
  let out = "";
  for (const b of utf8Encode(s)) {
    if ((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2a || b === 0x2d || b === 0x2e || b === 0x5f) {
      out += String.fromCharCode(b);
    } else {
      out += b === 0x20 ? "+" : HEX[b];
    }
  }
  return out;
}

function serializeUrlencoded(list) {
  return list.map(([k, v]) => `${formEncode(k)}=${formEncode(v)}`).join("&");
}

// --- URLSearchParams ---

const kList = Symbol("list");
const kUrl = Symbol("url");
const kUpdate = Symbol("update");

class URLSearchParams {
  constructor(init = "") {
    this[kList] = [];
    this[kUrl] = null;
    if (init instanceof URLSearchParams) {
      this[kList] = init[kList].map((p) => [p[0], p[1]]);
    } else if (typeof init === "object" && init !== null) {
      if (typeof init[Symbol.iterator] === "function") {
        for (const pair of init) {
          const p = [...pair];
          if (p.length !== 2) throw new TypeError("URLSearchParams: each pair must be a [name, value] sequence of two");
          this[kList].push([String(p[0]), String(p[1])]);
        }
      } else {
        for (const k of Object.keys(init)) this[kList].push([k, String(init[k])]);
      }
    } else {
      const s = String(init);
      this[kList] = parseUrlencoded(s.startsWith("?") ? s.slice(1) : s);
    }
  }
  [kUpdate]() {
    const url = this[kUrl];
    if (url) url[kUpdate](this[kList].length ? serializeUrlencoded(this[kList]) : null);
  }
  get size() { return this[kList].length; }
  append(name, value) {
    this[kList].push([String(name), String(value)]);
    this[kUpdate]();
  }
  delete(name, value) {
    name = String(name);
    this[kList] = this[kList].filter((p) => p[0] !== name || (value !== undefined && p[1] !== String(value)));
    this[kUpdate]();
  }
  get(name) {
    name = String(name);
    const p = this[kList].find((x) => x[0] === name);
    return p ? p[1] : null;
  }
  getAll(name) {
    name = String(name);
    return this[kList].filter((p) => p[0] === name).map((p) => p[1]);
  }
  has(name, value) {
    name = String(name);
    return this[kList].some((p) => p[0] === name && (value === undefined || p[1] === String(value)));
  }
  set(name, value) {
    name = String(name);
    value = String(value);
    const i = this[kList].findIndex((p) => p[0] === name);
    if (i < 0) {
      this[kList].push([name, value]);
    } else {
      this[kList][i][1] = value;
      this[kList] = this[kList].filter((p, j) => j <= i || p[0] !== name);
    }
    this[kUpdate]();
  }
  sort() {
    this[kList] = this[kList].map((p, i) => [p, i]).sort((a, b) => (a[0][0] < b[0][0] ? -1 : a[0][0] > b[0][0] ? 1 : a[1] - b[1])).map((x) => x[0]);
    this[kUpdate]();
  }
  forEach(cb, thisArg) {
    for (const [k, v] of this[kList].slice()) cb.call(thisArg, v, k, this);
  }
  *keys() { for (const p of this[kList]) yield p[0]; }
  *values() { for (const p of this[kList]) yield p[1]; }
  *entries() { for (const p of this[kList]) yield [p[0], p[1]]; }
  [Symbol.iterator]() { return this.entries(); }
  toString() { return serializeUrlencoded(this[kList]); }
  [customInspect](show) { return `URLSearchParams ${show(Object.fromEntries(this[kList]))}`; }
}

// --- URL ---

const kRecord = Symbol("record");
const kParams = Symbol("params");

function parseBase(base) {
  return base instanceof URL ? base[kRecord] : parseURL(String(base), null);
}

class URL {
  constructor(url, base) {
    if (arguments.length === 0) throw new TypeError("URL: 1 argument required");
    const input = String(url);
    let b = null;
    if (base !== undefined) {
      try {
        b = parseBase(base);
      } catch {
        throw invalidURL(input, String(base));
      }
    }
    this[kRecord] = parseURL(input, b, input);
    this[kParams] = null;
  }
  static canParse(url, base) {
    try {
      new URL(url, base);
      return true;
    } catch {
      return false;
    }
  }
  static parse(url, base) {
    try {
      return new URL(url, base);
    } catch {
      return null;
    }
  }
  [kUpdate](query) {
    this[kRecord].query = query;
  }
  #syncParams() {
    if (this[kParams]) this[kParams][kList] = parseUrlencoded(this[kRecord].query ?? "");
  }
  get href() { return serialize(this[kRecord]); }
  set href(v) {
    const input = String(v);
    this[kRecord] = parseURL(input, null, input);
    this.#syncParams();
  }
  get origin() {
    const u = this[kRecord];
    if (u.scheme === "blob") {
      try {
        return new URL(pathString(u)).origin;
      } catch {
        return "null";
      }
    }
    if (!isSpecial(u.scheme) || u.scheme === "file") return "null";
    return `${u.scheme}://${u.host}${u.port !== null ? ":" + u.port : ""}`;
  }
  get protocol() { return this[kRecord].scheme + ":"; }
  set protocol(v) {
    const s = String(v).replace(/:.*$/s, "").toLowerCase();
    const u = this[kRecord];
    if (!/^[a-z][a-z0-9+\-.]*$/.test(s) || isSpecial(s) !== isSpecial(u.scheme)) return;
    if (s === "file" && (u.username || u.password || u.port !== null)) return;
    u.scheme = s;
    if (u.port === SPECIAL_PORTS[s]) u.port = null;
  }
  get username() { return this[kRecord].username; }
  set username(v) {
    const u = this[kRecord];
    if (u.host === null || u.host === "" || u.scheme === "file") return;
    u.username = pctEncode(String(v), USERINFO_SET);
  }
  get password() { return this[kRecord].password; }
  set password(v) {
    const u = this[kRecord];
    if (u.host === null || u.host === "" || u.scheme === "file") return;
    u.password = pctEncode(String(v), USERINFO_SET);
  }
  get host() {
    const u = this[kRecord];
    return u.host === null ? "" : u.host + (u.port !== null ? ":" + u.port : "");
  }
  set host(v) {
    const u = this[kRecord];
    if (u.opaque) return;
    try {
      const parsed = parseURL(`${u.scheme}://${String(v).replace(/[/?#\\].*$/s, "")}`, null);
      u.host = parsed.host;
      if (parsed.port !== null || /:\d/.test(String(v))) u.port = parsed.port;
    } catch {}
  }
  get hostname() { return this[kRecord].host ?? ""; }
  set hostname(v) {
    const u = this[kRecord];
    if (u.opaque) return;
    try {
      u.host = parseURL(`${u.scheme}://${String(v).replace(/[:/?#\\].*$/s, "")}`, null).host;
    } catch {}
  }
  get port() {
    const p = this[kRecord].port;
    return p === null ? "" : String(p);
  }
  set port(v) {
    const u = this[kRecord];
    if (u.host === null || u.host === "" || u.scheme === "file") return;
    const s = String(v);
    if (s === "") {
      u.port = null;
      return;
    }
    const digits = /^[0-9]+/.exec(s);
    if (!digits) return;
    const n = parseInt(digits[0], 10);
    if (n > 65535) return;
    u.port = n === SPECIAL_PORTS[u.scheme] ? null : n;
  }
  get pathname() { return pathString(this[kRecord]); }
  set pathname(v) {
    const u = this[kRecord];
    if (u.opaque) return;
    const s = String(v);
    setPath(u, s.startsWith("/") || (isSpecial(u.scheme) && s.startsWith("\\")) ? s : "/" + s, isSpecial(u.scheme), false);
  }
  get search() {
    const q = this[kRecord].query;
    return q ? "?" + q : "";
  }
  set search(v) {
    let s = String(v);
    const u = this[kRecord];
    if (s === "") {
      u.query = null;
    } else {
      if (s.startsWith("?")) s = s.slice(1);
      u.query = pctEncode(s, isSpecial(u.scheme) ? SPECIAL_QUERY_SET : QUERY_SET);
    }
    this.#syncParams();
  }
  get searchParams() {
    if (!this[kParams]) {
      const p = new URLSearchParams(this[kRecord].query ?? "");
      p[kUrl] = this;
      this[kParams] = p;
    }
    return this[kParams];
  }
  get hash() {
    const f = this[kRecord].fragment;
    return f ? "#" + f : "";
  }
  set hash(v) {
    let s = String(v);
    const u = this[kRecord];
    if (s === "") {
      u.fragment = null;
      return;
    }
    if (s.startsWith("#")) s = s.slice(1);
    u.fragment = pctEncode(s, FRAGMENT_SET);
  }
  toString() { return this.href; }
  toJSON() { return this.href; }
  [customInspect]() { return `URL { href: ${JSON.stringify(this.href)} }`; }
}

defineGlobals({ URL, URLSearchParams });
