"""The Rust SDK (hive/sdk/rust/edge-hive-wasm): hello-rust, a driver guest over the ABI vectors, and the
template, all built with Debian's cargo the way `edge-hive function build` does and run in the real sandbox.

The toolchain comes from scripts/toolchains/rust.sh; without it these tests fail (they never skip).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive import abi
from hive.build import build_function
from hive.errors import BuildError, GuestTrap
from hive.sandbox import GuestInstance, GuestLimits, Sandbox
from hive.toolchains import rust
from tests.sdk.common import (
    ROOT,
    VECTORS,
    build_logged,
    check_echoed_or_rejected,
    check_hello_edge_hive,
    check_interface,
    copy_example,
    copy_template,
    decode,
    guest_log_lines,
    instance,
    req,
)

pytestmark = pytest.mark.slow  # cargo: about 20 s for the first build of each crate

# Routes by path to exercise the API; any other path echoes the request, re-encoded from the accessors.
DRIVER_RS = r"""
use edge_hive_wasm::{edge_function, log, Error, Request, Response};

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn describe(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    field(&mut out, req.method().as_bytes());
    field(&mut out, req.path().as_bytes());
    field(&mut out, req.query().as_bytes());
    let headers: Vec<(&str, &str)> = req.headers().collect();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        field(&mut out, name.as_bytes());
        field(&mut out, value.as_bytes());
    }
    field(&mut out, req.body());
    out
}

// The body is a (trusted) response envelope: build the same response with the builder API.
fn rebuild(env: &[u8]) -> Response {
    let u32_at = |p: usize| u32::from_le_bytes([env[p], env[p + 1], env[p + 2], env[p + 3]]) as usize;
    let text = |p: usize, n: usize| String::from_utf8(env[p..p + n].to_vec()).unwrap();
    let mut res = Response::new(u32_at(0) as u16).body("replaced");
    let mut p = 8;
    for _ in 0..u32_at(4) {
        let (nl, vl) = (u32_at(p), u32_at(p + 4 + u32_at(p)));
        res = res.header(text(p + 4, nl), text(p + 8 + nl, vl));
        p += 8 + nl + vl;
    }
    res.body(&env[p + 4..p + 4 + u32_at(p)])
}

#[edge_function]
fn handle(req: Request) -> Result<Response, Error> {
    match req.path() {
        "/t/build" => Ok(rebuild(req.body())),
        "/t/header" => {
            let mut res = Response::new(if req.header(req.query()).is_some() { 200 } else { 404 });
            for value in req.header_values(req.query()) {
                res = res.header("x-value", value);
            }
            Ok(res.body(req.header(req.query()).unwrap_or("")))
        }
        "/t/query" => {
            let names = req.text()?.split('\n').map(|n| format!("{:?}", req.query_param(n)));
            Ok(Response::text(names.collect::<Vec<_>>().join("\n")))
        }
        "/t/text" => Ok(Response::text(req.text()?.to_uppercase())),
        "/t/json" => {
            let value: serde_json::Value = req.json()?;
            Ok(Response::json(&value["a"])?.with_status(201).header("x-kind", "json"))
        }
        "/t/bad-request" => Err(Error::bad_request("no \"name\"\n")),
        "/t/teapot" => Err(Error::new(418, "short and stout").with_code("teapot")),
        "/t/parse" => Ok(Response::text(format!("{}", "x1".parse::<u32>()?))),
        "/t/bad-status" => Ok(Response::new(600)),
        "/t/bad-headers" => {
            let mut res = Response::new(200)
                .header("x bad", "v")
                .header("x-a", "a\r\nb")
                .header("", "v")
                .header("x-nul", "a\0b")
                .header("x-big", "v".repeat(16385))
                .header("x-max", "v".repeat(16384));
            for _ in 0..300 {
                res = res.header("x-many", "1");
            }
            Ok(res)
        }
        "/t/log" => {
            log::info!("info {} {}", req.method(), 42);
            log::warn!("warned");
            edge_hive_wasm::hive_log(log::Level::Error, "errored");
            Ok(Response::new(204))
        }
        "/t/env" => Ok(Response::text(std::env::var("GREETING").unwrap_or_else(|_| "unset".into()))),
        "/t/panic" => panic!("boom {}", 7),
        "/t/big" => Ok(Response::new(200).body(vec![b'x'; 1_000_000])),
        _ => Ok(Response::new(200).body(describe(&req))),
    }
}
"""

DRIVER_CARGO = """\
[package]
name = "rust-driver"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
edge-hive-wasm = "0.1"
serde_json = "1"

