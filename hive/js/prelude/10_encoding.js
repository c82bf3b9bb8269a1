// TextEncoder / TextDecoder (UTF-8 only, in C), atob / btoa and base64 helpers.

function utf8Encode(s) {
  s = String(s);
  return native.encode(s.isWellFormed() ? s : s.toWellFormed());
}

function utf8Decode(bytes, fatal = false) {
  return native.decode(bytes, fatal);
}

class TextEncoder {
  get encoding() { return "utf-8"; }
  encode(input = "") {
    return utf8Encode(input);
  }
  encodeInto(source, destination) {
    if (!(destination instanceof Uint8Array)) throw new TypeError("encodeInto: the destination must be a Uint8Array");
    source = String(source);
    const bytes = utf8Encode(source);
    if (bytes.length <= destination.length) {
      destination.set(bytes);
      return { read: source.length, written: bytes.length };
    }
    let read = 0;
    let written = 0;
    for (const ch of source) {
      const cp = ch.codePointAt(0);
      const n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      if (written + n > destination.length) break;
      written += n;
      read += ch.length;
    }
    destination.set(bytes.subarray(0, written));
    return { read, written };
  }
}

const UTF8_LABELS = new Set(["utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"]);

// Bytes at the end of a chunk that may start a sequence the next chunk completes.
function incompleteTail(b) {
  const n = b.length;
  for (let back = 1; back <= Math.min(3, n); back++) {
    const x = b[n - back];
    if (x >= 0x80 && x < 0xc0) continue; // a continuation byte: keep looking for the lead
    if (x < 0xc2 || x > 0xf4) return 0;
    const need = x < 0xe0 ? 2 : x < 0xf0 ? 3 : 4;
    return back < need ? back : 0;
  }
  return 0;
}

class TextDecoder {
  #fatal;
  #ignoreBOM;
  #pending = null;
  #started = false;
  constructor(label = "utf-8", options = {}) {
    const name = String(label).trim().toLowerCase();
    if (!UTF8_LABELS.has(name)) {
      throw new RangeError(`The encoding label provided ('${label}') is not supported: Edge Hive's TextDecoder decodes utf-8 only`);
    }
    this.#fatal = !!options?.fatal;
    this.#ignoreBOM = !!options?.ignoreBOM;
  }
  get encoding() { return "utf-8"; }
  get fatal() { return this.#fatal; }
  get ignoreBOM() { return this.#ignoreBOM; }
  decode(input, options = {}) {
    let bytes = input === undefined || input === null ? new Uint8Array(0) : toU8(input, "TextDecoder.decode's input");
    const stream = !!options?.stream;
    if (this.#pending) {
      bytes = concatU8([this.#pending, bytes]);
      this.#pending = null;
    }
    if (stream) {
      const cut = incompleteTail(bytes);
      if (cut) {
        this.#pending = bytes.slice(bytes.length - cut);
        bytes = bytes.subarray(0, bytes.length - cut);
      }
    }
    let s = utf8Decode(bytes, this.#fatal);
    if (!this.#started && s.length) {
      this.#started = true;
      if (!this.#ignoreBOM && s.charCodeAt(0) === 0xfeff) s = s.slice(1);
    }
    if (!stream) this.#started = false;
    return s;
  }
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64_INDEX[B64.charCodeAt(i)] = i;

function bytesToBase64(b) {
  const out = [];
  let chunk = "";
  const n = b.length;
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const v = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2];
    chunk += B64[v >> 18] + B64[(v >> 12) & 63] + B64[(v >> 6) & 63] + B64[v & 63];
    if (chunk.length >= 8192) {
      out.push(chunk);
      chunk = "";
    }
  }
  if (i < n) {
    const v = (b[i] << 16) | ((i + 1 < n ? b[i + 1] : 0) << 8);
    chunk += B64[v >> 18] + B64[(v >> 12) & 63] + (i + 1 < n ? B64[(v >> 6) & 63] : "=") + "=";
  }
  out.push(chunk);
  return out.join("");
}

// Forgiving base64 (the HTML spec's): ASCII whitespace ignored, padding optional. null if invalid.
function base64ToBytes(s) {
  s = s.replace(/[\t\n\f\r ]/g, "");
  if (s.length % 4 === 0) s = s.replace(/==?$/, "");
  if (s.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((s.length * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const v = c < 128 ? B64_INDEX[c] : -1;
    if (v < 0) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out.subarray(0, o);
}

function base64urlEncode(b) {
  return bytesToBase64(b).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function base64urlDecode(s) {
  return base64ToBytes(String(s).replace(/-/g, "+").replace(/_/g, "/"));
}

function btoa(data) {
  if (arguments.length === 0) throw new TypeError("btoa: 1 argument required");
  const s = String(data);
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new DOMException("The string to be encoded contains characters outside of the Latin1 range.", "InvalidCharacterError");
    b[i] = c;
  }
  return bytesToBase64(b);
}

function latin1(b) {
  let out = "";
  for (let i = 0; i < b.length; i += 8192) out += String.fromCharCode.apply(null, b.subarray(i, i + 8192));
  return out;
}

function atob(data) {
  if (arguments.length === 0) throw new TypeError("atob: 1 argument required");
  const b = base64ToBytes(String(data));
  if (b === null) throw new DOMException("The string to be decoded is not correctly encoded.", "InvalidCharacterError");
  return latin1(b);
}

defineGlobals({ TextEncoder, TextDecoder, atob, btoa });
