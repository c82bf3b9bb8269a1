"""What every SDK must do alike, one suite over all four: the ABI vectors, header lookup, malformed envelopes,
the response builder's refusals, failures, big bodies, logging, [config], panics, the hello examples, the
templates and compiler errors. Each test runs for the languages whose tests it replaces (tests/sdk/langs.py
says how each guest is asked); what only one SDK has stays in its own test file.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from pathlib import Path

import pytest

from hive import abi
from hive.build import build_function
from hive.errors import AbiViolation, BuildError, GuestTrap
from hive.sandbox import GuestLimits, Sandbox
from tests.sdk.common import (
    ABI_EXPORTS,
    VECTORS,
    check_header_lookups,
    check_hello_edge_hive,
    check_interface,
    check_request_vectors,
    check_response_vectors,
    copy_template,
    decode,
    guest_log_lines,
    hello_memory_sizes,
    instance,
    mutated_requests,
    req,
)
from tests.sdk.langs import AS_EXPORTS, GUESTS, HELLO, Driver, Lang, as_package, case_request

pytestmark = pytest.mark.slow  # runs every SDK's toolchain: zig, cargo, npm and asc

JSON = [(b"content-type", b"application/json")]
MALFORMED = {"error": "bad_request", "message": "malformed request envelope"}
NOT_C = ["rust", "zig", "assemblyscript"]  # the SDKs with a logger, [config] access, panics and a template


def error_of(resp: abi.Response) -> dict[str, str]:
    """An SDK's error response: JSON, with the content type saying so."""
    assert resp.headers == JSON
    return json.loads(resp.body)


# ---- the ABI vectors and malformed envelopes ----------------------------------------------------------


def test_request_vectors_decode_exactly(sdk_guest: Driver) -> None:
    check_request_vectors(sdk_guest.run)


def test_response_vectors_encode_exactly(sdk_guest: Driver) -> None:
    check_response_vectors(sdk_guest.rebuild)


def test_header_lookup_ignores_case(sdk_guest: Driver) -> None:
    check_header_lookups(sdk_guest.lookup)


def test_invalid_requests_get_400(sdk_guest: Driver) -> None:
    vectors = VECTORS["invalid_requests"]
    for v, out in zip(vectors, sdk_guest.run([bytes.fromhex(v["envelope_hex"]) for v in vectors]), strict=True):
        resp = decode(out)
        assert resp.status == 400, v["name"]
        assert error_of(resp) == MALFORMED, v["name"]


@pytest.mark.parametrize("sdk_guest", ["c-native", "c-wasm", "zig", "assemblyscript"], indirect=True)
def test_mutated_requests_never_crash(sdk_guest: Driver) -> None:
    """An envelope the ABI refuses gets a 400; any other comes back as the body of a 200."""
    inputs = mutated_requests()
    for env, out in zip(inputs, sdk_guest.run(inputs), strict=True):
        resp = decode(out)
        try:
            decoded = abi.decode_request(env)
        except AbiViolation:
            assert resp.status == 400
            continue
        if decoded.method in sdk_guest.special_methods:
            continue
        assert resp.status == 200
        if sdk_guest.echoes_exactly(decoded):
            assert resp.body == env


# ---- the response builder and failures --------------------------------------------------------------

BAD_HEADERS_BODY = {"c-native": b"5 256", "c-wasm": b"5 256", "rust": b"", "zig": b"256", "assemblyscript": b"6 256"}


def test_header_builder_drops_what_the_host_refuses(sdk_guest: Driver, caplog: pytest.LogCaptureFixture) -> None:
    """Five headers the host would refuse (AssemblyScript adds a sixth: 16 KiB of UTF-8 in more bytes) and
    300 more than fit: each dropped with a warning, the other 256 kept."""
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    resp = sdk_guest.case("bad-headers")
    assert resp.status == 200 and resp.body == BAD_HEADERS_BODY[sdk_guest.name]
    assert len(resp.headers) == 256 and resp.headers[0] == (b"x-max", b"v" * 16384)
    warnings = sdk_guest.warnings(caplog)
    dropped = 6 if sdk_guest.name == "assemblyscript" else 5
    assert sum("dropped response header" in m for m in warnings) == dropped + 45
    for why in (
        "more than 256 headers",
        '"x bad": the name is not an HTTP token',
        "contains CR, LF or NUL",
        "longer than 16 KiB",
    ):
        assert any(why in m for m in warnings), why


