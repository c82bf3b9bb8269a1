"""The prelude's web APIs, checked against Python's own implementations where there is one
(hashlib, hmac, base64, codecs, uuid) and against the WHATWG standards' answers elsewhere."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid

import pytest

from hive import abi
from hive.sandbox import GuestInstance
from tests.js.common import Js, as_json, call

pytestmark = pytest.mark.slow  # builds the engine from source when build/js-engine lacks it


def evaluator(js: Js) -> GuestInstance:
    """A function that evaluates the posted JS (an async function body) and answers its JSON result."""
    return js.instance("""
      const AsyncFunction = (async () => {}).constructor;
      Deno.serve(async (req) => {
        const body = new Uint8Array(await req.arrayBuffer());
        const raw = req.headers.get("x-code"); // a byte string: the test sends UTF-8
        const code = new TextDecoder().decode(Uint8Array.from(raw, (c) => c.charCodeAt(0)));
        try {
          return Response.json({ ok: await new AsyncFunction("body", "hex", code)(body, hex) });
        } catch (e) {
          return Response.json({ error: `${e.name}: ${e.message}` });
        }
      });
      function hex(buf) { return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join(""); }
    """)


@pytest.fixture
def ev(js: Js) -> GuestInstance:
    return evaluator(js)


def run(inst: GuestInstance, code: str, body: bytes = b"") -> object:
    out = as_json(
        inst.call(abi.encode_request(b"POST", b"/", b"", [(b"x-code", code.replace("\n", " ").encode())], body))
    )
    assert isinstance(out, dict)
    if "error" in out:
        raise AssertionError(out["error"])
    return out["ok"]


def error_of(inst: GuestInstance, code: str) -> str:
    out = as_json(inst.call(abi.encode_request(b"POST", b"/", b"", [(b"x-code", code.encode())], b"")))
    assert isinstance(out, dict) and "error" in out, out
    return str(out["error"])


# --- crypto ---


@pytest.mark.parametrize("size", [0, 1, 55, 56, 64, 111, 112, 128, 1000, 70_000])
def test_digest_matches_hashlib(ev: GuestInstance, size: int) -> None:
    data = os.urandom(size)
    got = run(
        ev,
        """
      const out = {};
      for (const alg of ["SHA-1", "SHA-256", "SHA-384", "SHA-512"]) out[alg] = hex(await crypto.subtle.digest(alg, body));
      out.view = hex(await crypto.subtle.digest({ name: "sha-256" }, new DataView(body.buffer)));
      return out;
    """,
        data,
    )
    assert got == {
        "SHA-1": hashlib.sha1(data).hexdigest(),
        "SHA-256": hashlib.sha256(data).hexdigest(),
        "SHA-384": hashlib.sha384(data).hexdigest(),
        "SHA-512": hashlib.sha512(data).hexdigest(),
        "view": hashlib.sha256(data).hexdigest(),
    }


@pytest.mark.parametrize("key_size", [1, 32, 64, 65, 128, 129, 300])
def test_hmac_sign_and_verify_match_python(ev: GuestInstance, key_size: int) -> None:
    key = os.urandom(key_size)
    msg = os.urandom(777)
    got = run(
        ev,
        f"""
      const key = body.slice(0, {key_size});
      const msg = body.slice({key_size});
      const out = {{}};
      for (const hash of ["SHA-1", "SHA-256", "SHA-384", "SHA-512"]) {{
        const k = await crypto.subtle.importKey("raw", key, {{ name: "HMAC", hash }}, false, ["sign", "verify"]);
        const sig = await crypto.subtle.sign("HMAC", k, msg);
        const bad = new Uint8Array(sig).slice(); bad[0] ^= 1;
        out[hash] = [hex(sig), await crypto.subtle.verify("HMAC", k, sig, msg), await crypto.subtle.verify("HMAC", k, bad, msg),
                     await crypto.subtle.verify({{ name: "HMAC" }}, k, sig, msg.subarray(1))];
      }}
      return out;
    """,
        key + msg,
    )
    for name, py in [("SHA-1", "sha1"), ("SHA-256", "sha256"), ("SHA-384", "sha384"), ("SHA-512", "sha512")]:
        assert got[name] == [hmac.new(key, msg, py).hexdigest(), True, False, False]  # type: ignore[index]


def test_webhook_signature_check_as_functions_write_it(ev: GuestInstance) -> None:
    secret, payload = "whsec_test", b'{"event":"paid","amount":42}'
    signature = hmac.new(secret.encode(), payload, "sha256").hexdigest()
    got = run(
        ev,
        f"""
      const enc = new TextEncoder();
      const key = await crypto.subtle.importKey("raw", enc.encode("{secret}"), {{ name: "HMAC", hash: {{ name: "SHA-256" }} }}, false, ["verify"]);
      const sig = new Uint8Array("{signature}".match(/../g).map((h) => parseInt(h, 16)));
      return await crypto.subtle.verify("HMAC", key, sig, body);
    """,
        payload,
    )
    assert got is True


def test_hmac_jwk_export_generate_and_errors(ev: GuestInstance) -> None:
    key = b"k" * 32
    k = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
    got = run(
        ev,
        f"""
      const jwk = {{ kty: "oct", k: "{k}", alg: "HS256" }};
      const key = await crypto.subtle.importKey("jwk", jwk, {{ name: "HMAC", hash: "SHA-256" }}, true, ["sign"]);
      const gen = await crypto.subtle.generateKey({{ name: "HMAC", hash: "SHA-512" }}, true, ["sign", "verify"]);
      const raw = new Uint8Array(await crypto.subtle.exportKey("raw", gen));
      return {{ sig: hex(await crypto.subtle.sign("HMAC", key, body)), exported: await crypto.subtle.exportKey("jwk", key),
               alg: key.algorithm, type: key.type, usages: key.usages, genBits: gen.algorithm.length, rawLen: raw.length }};
    """,
        b"msg",
    )
    assert got == {
        "sig": hmac.new(key, b"msg", "sha256").hexdigest(),
        "exported": {"kty": "oct", "k": k, "alg": "HS256", "key_ops": ["sign"], "ext": True},
        "alg": {"name": "HMAC", "hash": {"name": "SHA-256"}, "length": 256},
        "type": "secret",
        "usages": ["sign"],
        "genBits": 1024,
        "rawLen": 128,
    }
    assert "NotSupportedError" in error_of(ev, 'await crypto.subtle.digest("MD5", new Uint8Array(1))')
    assert "NotSupportedError" in error_of(
        ev, 'await crypto.subtle.encrypt({name: "AES-GCM"}, null, new Uint8Array(1))'
    )
    assert "InvalidAccessError" in error_of(
        ev,
        """
      const k = await crypto.subtle.importKey("raw", new Uint8Array(8), { name: "HMAC", hash: "SHA-1" }, false, ["verify"]);
      await crypto.subtle.sign("HMAC", k, new Uint8Array(1));""",
    )
    assert "InvalidAccessError" in error_of(
        ev,
        """
      const k = await crypto.subtle.importKey("raw", new Uint8Array(8), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
      await crypto.subtle.exportKey("raw", k);""",
    )


def test_random_values_and_uuids(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const a = crypto.getRandomValues(new Uint8Array(32)), b = crypto.getRandomValues(new Uint32Array(8));
      let quota = null; try { crypto.getRandomValues(new Uint8Array(65537)); } catch (e) { quota = e.name; }
      let type = null; try { crypto.getRandomValues(new Float64Array(2)); } catch (e) { type = e.name; }
      return { a: hex(a), b: hex(b.buffer), uuids: [crypto.randomUUID(), crypto.randomUUID()], quota, type };
    """,
    )
    assert isinstance(got, dict)
    assert got["a"] != got["b"] and len(got["a"]) == 64 and got["a"] != "0" * 64
    for u in got["uuids"]:
        assert uuid.UUID(u).version == 4 and str(uuid.UUID(u)) == u
    assert got["uuids"][0] != got["uuids"][1]
    assert (got["quota"], got["type"]) == ("QuotaExceededError", "TypeMismatchError")


