"""The AssemblyScript SDK (hive/sdk/assemblyscript): hello-as, an echo guest over the ABI vectors, the template.

Everything is built with hive.build.build_function (npm install, then asc), the way
`edge-hive function build` does it, and run through the real host sandbox. Node and npm must be
installed (scripts/toolchains/assemblyscript.sh); the npm registry must be reachable for the installs.
"""

from __future__ import annotations

import json
import logging
import re
import time
import tomllib
from pathlib import Path

import pytest

from hive import abi
from hive.build import build_function
from hive.errors import AbiViolation, BuildError, GuestTrap
from hive.sandbox import GuestInstance, Sandbox
from hive.toolchains import assemblyscript as as_toolchain
from tests.sdk import common
from tests.sdk.common import (
    ROOT,
    RawGuest,
    build_logged,
    case,
    check_header_lookups,
    check_hello_edge_hive,
    check_hello_greetings,
    check_invalid_requests,
    check_request_vectors,
    check_response_vectors,
    check_template_greets,
    copy_example,
    copy_template,
    decode,
    guest_log_lines,
    hello_memory_sizes,
    instance,
    mutated_requests,
    req,
)

pytestmark = pytest.mark.slow  # runs npm and the AssemblyScript compiler

ABI_EXPORTS = {**common.ABI_EXPORTS, "_initialize": ([], [])}