def test_bad_status_fails_the_handler(sdk_guest: Driver) -> None:
    """A handler answering status 600 gets the SDK's 500 handler_failed; the instance goes on."""
    resp = sdk_guest.case("bad-status")
    assert resp.status == 500 and error_of(resp)["error"] == "handler_failed"
    assert decode(sdk_guest.run([req(body=b"still alive")])[0]).status == 200


@pytest.mark.parametrize("sdk_guest", ["c-native", "c-wasm", "zig"], indirect=True)
def test_out_of_memory_is_a_500(sdk_guest: Driver) -> None:
    """An allocation that fails (Zig: the 128 MiB store limit makes memory.grow fail) is a 500 out_of_memory,
    and the instance goes on."""
    resp = sdk_guest.case("oom")
    assert resp.status == 500 and error_of(resp)["error"] == "out_of_memory"
    assert decode(sdk_guest.run([req(body=b"still alive")])[0]).status == 200


BIG = {"rust": b"x" * 1_000_000}
_COUNTING = b"".join(b"%09d\n" % i for i in range(100_000))  # what the C, Zig and AssemblyScript guests write


def test_binary_and_big_bodies(sdk_guest: Driver) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, every byte value
    envelope = req(b"POST", b"/echo", b"", [(b"content-type", b"application/octet-stream")], body)
    resp = decode(sdk_guest.run([envelope])[0])
    assert (resp.status, resp.body) == (200, envelope)
    big = sdk_guest.case("big").body
    assert len(big) == 1_000_000 and big == BIG.get(sdk_guest.name, _COUNTING)
    assert decode(sdk_guest.run([req()])[0]).body == req()  # the smaller request after the big ones


# ---- logging, [config] and panics --------------------------------------------------------------------

LOG_LINES = {
    "rust": [(logging.INFO, "info PUT 42"), (logging.WARNING, "warned"), (logging.ERROR, "errored")],
    "zig": [
        (logging.DEBUG, "debug 1"),
        (logging.INFO, "info two"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "err"),
        (logging.INFO, "x" * 8192),
    ],
    "assemblyscript": [
        (logging.DEBUG, "debug 1"),
        (logging.INFO, "info two"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "err"),
        (logging.INFO, "from console"),
        (logging.INFO, "x" * 8192),
    ],
}


@pytest.mark.parametrize("sdk_guest", NOT_C, indirect=True)
def test_logging_levels(sdk_guest: Driver, caplog: pytest.LogCaptureFixture) -> None:
    """Each level reaches hive.log as its own; a 20000-byte line is truncated to the host's limit, not dropped."""
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    assert sdk_guest.case("log").status == 204
    assert guest_log_lines(caplog) == LOG_LINES[sdk_guest.name]


CONFIG = {"rust": b"hello=world", "zig": b"hello=world||-", "assemblyscript": b"hello=world||-|hello=world"}


@pytest.mark.parametrize("sdk_guest", NOT_C, indirect=True)
def test_config_reaches_the_guest(sdk_guest: Driver) -> None:
    """[config] values (GREETING=hello=world, EMPTY=) through the SDK's env lookup: set, empty and missing
    (AssemblyScript: also through process.env; Rust: std::env::var)."""
    assert sdk_guest.case("env").body == CONFIG[sdk_guest.name]


PANIC_LINE = {
    "rust": r"\] handler panicked at 'boom 7', src/lib.rs:\d+:\d+$",
    "zig": r"\] panic: boom$",
    "assemblyscript": r"\] abort: boom in assembly/index\.ts\(\d+:\d+\)$",  # throw aborts: no exceptions in AS
}