# --- encoding ---

SAMPLES = [
    "",
    "plain ascii",
    "héllo wörld",
    "日本語のテキスト",
    "emoji 🐝🍯 and 𝄞",
    "mixed\u0000nul\u007f\u0080\u07ff\u0800\uffff",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_text_encoder_matches_python_utf8(ev: GuestInstance, text: str) -> None:
    got = run(
        ev,
        f"""
      const s = {json.dumps(text)};
      const bytes = new TextEncoder().encode(s);
      return {{ hex: hex(bytes), back: new TextDecoder().decode(bytes), fromBody: new TextDecoder().decode(body) }};
    """,
        text.encode(),
    )
    assert got == {"hex": text.encode().hex(), "back": text, "fromBody": text}


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff",
        b"\xc0\x80",
        b"\xe0\x80\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe2\x82",
        b"ab\xf0\x9f\x90",
        b"\xf0\x9f\x90\x9d",
        b"\x80\x80x\xc3",
        b"a\xe2\x28\xa1b",
        bytes(range(0x70, 0x100)),
    ],
)
def test_text_decoder_replaces_like_python(ev: GuestInstance, raw: bytes) -> None:
    got = run(
        ev,
        """
      let fatal = null;
      try { new TextDecoder("utf-8", { fatal: true }).decode(body); } catch (e) { fatal = e.name; }
      return { text: new TextDecoder().decode(body), fatal };
    """,
        raw,
    )
    valid = True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    assert got == {"text": raw.decode("utf-8", "replace"), "fatal": None if valid else "TypeError"}