[profile.release]
opt-level = "s"
strip = true
"""


def instantiate(sandbox: Sandbox, wasm: Path, env: list[bytes] | None = None) -> GuestInstance:
    return instance(sandbox, wasm.read_bytes(), env, GuestLimits(timeout_ms=2000), "rust")


def error_of(resp: abi.Response) -> dict[str, str]:
    assert resp.headers == [(b"content-type", b"application/json")]
    return json.loads(resp.body)


# ---- hello-rust, built the way `edge-hive function build` does it ------------------------------------


@pytest.fixture(scope="module")
def hello_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    return build_logged(copy_example(tmp_path_factory, "hello-rust", "target"))


@pytest.fixture(scope="module")
def hello(sandbox: Sandbox, hello_build: tuple[Path, list[str]]) -> GuestInstance:
    return instantiate(sandbox, hello_build[0])


def test_hello_builds_offline_with_debian_cargo(hello_build: tuple[Path, list[str]]) -> None:
    path, lines = hello_build
    assert path.name == "hello-rust.wasm" and path.is_file()
    assert lines[0].startswith("/usr/bin/cargo build --release --offline --target wasm32-wasi ")
    assert str(rust.SDK_DIR) in lines[0]
    assert not (path.parent / "Cargo.lock").exists()  # resolved against Debian's registry: not left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["Cargo.toml", "README.md", "hello-rust.wasm", "hive.toml",
                                                            "src", "target"]


def test_hello_exports_and_imports(hello_build: tuple[Path, list[str]]) -> None:
    info = check_interface(hello_build[0])
    assert ("wasi_snapshot_preview1", "clock_time_get") in info["imports"]  # chrono::Utc::now()


def test_hello_responses(hello: GuestInstance) -> None:
    check_hello_edge_hive(hello.call(req(b"POST", b"/api/v1/edge/hello-rust", b"",
                                         [(b"content-type", b"application/json")], b'{"name": "Edge Hive"}')))
    cases = [(b"", "World"), (b"not json", "World"), (b'{"name": 7}', "World"), (b'{"who":"x"}', "World"),
             (b'["name"]', "World"), (bytes(range(256)), "World"), (b'{"name":"x"} trailing', "World"),
             (b'{"name":"a\\"b\\u00e9\\ud83d\\udc1d</"}', 'a"bé🐝</'), ('{"name":"π"}'.encode(), "π"),
             (b'{"name":"\\n\\u0000"}', "\n\x00"), (b'{"name":"first","name":"last"}', "last")]
    for method in (b"GET", b"POST", b"PUT", b"DELETE"):
        for body, name in cases:
            resp = hello.call(req(method, b"/api/v1/edge/hello-rust", body=body))
            assert resp.status == 200
            assert json.loads(resp.body)["message"] == f"Hello, {name}!", body
    assert b'"Hello, a\\"b\xc3\xa9\xf0\x9f\x90\x9d</!"' in hello.call(req(body=cases[7][0])).body
    big = b'{"name":"' + b"x" * 100_000 + b'"}'  # a bigger request buffer replaces the first
    assert json.loads(hello.call(req(body=big)).body)["message"] == "Hello, " + "x" * 100_000 + "!"
    bad = hello.call(b"\x01\x00")
    assert bad.status == 400
    assert error_of(bad) == {"error": "bad_request", "message": "malformed request envelope"}


# ---- the driver: ABI vectors and the whole API ----------------------------------------------------


@pytest.fixture(scope="module")
def driver_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fn") / "rust-driver"
    (folder / "src").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "rust-driver"\nlanguage = "rust"\n')
    (folder / "Cargo.toml").write_text(DRIVER_CARGO)
    (folder / "src" / "lib.rs").write_text(DRIVER_RS)
    return build_function(folder)


@pytest.fixture(scope="module")
def driver(sandbox: Sandbox, driver_wasm: Path) -> GuestInstance:
    return instantiate(sandbox, driver_wasm, env=[b"GREETING=hej"])


@pytest.mark.parametrize("vector", VECTORS["requests"], ids=lambda v: v["name"])
def test_request_vectors_decode_exactly(driver: GuestInstance, vector: dict) -> None:
    envelope = bytes.fromhex(vector["envelope_hex"])
    resp = driver.call(envelope)
    assert (resp.status, resp.body) == (200, envelope)


@pytest.mark.parametrize("vector", VECTORS["invalid_requests"], ids=lambda v: v["name"])
def test_invalid_requests_get_400(driver: GuestInstance, vector: dict) -> None:
    resp = driver.call(bytes.fromhex(vector["envelope_hex"]))
    assert resp.status == 400
    assert error_of(resp) == {"error": "bad_request", "message": "malformed request envelope"}


@pytest.mark.parametrize("vector", VECTORS["responses"], ids=lambda v: v["name"])
def test_response_vectors_encode_exactly(driver: GuestInstance, vector: dict) -> None:
    envelope = bytes.fromhex(vector["envelope_hex"])
    resp = driver.call(req(b"POST", b"/t/build", body=envelope))
    expected = decode(envelope)
    assert resp == expected
    if "decoded_headers" not in vector:  # the host changed nothing, so the guest's bytes were these
        assert abi.encode_response(resp) == envelope


def test_headers_any_case_and_repeated(driver: GuestInstance) -> None:
    v = next(v for v in VECTORS["requests"] if v["name"] == "query_and_repeated_headers")
    headers = [(n.encode(), val.encode()) for n, val in v["headers"]]
    resp = driver.call(req(b"GET", b"/t/header", b"ACCEPT", headers))
    assert (resp.status, resp.body) == (200, b"text/html")
    assert resp.headers == [(b"x-value", b"text/html"), (b"x-value", b"*/*")]
    assert driver.call(req(b"GET", b"/t/header", b"x-missing", headers)).status == 404


def test_query_params(driver: GuestInstance) -> None:
    query = b"a=1&b=%20x&a=2&c=a+b&d&e=%zz&f=%C3%A9&g=%4&=empty&%61%62=ab"
    names = ["a", "b", "c", "d", "e", "f", "g", "", "ab", "missing"]
    resp = driver.call(req(b"GET", b"/t/query", query, body="\n".join(names).encode()))
    assert resp.body.decode().split("\n") == [
        'Some("1")', 'Some(" x")', 'Some("a b")', 'Some("")', 'Some("%zz")', 'Some("é")', 'Some("%4")',
        'Some("empty")', 'Some("ab")', "None"]


def test_body_helpers_and_errors(driver: GuestInstance) -> None:
    assert driver.call(req(b"POST", b"/t/text", body="héllo".encode())).body == "HÉLLO".encode()
    bad_text = driver.call(req(b"POST", b"/t/text", body=b"\xff"))
    assert bad_text.status == 400 and error_of(bad_text)["message"] == "the request body is not valid UTF-8"

    ok = driver.call(req(b"POST", b"/t/json", body=b'{"a": {"b": [1, "\\u00e9"]}}'))
    assert (ok.status, ok.headers, ok.body) == (201, [(b"content-type", b"application/json"), (b"x-kind", b"json")],
                                                '{"b":[1,"é"]}'.encode())
    bad_json = driver.call(req(b"POST", b"/t/json", body=b"{nope"))
    assert bad_json.status == 400 and error_of(bad_json)["message"].startswith("invalid JSON body: ")

    assert driver.call(req(path=b"/t/bad-request")).status == 400
    assert error_of(driver.call(req(path=b"/t/bad-request"))) == {"error": "bad_request", "message": 'no "name"\n'}
    teapot = driver.call(req(path=b"/t/teapot"))
    assert teapot.status == 418 and error_of(teapot) == {"error": "teapot", "message": "short and stout"}
    parse = driver.call(req(path=b"/t/parse"))  # `?` on a std error
    assert parse.status == 500 and error_of(parse) == {"error": "internal_error",
                                                       "message": "invalid digit found in string"}
    bad_status = driver.call(req(path=b"/t/bad-status"))
    assert bad_status.status == 500 and error_of(bad_status)["error"] == "handler_failed"


def test_invalid_headers_are_dropped_and_logged(driver: GuestInstance, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    resp = driver.call(req(path=b"/t/bad-headers"))
    assert resp.status == 200
    assert len(resp.headers) == 256 and resp.headers[0] == (b"x-max", b"v" * 16384)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("dropped response header" in m for m in warnings) == 5 + 45
    assert any("more than 256 headers" in m for m in warnings)
    assert any('"x bad": the name is not an HTTP token' in m for m in warnings)


def test_logging_and_env(driver: GuestInstance, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    assert driver.call(req(b"PUT", b"/t/log")).status == 204
    assert guest_log_lines(caplog) == [(logging.INFO, "info PUT 42"), (logging.WARNING, "warned"),
                                       (logging.ERROR, "errored")]
    assert driver.call(req(path=b"/t/env")).body == b"hej"  # [config] values reach std::env::var


def test_binary_and_big_bodies(driver: GuestInstance) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    envelope = req(b"POST", b"/echo", b"", [(b"content-type", b"application/octet-stream")], body)
    assert driver.call(envelope).body == envelope
    assert driver.call(req(path=b"/t/big")).body == b"x" * 1_000_000
    assert driver.call(req()).body == req()  # the smaller request after the big ones


def test_panic_traps_and_logs(sandbox: Sandbox, driver_wasm: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    inst = instantiate(sandbox, driver_wasm)
    with pytest.raises(GuestTrap) as e:  # wasm builds abort on panic: the host answers 502
        inst.call(req(path=b"/t/panic"))
    assert e.value.status == 502
    [record] = [r for r in caplog.records if r.name == "hive.guest"]  # one line, through hive.log
    assert (record.levelno, record.stream) == (logging.ERROR, "log")
    assert re.search(r"\] handler panicked at 'boom 7', src/lib.rs:\d+:\d+$", record.getMessage())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=80))
def test_random_envelopes_never_crash(driver: GuestInstance, data: bytes) -> None:
    check_echoed_or_rejected(data, driver.call(data))


_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_text, _text, _text, st.lists(st.tuples(_text, _text), max_size=5), st.binary(max_size=200))
def test_random_requests_round_trip(driver: GuestInstance, method: str, path: str, query: str,
                                    headers: list[tuple[str, str]], body: bytes) -> None:
    if path.startswith("/t/"):
        path = "/x" + path
    envelope = req(method.encode(), path.encode(), query.encode(),
                   [(n.encode(), v.encode()) for n, v in headers], body)
    assert driver.call(envelope).body == envelope


# ---- the `function new --lang rust` template ---------------------------------------------------------


def test_template_builds_after_substitution(sandbox: Sandbox, tmp_path: Path) -> None:
    folder = copy_template("rust", tmp_path / "my-fn")
    texts = [p.read_text() for p in folder.rglob("*") if p.is_file()]
    assert not any("{{" in t for t in texts)
    assert any("edge-hive function build" in t for t in texts)  # the README says how to build
    wasm = build_function(folder)
    assert wasm == folder / "my-fn.wasm"
    inst = instantiate(sandbox, wasm)
    resp = inst.call(req(b"POST", b"/api/v1/edge/my-fn", body=b'{"name":"Hive"}'))
    assert resp.status == 200 and json.loads(resp.body) == {"message": "Hello, Hive!"}
    assert json.loads(inst.call(req()).body) == {"message": "Hello, World!"}


# ---- build errors -------------------------------------------------------------------------------


def test_missing_toolchain_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "functions" / "hello-rust", tmp_path / "f", ignore=shutil.ignore_patterns("target"))
    monkeypatch.setattr(rust, "CARGO", tmp_path / "no-cargo")
    with pytest.raises(BuildError) as e:
        build_function(tmp_path / "f")
    assert "apt-get install rustc cargo libstd-rust-dev-wasm32 lld-14 librust-serde-json-dev librust-chrono-dev" \
        in e.value.message
    assert str(tmp_path / "no-cargo") in e.value.message
    monkeypatch.setattr(rust, "CARGO", Path("/usr/bin/cargo"))
    dangling = tmp_path / "rust-lld"
    dangling.symlink_to(tmp_path / "lld-14")  # rust-lld without lld-14 installed
    monkeypatch.setattr(rust, "LINKER", dangling)
    with pytest.raises(BuildError, match="lld-14"):
        build_function(tmp_path / "f")


def test_build_reports_compiler_errors(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "hive.toml").write_text('[function]\nname = "bad"\nlanguage = "rust"\n')
    (tmp_path / "Cargo.toml").write_text(DRIVER_CARGO.replace('serde_json = "1"\n', ""))
    (tmp_path / "src" / "lib.rs").write_text(
        "use edge_hive_wasm::*;\n#[edge_function]\nfn h(req: Request) -> Response { oops }\n")
    with pytest.raises(BuildError, match="oops") as e:
        build_function(tmp_path)
    assert e.value.code == "build_failed"
    assert not (tmp_path / "Cargo.lock").exists()


@pytest.mark.parametrize(("cargo_toml", "message"), [
    (None, "no Cargo.toml"),
    ('[package]\nname = "x"\nversion = "0.1.0"\n', 'crate-type = \\["cdylib"\\]'),
    ("not toml [", "Cargo.toml"),
])
def test_bad_crates(tmp_path: Path, cargo_toml: str | None, message: str) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "x"\nlanguage = "rust"\n')
    if cargo_toml is not None:
        (tmp_path / "Cargo.toml").write_text(cargo_toml)
    with pytest.raises(BuildError, match=message):
        build_function(tmp_path)