# One guest whose behaviour the request method picks (REBUILD, LOOKUP, CASE or any other: see
# tests/sdk/common.py, and test_zig_sdk.py for the same driver in Zig); CASE names one of the cases in `special`.
ECHO_TS = r"""
import { JSON } from "json-as";
import {
  Headers, Request, Response, decodeUtf8, env, log, now, rfc3339, serve,
} from "edge-hive";

function utf8(s: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(s));
}

function le32(n: i32): Uint8Array {
  const b = new Uint8Array(4);
  store<u32>(b.dataStart, <u32>n);
  return b;
}

function putField(res: Response, data: Uint8Array): void {
  res.append(le32(data.length));
  res.append(data);
}

function describe(req: Request): Response {
  const res = new Response(200);
  putField(res, utf8(req.method));
  putField(res, utf8(req.path));
  putField(res, utf8(req.query));
  res.append(le32(req.headers.length));
  for (let i = 0; i < req.headers.entries.length; i++) {
    putField(res, utf8(req.headers.entries[i].name));
    putField(res, utf8(req.headers.entries[i].value));
  }
  putField(res, req.body);
  return res;
}

function rebuild(req: Request): Response {
  const p0 = req.body.dataStart;
  const res = new Response(<i32>load<u32>(p0));
  const count = load<u32>(p0 + 4);
  let p = p0 + 8;
  for (let i: u32 = 0; i < count; i++) {
    const nl = <usize>load<u32>(p);
    const vl = <usize>load<u32>(p + 4 + nl);
    res.header(decodeUtf8(p + 4, nl), decodeUtf8(p + 8 + nl, vl));
    p += 8 + nl + vl;
  }
  const bl = <i32>load<u32>(p);
  const start = <i32>(p + 4 - p0);
  res.setText("replaced");
  res.setBody(req.body.slice(start, start + bl / 2));
  res.append(req.body.slice(start + bl / 2, start + bl));
  return res;
}

function lookup(req: Request): Response {
  const first = req.headers.get(req.query);
  const res = new Response(first !== null ? 200 : 404);
  const all = req.headers.getAll(req.query);
  for (let i = 0; i < all.length; i++) res.header("x-value", all[i]);
  if (first !== null) res.setText(first);
  return res;
}

@json
class Payload {
  a: i32 = 0;
  s: string = "";
  list: i32[] = [];
  ok: bool = false;
}

function special(req: Request): Response {
  const q = req.query;
  if (q == "abort") throw new Error("boom");
  if (q == "status") return new Response(600);
  if (q == "oom") {
    const huge = new Uint8Array(512 << 20);
    huge[0] = 1;
    return Response.text("unreachable");
  }
  if (q == "bad-headers") {
    const res = new Response(200);
    const big = "v".repeat(16385);
    let dropped = 0;
    if (!res.headers.append("x bad", "v")) dropped++;
    if (!res.headers.append("x-a", "a\r\nb")) dropped++;
    if (!res.headers.append("", "v")) dropped++;
    if (!res.headers.append("x-nul", "a\0b")) dropped++;
    if (!res.headers.append("x-big", big)) dropped++;
    if (!res.headers.append("x-long-utf8", "é".repeat(8193))) dropped++;
    res.header("x-max", big.slice(0, 16384));
    for (let i = 0; i < 300; i++) res.header("x-many", "1");
    return res.setText(dropped.toString() + " " + res.headers.length.toString());
  }
  if (q == "json") {
    const p = new Payload();
    p.a = 1;
    p.s = "é\"\n\u0001</\uD83D\uDC1D";
    p.list = [-1, 2];
    p.ok = true;
    return Response.json<Payload>(p, 201);
  }
  if (q == "parse") {
    const p = req.json<Payload>();
    if (p === null) return Response.text("invalid", 422);
    return Response.json<Payload>(p);
  }
  if (q == "object") {
    const o = req.jsonObject();
    if (o === null) return Response.text("not an object", 422);
    return Response.text(o.keys().join(","));
  }
  if (q == "text") return Response.text("plain é");
  if (q == "body-text") return Response.text(req.text());
  if (q == "bytes") {
    const b = new Uint8Array(3);
    b[1] = 0xff;
    return Response.bytes(b, "application/octet-stream");
  }
  if (q == "env") {
    const a = env("GREETING");
    const b = env("EMPTY");
    const c = env("MISSING");
    const viaProcess = process.env.has("GREETING") ? process.env.get("GREETING") : "-";
    return Response.text(
      (a !== null ? a : "-") + "|" + (b !== null ? b : "-") + "|" + (c !== null ? c : "-") + "|" + viaProcess,
    );
  }
  if (q == "log") {
    log.debug("debug 1");
    log.info("info two");
    log.warn("warn");
    log.error("err");
    console.log("from console");
    log.info("x".repeat(20000));
    return new Response(204);
  }
  if (q == "time") {
    return Response.text(
      rfc3339(0) + " " + rfc3339(951868799) + " " + rfc3339(4102444800) + " " + now().toString() + " " +
        (Date.now() / 1000).toString(),
    );
  }
  if (q == "random") {
    const x = Math.random();
    return Response.text(x >= 0 && x < 1 ? "ok" : "bad");
  }
  if (q == "query") {
    const tmp = new Request();
    tmp.query = req.text();
    const names = ["a", "b", "c", "d", "é", "zz"];
    let out = "";
    for (let i = 0; i < names.length; i++) {
      const v = tmp.queryParam(names[i]);
      out += names[i] + "=" + (v !== null ? v : "(null)") + ";";
    }
    return Response.text(out);
  }
  if (q == "big") {
    const res = new Response(200);
    for (let i = 0; i < 100000; i++) {
      let s = i.toString();
      while (s.length < 9) s = "0" + s;
      res.write(s + "\n");
    }
    return res;
  }
  if (q == "headers") {
    const h = new Headers();
    h.append("A", "1");
    h.append("b", "2");
    h.append("a", "3");
    h.set("B", "4");
    h.delete("missing");
    const res = new Response(200);
    res.headers = h;
    return res.setText((h.has("a") ? "y" : "n") + (h.has("c") ? "y" : "n"));
  }
  return Response.text("unknown case", 404);
}

serve((req: Request): Response => {
  if (req.method == "REBUILD") return rebuild(req);
  if (req.method == "LOOKUP") return lookup(req);
  if (req.method == "CASE") return special(req);
  return describe(req);
});
"""

ECHO_PACKAGE = {
    "name": "echo",
    "version": "0.0.0",
    "private": True,
    "devDependencies": as_toolchain.sdk_versions(),
}


def check_interface(path: Path) -> dict[str, object]:
    return common.check_interface(path, ABI_EXPORTS)


# ---- hello-as -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], float]:
    folder = copy_example(tmp_path_factory, "hello-as", "node_modules", "package-lock.json")
    start = time.perf_counter()
    path, lines = build_logged(folder)
    return path, lines, time.perf_counter() - start