def test_text_decoder_streams_split_sequences_and_bom(ev: GuestInstance) -> None:
    text = "\ufeffé🐝日"
    data = text.encode()
    got = run(
        ev,
        """
      const out = [];
      for (let cut = 0; cut <= body.length; cut++) {
        const d = new TextDecoder();
        out.push(d.decode(body.subarray(0, cut), { stream: true }) + d.decode(body.subarray(cut)));
      }
      const keep = new TextDecoder("utf8", { ignoreBOM: true }).decode(body);
      const lone = hex(new TextEncoder().encode("a\\ud800b"));
      const into = new TextEncoder().encodeInto("é🐝", new Uint8Array(4));
      return { out, keep, lone, into };
    """,
        data,
    )
    assert got == {
        "out": [text[1:]] * (len(data) + 1),
        "keep": text,
        "lone": "61efbfbd62",
        "into": {"read": 1, "written": 2},
    }
    assert "RangeError" in error_of(ev, 'new TextDecoder("latin1")')


def test_atob_btoa_match_python_base64(ev: GuestInstance) -> None:
    data = bytes(range(256))
    got = run(
        ev,
        """
      const bin = String.fromCharCode(...body);
      const b64 = btoa(bin);
      return { b64, round: atob(b64) === bin, spaced: atob(" aGk = "), nopad: atob("aGk"), short: [btoa(""), btoa("a"), btoa("ab")] };
    """,
        data,
    )
    assert got == {
        "b64": base64.b64encode(data).decode(),
        "round": True,
        "spaced": "hi",
        "nopad": "hi",
        "short": ["", "YQ==", "YWI="],
    }
    assert "InvalidCharacterError" in error_of(ev, 'btoa("€")')
    assert "InvalidCharacterError" in error_of(ev, 'atob("a")')


# --- URL ---

