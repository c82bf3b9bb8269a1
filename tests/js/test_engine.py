"""The JavaScript engine guest under a real wasmtime sandbox: serving, errors, limits, loading."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from hive import abi
from hive.errors import FuelExhausted, Timeout
from hive.js import ENGINE_WASI, JsLoadError, compile_bundle, engine_key, load_engine, new_instance
from hive.manifest import WASI_GROUPS, Manifest
from hive.sandbox import GuestContext, GuestLimits, Sandbox
from hive.sandbox.inspect import check_interface, unknown_imports
from tests.js.common import Js, Log, as_json, call, header

pytestmark = pytest.mark.slow  # builds the engine from source when build/js-engine lacks it

HELLO = 'Deno.serve((req) => Response.json({ message: "Hello, Edge Hive!" }));'


def test_hello_returns_json(js: Js) -> None:
    resp = call(js.instance(HELLO))
    assert resp.status == 200
    assert header(resp, "content-type") == "application/json"
    assert as_json(resp) == {"message": "Hello, Edge Hive!"}


def test_warm_instance_keeps_module_state(js: Js) -> None:
    inst = js.instance("let n = 0; Deno.serve(() => new Response(String(++n)));")
    assert [call(inst).body for _ in range(3)] == [b"1", b"2", b"3"]


def test_async_handler_runs_microtasks_and_timers_in_order(js: Js) -> None:
    inst = js.instance("""
      Deno.serve(async () => {
        const events = [];
        const t0 = performance.now();
        setTimeout(() => events.push("timeout 20"), 20);
        setTimeout(() => events.push("timeout 5"), 5);
        const cleared = setTimeout(() => events.push("cleared"), 1);
        clearTimeout(cleared);
        queueMicrotask(() => events.push("microtask"));
        Promise.resolve().then(() => events.push("then"));
        events.push("sync");
        await new Promise((resolve) => setTimeout(resolve, 30));
        return Response.json({ events, waited: performance.now() - t0 });
      });
    """)
    out = as_json(call(inst))
    assert out["events"] == ["sync", "microtask", "then", "timeout 5", "timeout 20"]
    assert out["waited"] >= 30  # a timer never fires early: the loop waits in real time


def test_request_method_url_headers_and_bodies(js: Js) -> None:
    inst = js.instance("""
      Deno.serve(async (req) => {
        const url = new URL(req.url);
        const copy = req.clone();
        return Response.json({
          method: req.method, url: req.url, path: url.pathname, q: url.searchParams.getAll("q"),
          ct: req.headers.get("content-type"), tags: req.headers.get("x-tag"), has: req.headers.has("X-TAG"),
          json: await req.json(), text: await copy.text(), used: req.bodyUsed,
        });
      });
    """)
    body = json.dumps({"name": "Edge Hive", "n": [1, 2]}).encode()
    resp = call(
        inst,
        "POST",
        "/functions/v1/echo/a",
        "q=1&q=two%20x",
        [("host", "edge.example"), ("content-type", "application/json"), ("x-tag", "one"), ("x-tag", "two")],
        body,
    )
    assert as_json(resp) == {
        # The route prefix is Supabase's gateway's, not the function's: it sees /NAME/rest.
        "method": "POST",
        "url": "http://edge.example/echo/a?q=1&q=two%20x",
        "path": "/echo/a",
        "q": ["1", "two x"],
        "ct": "application/json",
        "tags": "one, two",
        "has": True,
        "json": {"name": "Edge Hive", "n": [1, 2]},
        "text": body.decode(),
        "used": True,
    }


def test_header_values_are_byte_strings(js: Js) -> None:
    inst = js.instance("""
      Deno.serve((req) => {
        const v = req.headers.get("x-latin");
        return new Response([...v].map((c) => c.charCodeAt(0)).join(","), { headers: { "x-back": v, "x-e": "caf\\u00e9" } });
      });
    """)
    resp = inst.call(abi.encode_request(b"GET", b"/", b"", [(b"x-latin", b"a\xe9\xff")], b""))
    assert resp.body == b"97,233,255"
    assert [v for k, v in resp.headers if k in (b"x-back", b"x-e")] == [b"a\xe9\xff", b"caf\xe9"]


def test_binary_request_body_and_response_bytes(js: Js) -> None:
    inst = js.instance("""
      Deno.serve(async (req) => {
        const bytes = new Uint8Array(await req.arrayBuffer());
        return new Response(bytes.map((b) => 255 - b), { status: 201, headers: { "x-len": String(bytes.length) } });
      });
    """)
    data = bytes(range(256)) * 3
    resp = call(inst, "PUT", body=data)
    assert (resp.status, header(resp, "x-len"), resp.body) == (201, "768", bytes(255 - b for b in data))


def test_response_kinds(js: Js) -> None:
    inst = js.instance("""
      const kinds = {
        empty: () => new Response(null, { status: 204 }),
        text: () => new Response("héllo", { status: 418, statusText: "teapot" }),
        buffer: () => new Response(new TextEncoder().encode("buf").buffer),
        redirect: () => Response.redirect("https://example.com/next", 307),
        cookies: () => { const h = new Headers(); h.append("set-cookie", "a=1"); h.append("set-cookie", "b=2"); return new Response("c", { headers: h }); },
        stream: () => new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode("str")); c.enqueue("eam"); c.close(); } })),
        blob: () => new Response(new Blob(["<b>", "x</b>"], { type: "text/html" })),
        params: () => new Response(new URLSearchParams({ a: "1 2", b: "é" })),
      };
      Deno.serve((req) => kinds[new URL(req.url).searchParams.get("k")]());
    """)

    def get(k: str) -> abi.Response:
        return call(inst, query=f"k={k}")

    assert (get("empty").status, get("empty").body) == (204, b"")
    text = get("text")
    assert (text.status, text.body, header(text, "content-type")) == (418, "héllo".encode(), "text/plain;charset=UTF-8")
    assert get("buffer").body == b"buf"
    redirect = get("redirect")
    assert (redirect.status, header(redirect, "location")) == (307, "https://example.com/next")
    assert [v for k, v in get("cookies").headers if k == b"set-cookie"] == [b"a=1", b"b=2"]
    assert get("stream").body == b"stream"
    blob = get("blob")
    assert (blob.body, header(blob, "content-type")) == (b"<b>x</b>", "text/html")
    params = get("params")
    assert (params.body, header(params, "content-type")) == (
        b"a=1+2&b=%C3%A9",
        "application/x-www-form-urlencoded;charset=UTF-8",
    )


def test_env_from_the_function_config(js: Js) -> None:
    inst = js.instance(
        """
      Deno.serve(() => {
        let setError = null;
        try { Deno.env.set("X", "1"); } catch (e) { setError = e.message; }
        return Response.json({ secret: Deno.env.get("SECRET"), missing: Deno.env.get("NOPE") ?? null,
                               has: Deno.env.has("EMPTY"), all: Deno.env.toObject(), setError });
      });
    """,
        env={"SECRET": "s3cr=t", "EMPTY": ""},
    )
    out = as_json(call(inst))
    assert out["secret"] == "s3cr=t" and out["missing"] is None and out["has"] is True
    assert out["all"] == {"SECRET": "s3cr=t", "EMPTY": ""}
    assert "Deno.env.set" in out["setError"] and "config" in out["setError"]


def test_console_output_reaches_the_function_log(js: Js) -> None:
    log = Log()
    inst = js.instance(
        """
      console.log("loading", 1);
      Deno.serve(() => {
        console.log("log %s=%d", "n", 42, { a: [1, "x"] });
        console.info("info");
        console.debug("debug");
        console.warn("warn");
        console.error("error", new Map([["k", 1]]));
        return new Response("ok");
      });
    """,
        log=log,
    )
    assert log.lines == [("stdout", logging.INFO, "loading 1")]
    assert call(inst).body == b"ok"
    assert log.lines[1:] == [
        ("stdout", logging.INFO, 'log n=42 { a: [ 1, "x" ] }'),
        ("stdout", logging.INFO, "info"),
        ("stdout", logging.INFO, "debug"),
        ("stderr", logging.ERROR, "warn"),
        ("stderr", logging.ERROR, 'error Map(1) { "k" => 1 }'),
    ]


def test_uncaught_exception_is_a_500_with_the_stack_in_the_log(js: Js) -> None:
    log = Log()
    inst = js.instance(
        """
      function validate(body) {
        throw new TypeError("name is required");
      }
      Deno.serve(async (req) => {
        validate(await req.text());
        return new Response("unreachable");
      });
    """,
        log=log,
    )
    resp = call(inst, "POST", body=b"{}")
    assert resp.status == 500
    assert header(resp, "content-type") == "application/json"
    assert as_json(resp) == {"error": "uncaught_exception", "message": "TypeError: name is required"}
    stderr = log.text("stderr")
    assert "Uncaught TypeError: name is required" in stderr
    assert "at validate (function.js:3:" in stderr and "function.js:6:" in stderr
    assert "hive:prelude" not in stderr
    assert call(inst, "POST", body=b"{}").status == 500  # the instance still serves


def test_rejected_promise_and_thrown_values(js: Js) -> None:
    log = Log()
    inst = js.instance(
        """
      Deno.serve(async (req) => {
        const how = new URL(req.url).searchParams.get("how");
        if (how === "reject") return await Promise.reject(new RangeError("nope"));
        if (how === "string") throw "plain string";
        if (how === "object") throw { code: 7 };
        if (how === "cause") throw new Error("outer", { cause: new Error("inner") });
        return new Response("ok");
      });
    """,
        log=log,
    )
    assert as_json(call(inst, query="how=reject")) == {"error": "uncaught_exception", "message": "RangeError: nope"}
    assert as_json(call(inst, query="how=string"))["message"] == "plain string"
    assert as_json(call(inst, query="how=object"))["message"] == "{ code: 7 }"
    assert as_json(call(inst, query="how=cause"))["message"] == "Error: outer"
    assert "Caused by: Error: inner" in log.text("stderr")


def test_unhandled_rejection_elsewhere_is_logged_not_fatal(js: Js) -> None:
    log = Log()
    inst = js.instance(
        """
      Deno.serve(() => {
        Promise.reject(new Error("forgotten"));
        setTimeout(() => { throw new Error("in a timer"); }, 0);
        return new Promise((resolve) => setTimeout(() => resolve(new Response("fine")), 2));
      });
    """,
        log=log,
    )
    assert call(inst).body == b"fine"
    stderr = log.text("stderr")
    assert "Uncaught (in promise) Error: forgotten" in stderr
    assert "Uncaught Error: in a timer" in stderr


def test_handler_that_returns_no_response_or_never_settles(js: Js) -> None:
    inst = js.instance("""
      Deno.serve((req) => {
        const how = new URL(req.url).searchParams.get("how");
        if (how === "object") return { status: 200 };
        if (how === "never") return new Promise(() => {});
        if (how === "error") return Response.error();
        return undefined;
      });
    """)
    for how, message in [("object", "not a Object"), ("undefined", "not undefined"), ("error", "Response.error()")]:
        resp = call(inst, query=f"how={how}")
        assert resp.status == 500
        out = as_json(resp)
        assert out["error"] == "handler_failed" and message in out["message"]
    never = call(inst, query="how=never")
    assert (never.status, as_json(never)["error"]) == (500, "handler_failed")
    assert "never settled" in as_json(never)["message"]


def test_deno_serve_forms_and_on_error(js: Js) -> None:
    forms = [
        'Deno.serve({ port: 8000 }, () => new Response("a"));',
        'Deno.serve({ handler: () => new Response("a") });',
        'Deno.serve({ onError: (e) => new Response("handled " + e.message, { status: 503 }) }, () => { throw new Error("x"); });',
    ]
    assert call(js.instance(forms[0])).body == b"a"
    assert call(js.instance(forms[1])).body == b"a"
    handled = call(js.instance(forms[2]))
    assert (handled.status, handled.body) == (503, b"handled x")
    default_export = call(
        js.instance('export default { fetch: (req) => new Response("default " + req.method) };'), "PUT"
    )
    assert default_export.body == b"default PUT"
    with pytest.raises(JsLoadError, match="called twice"):
        js.instance('Deno.serve(() => new Response("1")); Deno.serve(() => new Response("2"));')


def test_wait_until_runs_before_the_invocation_returns(js: Js) -> None:
    log = Log()
    inst = js.instance(
        """
      let done = [];
      Deno.serve((req) => {
        EdgeRuntime.waitUntil(new Promise((r) => setTimeout(r, 5)).then(() => { done.push("bg"); console.log("background done"); }));
        EdgeRuntime.waitUntil(Promise.reject(new Error("bg failed")));
        return Response.json({ before: done.length });
      });
    """,
        log=log,
    )
    assert as_json(call(inst)) == {"before": 0}
    assert "background done" in log.text("stdout")
    assert "Uncaught (in promise) Error: bg failed" in log.text("stderr")
    assert as_json(call(inst)) == {"before": 1}


def test_timers_do_not_outlive_their_invocation(js: Js) -> None:
    inst = js.instance("""
      let ticks = 0;
      Deno.serve((req) => {
        if (new URL(req.url).searchParams.has("start")) setInterval(() => ticks++, 1);
        return new Promise((r) => setTimeout(() => r(Response.json({ ticks })), 10));
      });
    """)
    late = js.instance("""
      let fired = false;
      setTimeout(() => { fired = true; }, 0);
      Deno.serve(() => new Promise((r) => setTimeout(() => r(Response.json({ fired })), 5)));
    """)
    assert as_json(call(late)) == {"fired": False}  # a top-level timer ends with the load
    first = as_json(call(inst, query="start"))["ticks"]
    assert first >= 1
    # The interval was dropped when the first invocation ended: nothing ticks during the second.
    assert as_json(call(inst))["ticks"] == first


def test_unknown_apis_fail_with_a_message_naming_them(js: Js) -> None:
    inst = js.instance("""
      Deno.serve(async (req) => {
        const which = new URL(req.url).searchParams.get("api");
        if (which === "readFile") await Deno.readFile("/etc/passwd");
        if (which === "process") return new Response(process.env.HOME);
        if (which === "require") require("fs");
        return new Response("ok");
      });
    """)
    read = as_json(call(inst, query="api=readFile"))
    assert read["error"] == "uncaught_exception" and "Deno.readFile is not available in Edge Hive" in read["message"]
    assert as_json(call(inst, query="api=process"))["message"] == "ReferenceError: process is not defined"
    assert "require" in as_json(call(inst, query="api=require"))["message"]


def test_fetch_without_a_grant_rejects_naming_the_url_and_the_grant(js: Js) -> None:
    inst = js.instance("""
      Deno.serve(async () => {
        try { await fetch("https://api.example.com/v1", { method: "POST", body: "{}" }); }
        catch (e) { return Response.json({ name: e.name, message: e.message }); }
      });
    """)
    out = as_json(call(inst))
    assert out["name"] == "TypeError"
    # No allowed_hosts here: the host refuses as a value (tests/ts cover fetches that are sent).
    assert "(host_not_allowed)" in out["message"] and "POST https://api.example.com/v1" in out["message"]
    assert "allowed_hosts" in out["message"]


def test_infinite_loop_hits_the_time_limit_and_a_new_instance_works(js: Js) -> None:
    source = 'Deno.serve((req) => { if (req.method === "POST") for (;;) {} return new Response("alive"); });'
    inst = js.instance(source, limits=GuestLimits(timeout_ms=100))
    with pytest.raises(Timeout):
        call(inst, "POST")
    # The host discards an instance after a trap; a fresh one of the same function serves.
    assert call(js.instance(source, limits=GuestLimits(timeout_ms=100))).body == b"alive"


def test_memory_limit_is_a_clean_error(js: Js) -> None:
    log = Log()
    inst = js.instance(
        """
      Deno.serve((req) => {
        if (req.method === "POST") { const hoard = []; for (;;) hoard.push(new Array(65536).fill(1.5)); }
        return new Response("still here");
      });
    """,
        limits=GuestLimits(timeout_ms=20_000, memory_bytes=24 << 20),
        log=log,
    )
    resp = call(inst, "POST")
    assert resp.status == 500
    assert as_json(resp)["error"] == "out_of_memory"
    assert "out of memory" in log.text("stderr")
    assert call(inst).body == b"still here"  # the hoard was garbage: the instance recovers


def test_deep_recursion_is_a_range_error(js: Js) -> None:
    inst = js.instance("function down(n) { return down(n + 1) + 1; } Deno.serve(() => { down(0); });")
    assert as_json(call(inst))["message"] == "RangeError: Maximum call stack size exceeded"


def test_malformed_envelopes_are_400s_and_the_instance_keeps_serving(js: Js) -> None:
    inst = js.instance(HELLO)
    good = abi.encode_request(b"POST", b"/p", b"q=1", [(b"host", b"h"), (b"x", b"y")], b"body")
    for cut in range(len(good)):
        resp = inst.call(good[:cut])
        assert (resp.status, as_json(resp)["error"]) == (400, "bad_request"), cut
    assert inst.call(good + b"x").status == 400
    assert inst.call(b"\xff\xff\xff\xff" + good[4:]).status == 400
    assert as_json(inst.call(good)) == {"message": "Hello, Edge Hive!"}


def test_large_bodies_both_ways(js: Js) -> None:
    inst = js.instance(
        "Deno.serve(async (req) => new Response((await req.text()).toUpperCase()));",
        limits=GuestLimits(timeout_ms=10_000),
    )
    body = b"abc" * (1 << 20)
    assert inst.call(abi.encode_request(b"POST", b"/", b"", [], body)).body == body.upper()


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("const x = ;", "does not compile: SyntaxError"),
        (
            'import { x } from "npm:left-pad"; Deno.serve(() => new Response(x));',
            "import 'npm:left-pad' is not available",
        ),
        ('throw new Error("bad config");', "threw while loading: Error: bad config"),
        ('await Promise.reject(new Error("async boom"));', "threw while loading: Error: async boom"),
        ('console.log("no handler");', "never registered a handler"),
        ('await new Promise(() => {}); Deno.serve(() => new Response("x"));', "top-level await never settled"),
    ],
)
def test_load_failures_name_the_problem(js: Js, source: str, fragment: str) -> None:
    with pytest.raises(JsLoadError) as info:
        js.instance(source)
    assert fragment in info.value.message
    assert info.value.code == "js_load_failed"


def test_es_module_with_top_level_await_and_exports(js: Js) -> None:
    inst = js.instance("""
      const config = await Promise.resolve({ greeting: "hi" });
      export function greet(name) { return `${config.greeting} ${name}`; }
      Deno.serve(() => Response.json({ text: greet("module"), url: import.meta.url, main: import.meta.main,
                                       asset: import.meta.resolve("./data.json") }));
    """)
    assert as_json(call(inst)) == {
        "text": "hi module",
        "url": "file:///function.js",
        "main": True,
        "asset": "file:///data.json",
    }


def test_classic_script_bundle(js: Js) -> None:
    # An IIFE bundle in sloppy mode (not valid as a module: `with`).
    inst = js.instance('(function () { var o = { v: "script" }; with (o) { Deno.serve(() => new Response(v)); } })();')
    assert call(inst).body == b"script"


def test_top_level_code_has_the_load_time_limit(js: Js) -> None:
    with pytest.raises(Timeout):
        js.instance("for (;;) {}", load_timeout_ms=100)
    # The load's limit is its own, not the request's: a start slower than one request may take loads.
    inst = js.instance(
        "const t = Date.now(); while (Date.now() - t < 150) {} Deno.serve(() => new Response('ok'));",
        limits=GuestLimits(timeout_ms=50),
    )
    assert call(inst).body == b"ok"


def test_bytecode_bundle_loads_like_source(js: Js, sandbox: Sandbox) -> None:
    source = b'import { strict } from "data:nothing"; Deno.serve(() => new Response("x"));'
    with pytest.raises(JsLoadError, match="is not available"):
        compile_bundle(sandbox, js.engine, source)
    source = b"""const n = 40 + 2;
      function where() { return new Error("here").stack; }
      Deno.serve((req) => Response.json({ n, m: req.method, src: String(where).includes("new Error"), stack: where() }));"""
    stripped = compile_bundle(sandbox, js.engine, source)
    kept = compile_bundle(sandbox, js.engine, source, strip_source=False)
    assert stripped.startswith(b"\0hive-qjs-bc\1") and len(stripped) < len(kept)
    out = as_json(call(js.instance(stripped), "PATCH"))
    assert (out["n"], out["m"], out["src"]) == (42, "PATCH", False)
    assert "function.js:2:" in out["stack"]  # line numbers survive the stripping
    assert as_json(call(js.instance(kept)))["src"] is True


def test_engine_imports_only_granted_host_functions(js: Js) -> None:
    module = js.engine.module
    assert unknown_imports(module) == []
    assert {i.name for i in module.imports if i.module != "hive"} <= ENGINE_WASI
    assert {i.name for i in module.imports if i.module == "hive"} == {"fetch_send", "wait", "result_read"}
    check_interface(module, Manifest(wasi=["clocks", "random", "stdio", "env"]).allowed_wasi_imports())
    assert ENGINE_WASI <= frozenset().union(*WASI_GROUPS.values())
    assert len(engine_key()) == 16


def test_fuel_flavour_counts_js_work(js: Js, sandbox: Sandbox, engine_wasm: Path) -> None:
    fuelled = load_engine(sandbox, engine_wasm, fuel=True)
    source = b'Deno.serve((req) => { if (req.method === "POST") for (;;) {} return new Response("ok"); });'
    inst = new_instance(sandbox, fuelled, source, GuestLimits(timeout_ms=10_000, fuel=50_000_000), GuestContext("fn"))
    assert call(inst).body == b"ok"
    assert inst.fuel_used is not None and 0 < inst.fuel_used < 50_000_000
    with pytest.raises(FuelExhausted):
        call(inst, "POST")