def test_hello_builds(hello: tuple[Path, list[str], float]) -> None:
    path, lines, seconds = hello
    assert path.name == "hello-as.wasm" and path.is_file()
    assert any(line.startswith("installing npm packages") for line in lines)
    assert any("npm install --no-package-lock" in line for line in lines)
    assert any("assemblyscript/bin/asc.js node_modules/.edge-hive/entry.ts" in line for line in lines)
    folder = path.parent
    assert not (folder / "package-lock.json").exists()
    # The SDK is the installed hive package's copy.
    sdk = folder / "node_modules" / "edge-hive" / "assembly" / "edge-hive.ts"
    assert sdk.read_bytes() == (as_toolchain.SDK_DIR / "assembly" / "edge-hive.ts").read_bytes()
    print(f"hello-as: built in {seconds:.1f} s (npm install included), {path.stat().st_size} bytes")


def test_rebuild_skips_npm(hello: tuple[Path, list[str], float]) -> None:
    lines: list[str] = []
    start = time.perf_counter()
    build_function(hello[0].parent, echo=lines.append)
    assert not any("npm" in line for line in lines)
    print(f"hello-as: rebuilt in {time.perf_counter() - start:.1f} s")


def test_hello_interface(hello: tuple[Path, list[str], float]) -> None:
    info = check_interface(hello[0])
    assert info["imports"] == {("wasi_snapshot_preview1", "clock_time_get"), ("hive", "log")}
    assert info["size"] < 100_000


def _hello(inst: GuestInstance, body: bytes) -> abi.Response:
    return inst.call(req(b"POST", b"/api/v1/edge/hello-as", b"", [(b"content-type", b"application/json")], body))


def test_hello_responses(sandbox: Sandbox, hello: tuple[Path, list[str], float],
                         caplog: pytest.LogCaptureFixture) -> None:
    inst = instance(sandbox, hello[0].read_bytes())
    check_hello_edge_hive(_hello(inst, b'{"name": "Edge Hive"}'))
    cases = [
        (b"", "World"), (b"not json", "World"), (b'{"name": 7}', "World"), (b'{"who":"x"}', "World"),
        (b"[1,2]", "World"), (b'"name"', "World"), (b'{"name":null}', "World"), (b'{"name":"x"} trailing', "World"),
        (b'{"name":"x",}', "World"), (b"{" + b'"a":[' * 300 + b"]" * 300 + b"}", "World"),
        (bytes(range(256)), "World"), (b'{"name":"raw \xff"}', "raw \ufffd"),
        (b'{"name":"a\\"b\\u00e9\\ud83d\\udc1d</"}', 'a"bé🐝</'), ('{"name":"π"}'.encode(), "π"),
        (b'{"name":"\\n\\u0000\\t"}', "\n\x00\t"), (b'{"name":"first","name":"last"}', "last"),
        (b'{"other":{"name":"inner"},"list":[1,"x"],"name":"outer"}', "outer"),
        (b'{"name":"Hello, \\ud83d\\udc1d!"}', "Hello, 🐝!"), ('{"name":"1234567🐝"}'.encode(), "1234567🐝"),
    ]
    check_hello_greetings(inst, _hello, cases)
    assert not [r for r in caplog.records if r.name == "hive.guest"]


def test_memory_stays_bounded(sandbox: Sandbox, hello: tuple[Path, list[str], float]) -> None:
    inst = instance(sandbox, hello[0].read_bytes())
    sizes = hello_memory_sizes(inst, _hello)
    assert sizes[2000] == sizes[100], sizes
    assert sizes[100] <= 16 << 20, sizes


# ---- the echo guest over the shared vectors -----------------------------------------------------------


@pytest.fixture(scope="module")
def echo_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("fn") / "echo"
    (folder / "assembly").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "echo"\nlanguage = "assemblyscript"\n')
    (folder / "package.json").write_text(json.dumps(ECHO_PACKAGE))
    (folder / "assembly" / "index.ts").write_text(ECHO_TS)
    path = build_function(folder)
    info = check_interface(path)
    assert ("wasi_snapshot_preview1", "fd_write") in info["imports"]  # console.log through WASI
    return path.read_bytes()


@pytest.fixture
def echo(sandbox: Sandbox, echo_wasm: bytes) -> RawGuest:
    return RawGuest(sandbox, echo_wasm, env=[b"GREETING=hello=world", b"EMPTY="])


def test_request_vectors_decode_exactly(echo: RawGuest) -> None:
    check_request_vectors(echo.run)


def test_response_vectors_encode_exactly(echo: RawGuest) -> None:
    check_response_vectors(lambda envs: echo.run([req(b"REBUILD", body=env) for env in envs]))