URL_CASES = [
    # (input, base, href or None for a failure) from the WHATWG URL standard's parsing rules
    ("https://EXAMPLE.com:443/a/./b/../c?x=1#frag", None, "https://example.com/a/c?x=1#frag"),
    ("http://example.com:8080", None, "http://example.com:8080/"),
    ("HTTP://user:p%40ss@Host/", None, "http://user:p%40ss@host/"),
    ("../d?q", "http://h/a/b/c", "http://h/a/d?q"),
    ("/abs", "http://h/a/b?x#y", "http://h/abs"),
    ("?only", "http://h/a/b?x#y", "http://h/a/b?only"),
    ("#f", "http://h/a/b?x#y", "http://h/a/b?x#f"),
    ("//other/p", "https://h/a", "https://other/p"),
    ("", "http://h/a?x#y", "http://h/a?x"),
    ("http://h/a b/é?q=a b&é#a b", None, "http://h/a%20b/%C3%A9?q=a%20b&%C3%A9#a%20b"),
    ("http:\\\\h\\p\\q", None, "http://h/p/q"),
    ("http://127.1/", None, "http://127.0.0.1/"),
    ("http://0x7f.0.0.1/", None, "http://127.0.0.1/"),
    ("http://[::1]:3000/x", None, "http://[::1]:3000/x"),
    ("mailto:Someone@Example.com", None, "mailto:Someone@Example.com"),
    ("data:text/plain,hello world", None, "data:text/plain,hello world"),
    ("postgres://u:p@db:5432/name?sslmode=require", None, "postgres://u:p@db:5432/name?sslmode=require"),
    ("  http://h/\t\nx  ", None, "http://h/x"),
    ("http://h/%2e%2E/x/%2e", None, "http://h/x/"),
    # the parser's one-match path for plain absolute URLs gives the same answers
    ("https://h:443/x", None, "https://h/x"),
    ("ws://h:80/x?y", None, "ws://h/x?y"),
    ("http://h?q=1", None, "http://h/?q=1"),
    ("http://h:65536/", None, None),
    ("http://h/a/../b", None, "http://h/b"),
    ("http://10.0.0.1/", None, "http://10.0.0.1/"),
    ("http://h/a%2Fb;c=d/@:x?e=f&g=%zz", None, "http://h/a%2Fb;c=d/@:x?e=f&g=%zz"),
    ("http://h/p?it's", None, "http://h/p?it%27s"),
]


@pytest.mark.parametrize(("url", "base", "href"), URL_CASES)
def test_url_parsing(ev: GuestInstance, url: str, base: str | None, href: str | None) -> None:
    args = json.dumps(url) + ("" if base is None else ", " + json.dumps(base))
    assert run(ev, f"return URL.parse({args})?.href ?? null;") == href