@pytest.mark.parametrize("lang", NOT_C, indirect=True)
def test_panic_traps_and_is_logged(lang: Lang, sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    inst = instance(sandbox, lang.driver_wasm, limits=GuestLimits(timeout_ms=2000), name=lang.name)
    with pytest.raises(GuestTrap) as e:  # wasm builds abort on panic: the host answers 502
        inst.call(case_request(lang.name, "panic"))
    assert e.value.status == 502
    [record] = [r for r in caplog.records if r.name == "hive.guest"]  # one line, through hive.log
    assert (record.levelno, record.stream) == (logging.ERROR, "log")
    assert re.search(PANIC_LINE[lang.name], record.getMessage()), record.getMessage()


# ---- the hello examples ----------------------------------------------------------------------------------

ESCAPES = b'{"name":"a\\"b\\u00e9\\ud83d\\udc1d</"}'
HELLO_CASES: list[tuple[bytes, str]] = [
    (b"", "World"),
    (b"not json", "World"),
    (b'{"name": 7}', "World"),
    (b'{"who":"x"}', "World"),
    (b'["name"]', "World"),
    (b"[1,2]", "World"),
    (b'"name"', "World"),
    (b'{"name":null}', "World"),
    (b'{"name":"x"} trailing', "World"),
    (b'{"name":"x",}', "World"),
    (b"{" + b'"a":[' * 300 + b"]" * 300 + b"}", "World"),
    (bytes(range(256)), "World"),
    (ESCAPES, 'a"bé🐝</'),
    ('{"name":"π"}'.encode(), "π"),
    (b'{"name":"\\n\\u0000"}', "\n\x00"),
    (b'{"name":"\\n\\u0000\\t"}', "\n\x00\t"),
    (b'{"name":"first","name":"last"}', "last"),
    (b'{"other":{"name":"inner"},"list":[1,"x"],"name":"outer"}', "outer"),
    (b'{"name":"Hello, \\ud83d\\udc1d!"}', "Hello, 🐝!"),
    ('{"name":"1234567🐝"}'.encode(), "1234567🐝"),
]
# Raw bytes that are not UTF-8 inside a JSON string: std.json refuses them; AssemblyScript decodes with U+FFFD.
HELLO_RAW_FF = {"zig": "World", "assemblyscript": "raw \ufffd"}


def test_hello_greets(lang: Lang, sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    inst = instance(sandbox, lang.hello_wasm, limits=GuestLimits(timeout_ms=2000), name=lang.name)
    url = f"/api/v1/edge/{HELLO[lang.name]}".encode()

    def hello(body: bytes, method: bytes = b"POST", headers: abi.Headers = JSON) -> abi.Response:
        return inst.call(req(method, url, b"", headers, body))

    check_hello_edge_hive(hello(b'{"name": "Edge Hive"}'))
    cases = HELLO_CASES + ([(b'{"name":"raw \xff"}', HELLO_RAW_FF[lang.name])] if lang.name in HELLO_RAW_FF else [])
    for method in (b"GET", b"POST", b"PUT", b"DELETE"):
        for headers in ([], JSON):
            for body, name in cases:
                resp = hello(body, method, headers)
                assert resp.status == 200, body
                assert json.loads(resp.body)["message"] == f"Hello, {name}!", body
                assert list(json.loads(resp.body)) == ["message", "timestamp"], body
    # JSON with the text as UTF-8, not \u escapes
    assert b'"Hello, a\\"b\xc3\xa9\xf0\x9f\x90\x9d</!"' in inst.call(req(body=ESCAPES)).body
    big = b'{"name":"' + b"x" * 100_000 + b'"}'  # a bigger request buffer replaces the first
    assert json.loads(hello(big).body)["message"] == "Hello, " + "x" * 100_000 + "!"
    bad = inst.call(b"\x01\x00")
    assert bad.status == 400 and error_of(bad) == MALFORMED
    assert json.loads(hello(b'{"name":"again"}').body)["message"] == "Hello, again!"
    assert [r for r in caplog.records if r.name == "hive.guest"] == []


HELLO_MEMORY = {"zig": 4 << 20, "assemblyscript": 16 << 20}  # Zig: a 1 MiB stack and a small heap


@pytest.mark.parametrize("lang", ["zig", "assemblyscript"], indirect=True)
def test_hello_memory_stays_bounded(lang: Lang, sandbox: Sandbox) -> None:
    inst = instance(sandbox, lang.hello_wasm)
    url = f"/api/v1/edge/{HELLO[lang.name]}".encode()
    sizes = hello_memory_sizes(inst, lambda inst, body: inst.call(req(b"POST", url, b"", JSON, body)))
    assert sizes[2000] == sizes[100], sizes
    assert sizes[100] <= HELLO_MEMORY[lang.name], sizes


# ---- the `function new` templates ----------------------------------------------------------------------

TEMPLATE_GREETS = {"rust": "Hive", "zig": "Zig", "assemblyscript": "AssemblyScript"}


@pytest.mark.parametrize("lang", NOT_C, indirect=True)
def test_template_builds_after_substitution(lang: Lang, sandbox: Sandbox, tmp_path: Path) -> None:
    """{{name}} is replaced everywhere, the README says how to build, and the template builds to <name>.wasm
    with the ABI interface and greets."""
    folder = copy_template(lang.name, tmp_path / "my-fn")
    text = "\n".join(f.read_text(encoding="utf-8") for f in folder.rglob("*") if f.is_file())
    assert "{{" not in text and "edge-hive function build" in (folder / "README.md").read_text()
    assert tomllib.loads((folder / "hive.toml").read_text())["function"] == {"name": "my-fn", "language": lang.name}
    path = build_function(folder)
    assert path == folder / "my-fn.wasm"
    check_interface(path, AS_EXPORTS if lang.name == "assemblyscript" else ABI_EXPORTS)
    inst = instance(sandbox, path.read_bytes())
    who = TEMPLATE_GREETS[lang.name]
    for headers in ([], JSON):
        resp = inst.call(req(b"POST", b"/api/v1/edge/my-fn", b"", headers, b'{"name":"%s"}' % who.encode()))
        assert resp.status == 200 and json.loads(resp.body) == {"message": f"Hello, {who}!"}
    resp = inst.call(req(b"GET", b"/api/v1/edge/my-fn"))
    assert resp.status == 200 and json.loads(resp.body) == {"message": "Hello, World!"}


# ---- compiler errors -----------------------------------------------------------------------------------


def _bad_sources(lang: str) -> dict[str, str]:
    """A function in `lang` that does not compile: it calls oops()."""
    match lang:
        case "c":
            return {"bad.c": '#include "edge_hive.h"\nhive_response *handler(const hive_request *r) { oops }\n'}
        case "rust":
            cargo = (GUESTS / "rust" / "Cargo.toml").read_text()
            return {
                "Cargo.toml": cargo.replace('serde_json = "1"\n', ""),
                "src/lib.rs": "use edge_hive_wasm::*;\n#[edge_function]\nfn h(req: Request) -> Response { oops }\n",
            }
        case "zig":
            return {"main.zig": 'const hive = @import("edge_hive");\ncomptime { oops(); }\n'}
        case _:
            return {"package.json": json.dumps(as_package()), "assembly/index.ts": "let x: i32 = oops();\n"}


def test_build_reports_compiler_errors(lang: Lang, tmp_path: Path) -> None:
    if lang.name == "assemblyscript":
        lang.builds.hello(lang.name)  # the npm packages are in npm's cache by then
    folder = tmp_path / "bad"
    for rel, text in {
        "hive.toml": f'[function]\nname = "bad"\nlanguage = "{lang.name}"\n',
        **_bad_sources(lang.name),
    }.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    with pytest.raises(BuildError, match="oops") as e:
        build_function(folder)
    assert e.value.code == "build_failed"
    assert not (folder / "Cargo.lock").exists()  # cargo resolves against Debian's registry and leaves none