def test_header_lookup_ignores_case(echo: RawGuest) -> None:
    check_header_lookups(echo.run, b"LOOKUP")


def test_invalid_requests_get_400(echo: RawGuest) -> None:
    check_invalid_requests(echo.run)


def _utf8(*fields: bytes) -> bool:
    try:
        for f in fields:
            f.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_mutated_requests_never_trap(echo: RawGuest) -> None:
    for env in mutated_requests():
        resp = decode(echo.call(env))
        try:
            d = abi.decode_request(env)
        except AbiViolation:
            assert resp.status == 400
        else:
            if d.method in (b"REBUILD", b"LOOKUP", b"CASE"):
                continue
            assert resp.status == 200
            # Text fields are strings in AssemblyScript: exact when they are UTF-8, U+FFFD otherwise.
            if _utf8(d.method, d.path, d.query, *(x for h in d.headers for x in h)):
                assert resp.body == env


def test_failures(sandbox: Sandbox, echo_wasm: bytes, echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    resp = case(echo, "status")
    assert resp.status == 500 and json.loads(resp.body)["error"] == "handler_failed"
    assert resp.headers == [(b"content-type", b"application/json")]
    assert "handler returned status 600" in caplog.text
    assert decode(echo.call(req(body=b"still alive"))).status == 200
    # No exceptions in AssemblyScript: throw and running out of memory abort, which is logged and traps.
    inst = instance(sandbox, echo_wasm)
    with pytest.raises(GuestTrap):
        inst.call(req(b"CASE", b"/", b"abort"))
    assert re.search(r"abort: boom in assembly/index\.ts\(\d+:\d+\)", caplog.text)
    inst = instance(sandbox, echo_wasm)
    with pytest.raises(GuestTrap):
        inst.call(req(b"CASE", b"/", b"oom"))


def test_header_builder_drops_what_the_host_refuses(echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    resp = case(echo, "bad-headers")
    assert resp.status == 200 and resp.body == b"6 256"
    assert len(resp.headers) == 256 and resp.headers[0] == (b"x-max", b"v" * 16384)
    assert caplog.text.count("dropped response header") == 6 + 45
    assert "more than 256 headers" in caplog.text and "contains CR, LF or NUL" in caplog.text
    assert "longer than 16 KiB" in caplog.text


def test_builders_and_helpers(echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    resp = case(echo, "json")
    assert resp.status == 201 and resp.headers == [(b"content-type", b"application/json")]
    assert json.loads(resp.body) == {"a": 1, "s": 'é"\n\x01</🐝', "list": [-1, 2], "ok": True}
    resp = case(echo, "parse", b'{"a":5,"s":"x\\u00e9","list":[3],"ok":false}')
    assert json.loads(resp.body) == {"a": 5, "s": "xé", "list": [3], "ok": False}
    assert case(echo, "parse", b'{"a":5,').status == 422
    assert case(echo, "object", b' {"b":1,"a":{"c":[]}}').body == b"b,a"
    for body in (b"[1]", b"1", b'"x"', b"{", b""):
        assert case(echo, "object", body).status == 422
    assert case(echo, "text") == abi.Response(200, [(b"content-type", b"text/plain; charset=utf-8")], "plain é".encode())
    assert case(echo, "body-text", b"ok \xff\xc3 \xe2\x82x").body == "ok \ufffd\ufffd \ufffdx".encode()
    assert case(echo, "bytes").body == b"\x00\xff\x00"
    assert case(echo, "env").body == b"hello=world||-|hello=world"
    a, b, c, now, date_now = case(echo, "time").body.decode().split()
    assert (a, b, c) == ("1970-01-01T00:00:00Z", "2000-02-29T23:59:59Z", "2100-01-01T00:00:00Z")
    assert abs(int(now) - time.time()) < 300 and abs(float(date_now) - time.time()) < 300
    assert case(echo, "random").body == b"ok"
    assert case(echo, "query", b"a=1&b=%20x+y&a=2&c&d=%zz&%C3%A9=%E2%82%AC").body == \
        "a=1;b= x y;c=;d=%zz;é=€;zz=(null);".encode()
    big = case(echo, "big").body
    assert len(big) == 1_000_000 and big.endswith(b"000099999\n")
    resp = case(echo, "headers")
    assert resp.body == b"yn" and resp.headers == [(b"a", b"1"), (b"a", b"3"), (b"b", b"4")]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    assert case(echo, "log").status == 204
    levels = guest_log_lines(caplog)
    assert levels[:5] == [(logging.DEBUG, "debug 1"), (logging.INFO, "info two"), (logging.WARNING, "warn"),
                          (logging.ERROR, "err"), (logging.INFO, "from console")]
    assert levels[5][1] == "x" * 8192  # truncated to the host's line limit, not dropped


# ---- the template ------------------------------------------------------------------------------------


def test_template_builds_after_substitution(sandbox: Sandbox, tmp_path: Path) -> None:
    folder = copy_template("assemblyscript", tmp_path / "my-fn")
    text = "\n".join(f.read_text(encoding="utf-8") for f in folder.rglob("*") if f.is_file())
    assert "{{" not in text and "edge-hive function build" in (folder / "README.md").read_text()
    assert tomllib.loads((folder / "hive.toml").read_text())["function"] == {"name": "my-fn",
                                                                              "language": "assemblyscript"}
    pkg = json.loads((folder / "package.json").read_text())
    assert pkg["name"] == "my-fn" and pkg["devDependencies"] == as_toolchain.sdk_versions()
    check_template_greets(sandbox, folder, "AssemblyScript", ABI_EXPORTS)


def test_examples_pin_the_sdk_versions() -> None:
    pkg = json.loads((ROOT / "functions" / "hello-as" / "package.json").read_text())
    assert pkg["devDependencies"] == as_toolchain.sdk_versions()
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in as_toolchain.sdk_versions().values())  # exact pins


# ---- toolchain errors ---------------------------------------------------------------------------------


def test_build_without_node_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "assemblyscript"\n')
    monkeypatch.setattr(as_toolchain.shutil, "which", lambda tool: None)
    with pytest.raises(BuildError, match=re.escape("apt-get install nodejs npm")):
        build_function(tmp_path)


def test_build_reports_compiler_errors(tmp_path: Path, hello: tuple[Path, list[str], float]) -> None:
    folder = tmp_path / "bad"
    (folder / "assembly").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "bad"\nlanguage = "assemblyscript"\n')
    (folder / "package.json").write_text(json.dumps(ECHO_PACKAGE))
    (folder / "assembly" / "index.ts").write_text("let x: i32 = oops();\n")
    with pytest.raises(BuildError, match="oops") as e:
        build_function(folder)
    assert e.value.code == "build_failed"


def test_build_refuses_imports_the_host_lacks(tmp_path: Path, hello: tuple[Path, list[str], float]) -> None:
    folder = tmp_path / "envy"
    (folder / "assembly").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "envy"\nlanguage = "assemblyscript"\n')
    (folder / "package.json").write_text(json.dumps(ECHO_PACKAGE))
    (folder / "assembly" / "index.ts").write_text(
        'import { Request, Response, serve } from "edge-hive";\n'
        '@external("env", "secret") declare function secret(): i32;\n'
        "serve((req: Request): Response => Response.text(secret().toString()));\n")
    with pytest.raises(BuildError, match=r"imports env\.secret, which Edge Hive does not provide"):
        build_function(folder)
    assert not (folder / "envy.wasm").exists()


def test_no_handler_and_trace(sandbox: Sandbox, tmp_path: Path, hello: tuple[Path, list[str], float],
                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    folder = tmp_path / "idle"
    (folder / "assembly").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "idle"\nlanguage = "assemblyscript"\n')
    (folder / "package.json").write_text(json.dumps(ECHO_PACKAGE))
    (folder / "assembly" / "index.ts").write_text('trace("starting", 2, 1, 2.5);\n')
    path = build_function(folder)
    check_interface(path)
    inst = instance(sandbox, path.read_bytes())  # _initialize runs the top-level code
    assert "trace: starting 1.0, 2.5" in caplog.text
    resp = inst.call(req())
    assert resp.status == 500 and json.loads(resp.body)["error"] == "handler_failed"


def test_build_needs_package_json_and_entry(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "assemblyscript"\n')
    with pytest.raises(BuildError, match="package.json"):
        build_function(tmp_path)
    (tmp_path / "package.json").write_text(json.dumps(ECHO_PACKAGE))
    with pytest.raises(BuildError, match="assembly/index.ts"):
        build_function(tmp_path)