def test_url_components_and_setters(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const u = new URL("https://user:pw@sub.example.com:8443/p/a?x=1&y=2#h");
      const parts = { protocol: u.protocol, username: u.username, password: u.password, host: u.host, hostname: u.hostname,
                      port: u.port, pathname: u.pathname, search: u.search, hash: u.hash, origin: u.origin };
      u.pathname = "/new path"; u.search = "?a=b"; u.hash = "top"; u.port = "443"; u.hostname = "Example.org";
      u.searchParams.append("c", "d e");
      const params = new URL("http://h/?a=1&b=2&a=3").searchParams;
      params.sort();
      return { parts, href: u.href, json: JSON.stringify({ u }), sorted: params.toString(),
               canParse: [URL.canParse("/x"), URL.canParse("/x", "http://h"), URL.parse("nope")], str: String(u) };
    """,
    )
    assert got == {
        "parts": {
            "protocol": "https:",
            "username": "user",
            "password": "pw",
            "host": "sub.example.com:8443",
            "hostname": "sub.example.com",
            "port": "8443",
            "pathname": "/p/a",
            "search": "?x=1&y=2",
            "hash": "#h",
            "origin": "https://sub.example.com:8443",
        },
        "href": "https://user:pw@example.org/new%20path?a=b&c=d+e#top",
        "json": '{"u":"https://user:pw@example.org/new%20path?a=b&c=d+e#top"}',
        "sorted": "a=1&a=3&b=2",
        "canParse": [False, True, None],
        "str": "https://user:pw@example.org/new%20path?a=b&c=d+e#top",
    }
    assert "TypeError: Invalid URL" in error_of(ev, 'new URL("/relative")')
    assert "TypeError: Invalid URL" in error_of(ev, 'new URL("http://exa mple.com/")')
    assert "TypeError: Invalid URL" in error_of(ev, 'new URL("http://h:99999/")')


def test_url_search_params(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const p = new URLSearchParams("?a=1&b=x+y%20z&a=%E2%82%AC&empty=&flag");
      const fromObj = new URLSearchParams({ q: "a&b=c", n: 5 });
      const fromPairs = new URLSearchParams([["k", "v"], ["k", "w"]]);
      p.set("b", "new"); p.delete("flag");
      return { a: p.getAll("a"), b: p.get("b"), has: [p.has("empty"), p.has("a", "1"), p.has("nope")], size: p.size,
               str: p.toString(), obj: fromObj.toString(), pairs: [...fromPairs], keys: [...p.keys()], missing: p.get("zz") };
    """,
    )
    assert got == {
        "a": ["1", "€"],
        "b": "new",
        "has": [True, True, False],
        "size": 4,
        "str": "a=1&b=new&a=%E2%82%AC&empty=",
        "obj": "q=a%26b%3Dc&n=5",
        "pairs": [["k", "v"], ["k", "w"]],
        "keys": ["a", "b", "a", "empty"],
        "missing": None,
    }


# --- Headers, FormData, Blob ---


def test_headers_semantics(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const h = new Headers({ "Content-Type": "text/plain", "X-B": "2" });
      h.append("x-a", " 1 "); h.append("X-A", "3"); h.append("Set-Cookie", "a=1"); h.append("set-cookie", "b=2");
      const bad = [];
      for (const [n, v] of [["bad name", "x"], ["x", "a\\nb"], ["x", "€"]]) { try { h.set(n, v); } catch (e) { bad.push(e.name); } }
      h.set("x-b", "two"); h.delete("content-type");
      return { entries: [...h], xa: h.get("X-A"), cookies: h.getSetCookie(), has: h.has("CONTENT-TYPE"), bad, none: h.get("nope") };
    """,
    )
    assert got == {
        "entries": [["set-cookie", "a=1"], ["set-cookie", "b=2"], ["x-a", "1, 3"], ["x-b", "two"]],
        "xa": "1, 3",
        "cookies": ["a=1", "b=2"],
        "has": False,
        "bad": ["TypeError"] * 3,
        "none": None,
    }


def test_form_data_urlencoded_and_multipart_requests(js: Js) -> None:
    inst = js.instance("""
      Deno.serve(async (req) => {
        const form = await req.formData();
        const out = {};
        for (const [k, v] of form) out[k] = typeof v === "string" ? v : { name: v.name, type: v.type, size: v.size, text: await v.text() };
        return Response.json(out);
      });
    """)
    urlencoded = call(
        inst, "POST", headers=[("content-type", "application/x-www-form-urlencoded")], body=b"a=1&b=two+words&c=%C3%A9"
    )
    assert as_json(urlencoded) == {"a": "1", "b": "two words", "c": "é"}
    boundary = "----hiveTest123"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nhéllo\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="upload"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nfile\r\nbody\r\n--{boundary}--\r\n"
    ).encode()
    multipart = call(inst, "POST", headers=[("content-type", f'multipart/form-data; boundary="{boundary}"')], body=body)
    assert as_json(multipart) == {
        "title": "héllo",
        "upload": {"name": "a.txt", "type": "text/plain", "size": 10, "text": "file\r\nbody"},
    }
    wrong = call(inst, "POST", headers=[("content-type", "application/json")], body=b"{}")
    assert wrong.status == 500 and "formData()" in as_json(wrong)["message"]


def test_form_data_round_trips_through_a_response(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const fd = new FormData();
      fd.append("name", "Edge Hive");
      fd.append("file", new Blob([new Uint8Array([0, 255, 10])], { type: "application/octet-stream" }), "bin.dat");
      fd.set("name", "Hive");
      const res = new Response(fd);
      const back = await res.formData();
      const file = back.get("file");
      return { ct: res.headers.get("content-type").split(";")[0], name: back.get("name"), all: back.getAll("name"),
               file: [file.name, file.type, hex(await file.arrayBuffer())], isFile: file instanceof File };
    """,
    )
    assert got == {
        "ct": "multipart/form-data",
        "name": "Hive",
        "all": ["Hive"],
        "file": ["bin.dat", "application/octet-stream", "00ff0a"],
        "isFile": True,
    }


def test_blob_and_body_reuse(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const b = new Blob(["héllo ", new Uint8Array([119, 111]), new Blob(["rld"])], { type: "Text/Plain" });
      const r = new Response("once");
      await r.text();
      let reuse = null; try { await r.text(); } catch (e) { reuse = e.name; }
      const req = new Request("https://x.test/p", { method: "post", body: JSON.stringify({ a: 1 }), headers: { "x-k": "v" } });
      return { size: b.size, type: b.type, text: await b.text(), slice: await b.slice(-5, -2).text(), reuse,
               req: [req.method, req.url, req.headers.get("content-type"), await req.json()], used: r.bodyUsed };
    """,
    )
    assert got == {
        "size": 12,
        "type": "text/plain",
        "text": "héllo world",
        "slice": "wor",
        "reuse": "TypeError",
        "req": ["POST", "https://x.test/p", "text/plain;charset=UTF-8", {"a": 1}],
        "used": True,
    }
    assert "Request with GET/HEAD method cannot have body" in error_of(ev, 'new Request("http://h/", { body: "x" })')
    assert "RangeError" in error_of(ev, 'new Response("x", { status: 99 })')
    assert "null body status" in error_of(ev, 'new Response("x", { status: 204 })')


def test_request_body_stream_reader(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const req = new Request("http://h/", { method: "POST", body: body });
      const reader = req.body.getReader();
      const chunks = [];
      for (;;) { const { value, done } = await reader.read(); if (done) break; chunks.push(value.length); }
      return { chunks, used: req.bodyUsed };
    """,
        b"x" * 1000,
    )
    assert got == {"chunks": [1000], "used": True}


# --- the rest of the globals ---


def test_structured_clone(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const src = { d: new Date(0), m: new Map([["k", { deep: [1, 2] }]]), s: new Set([1]), re: /a+/gi, u8: new Uint8Array([1, 2]), n: null };
      src.self = src;
      const c = structuredClone(src);
      c.m.get("k").deep.push(3);
      let fn = null; try { structuredClone({ f() {} }); } catch (e) { fn = e.name; }
      return { cyclic: c.self === c, distinct: c !== src && src.m.get("k").deep.length === 2, date: c.d.toISOString(),
               re: String(c.re), u8: [...c.u8], set: c.s.has(1), fn };
    """,
    )
    assert got == {
        "cyclic": True,
        "distinct": True,
        "date": "1970-01-01T00:00:00.000Z",
        "re": "/a+/gi",
        "u8": [1, 2],
        "set": True,
        "fn": "DataCloneError",
    }


def test_abort_controller_and_signal_timeout(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const c = new AbortController();
      const seen = [];
      c.signal.addEventListener("abort", () => seen.push("listener"));
      c.signal.onabort = () => seen.push("onabort");
      c.abort();
      c.abort();
      const t = AbortSignal.timeout(10);
      await new Promise((resolve) => t.addEventListener("abort", resolve));
      const any = AbortSignal.any([new AbortController().signal, AbortSignal.abort("why")]);
      let thrown = null; try { t.throwIfAborted(); } catch (e) { thrown = e.name; }
      return { seen, reason: c.signal.reason.name, timeout: [t.aborted, t.reason.name], any: [any.aborted, any.reason], thrown };
    """,
    )
    assert got == {
        "seen": ["onabort", "listener"],
        "reason": "AbortError",
        "timeout": [True, "TimeoutError"],
        "any": [True, "why"],
        "thrown": "TimeoutError",
    }


def test_globals_that_exist(ev: GuestInstance) -> None:
    names = [
        "Deno",
        "EdgeRuntime",
        "Request",
        "Response",
        "Headers",
        "URL",
        "URLSearchParams",
        "FormData",
        "Blob",
        "File",
        "TextEncoder",
        "TextDecoder",
        "atob",
        "btoa",
        "structuredClone",
        "queueMicrotask",
        "setTimeout",
        "clearTimeout",
        "setInterval",
        "clearInterval",
        "AbortController",
        "AbortSignal",
        "crypto",
        "console",
        "fetch",
        "performance",
        "DOMException",
        "Event",
        "EventTarget",
        "ReadableStream",
        "navigator",
        "self",
        "WebSocket",
        "WritableStream",
        "TransformStream",
        "TextEncoderStream",
        "TextDecoderStream",
    ]
    got = run(ev, f"return {json.dumps(names)}.filter((n) => typeof globalThis[n] === 'undefined');")
    assert got == []


def test_websocket_exists_but_cannot_connect(ev: GuestInstance) -> None:
    assert run(ev, "return [typeof WebSocket, WebSocket.OPEN];") == ["function", 1]
    assert "NotSupportedError: WebSocket connections are not available" in error_of(ev, 'new WebSocket("wss://x.test")')


def test_streamed_response_written_after_the_handler_returns(js: Js) -> None:
    inst = js.instance("""
      Deno.serve(() => {
        const { readable, writable } = new TransformStream();
        const writer = writable.getWriter();
        const enc = new TextEncoder();
        (async () => {
          for (const word of ["data: one\\n\\n", "data: two\\n\\n"]) {
            await new Promise((r) => setTimeout(r, 2));
            await writer.write(enc.encode(word));
          }
          await writer.close();
        })();
        return new Response(readable, { headers: { "content-type": "text/event-stream" } });
      });
    """)
    resp = call(inst)
    assert (resp.status, resp.body) == (200, b"data: one\n\ndata: two\n\n")


def test_pipe_through_tee_and_text_streams(ev: GuestInstance) -> None:
    got = run(
        ev,
        """
      const bytes = new TextEncoder().encode("héllo wörld 🐝");
      const source = () => new ReadableStream({ start(c) { for (let i = 0; i < bytes.length; i += 3) c.enqueue(bytes.slice(i, i + 3)); c.close(); } });
      let text = "";
      for await (const piece of source().pipeThrough(new TextDecoderStream())) text += piece;
      const upper = source().pipeThrough(new TextDecoderStream()).pipeThrough(new TransformStream({ transform(s, c) { c.enqueue(s.toUpperCase()); } }));
      let shout = ""; for await (const s of upper) shout += s;
      const [a, b] = source().tee();
      const readAll = async (s) => new Uint8Array(await new Response(s).arrayBuffer()).length;
      const sink = []; await source().pipeTo(new WritableStream({ write(c) { sink.push(c.length); } }));
      const encoded = await new Response(new Response("abc").body.pipeThrough(new TextDecoderStream()).pipeThrough(new TextEncoderStream())).text();
      return { text, shout, tee: [await readAll(a), await readAll(b)], sink: sink.reduce((x, y) => x + y, 0), encoded };
    """,
    )
    assert got == {"text": "héllo wörld 🐝", "shout": "HÉLLO WÖRLD 🐝", "tee": [18, 18], "sink": 18, "encoded": "abc"}
