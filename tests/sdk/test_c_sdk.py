"""The C SDK (hive/sdk/c/edge_hive.h): its JSON helpers natively and as wasm, the hello build, build errors.
What every SDK shares (the ABI vectors, failures, hello's answers) is in test_sdk_common.py."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive import abi
from hive.build import WASM_CFLAGS, build_function, load_function_manifest
from hive.errors import BuildError, InvalidManifest
from tests.sdk import common
from tests.sdk.common import ROOT, check_imports_allowed, decode, exports_and_imports
from tests.sdk.langs import DESCRIBE, ESCAPE, JSON_GET, MISC, Builds, NativeGuest, WasmGuest

pytestmark = pytest.mark.slow  # runs the zig compiler (about 20 s the first time, for wasi-libc)

ALLOWED_WASI = frozenset(
    {
        "clock_time_get",
        "clock_res_get",
        "random_get",
        "fd_write",
        "fd_read",
        "fd_close",
        "fd_seek",
        "fd_fdstat_get",
        "fd_prestat_get",
        "fd_prestat_dir_name",
        "environ_get",
        "environ_sizes_get",
        "args_get",
        "args_sizes_get",
        "proc_exit",
        "sched_yield",
    }
)


@pytest.fixture(scope="module")
def builds(sdk_builds: Builds) -> dict[str, tuple[Path, str]]:
    """tests/sdk/guests/c/driver.c: one handler whose behaviour the test picks (a mode), so a single program
    covers the whole API; built natively (with UB traps) and for wasm32-wasi."""
    return sdk_builds.c_driver()


@pytest.fixture(scope="module", params=["native", "wasm"])
def guest(request: pytest.FixtureRequest, builds: dict[str, tuple[Path, str]]) -> NativeGuest | WasmGuest:
    path = builds[request.param][0]
    return NativeGuest(path) if request.param == "native" else WasmGuest(path)


@pytest.fixture(scope="module")
def wasm_driver(builds: dict[str, tuple[Path, str]]) -> WasmGuest:
    return WasmGuest(builds["wasm"][0])


def req(
    method: bytes = b"GET",
    path: bytes = b"/t",
    query: bytes = b"",
    headers: abi.Headers | None = None,
    body: bytes = b"",
) -> bytes:
    """common.req, but under /t by default."""
    return common.req(method, path, query, headers, body)


def test_sdk_compiles_without_warnings(builds: dict[str, tuple[Path, str]]) -> None:
    assert builds["native"][1] == "" and builds["wasm"][1] == ""


JSON_CASES: list[tuple[bytes, str, int, bytes]] = [
    (b'{"name":"Edge Hive"}', "name", 200, b"Edge Hive"),
    (b' \n{ "name" : "x" , "n":1 } \t', "name", 200, b"x"),
    (b'{"name":""}', "name", 200, b""),
    (b'{"other":"x"}', "name", 404, b""),
    (b"{}", "name", 404, b""),
    (b'{"name":5}', "name", 404, b""),
    (b'{"name":null}', "name", 404, b""),
    (b'{"name":"first","name":"last"}', "name", 200, b"last"),
    (b'{"name":"first","name":7}', "name", 404, b""),
    (b'{"nested":{"name":"inner"},"list":["name"],"name":"outer"}', "name", 200, b"outer"),
    (b'{"nested":{"name":"inner"}}', "name", 404, b""),
    (b'{"n\\u0061me":"escaped key"}', "name", 200, b"escaped key"),
    (b'{"name":"a\\"b\\\\c\\/d\\n\\r\\t\\b\\f"}', "name", 200, b'a"b\\c/d\n\r\t\b\x0c'),
    (b'{"name":"\\u00e9\\u4e16\\ud83d\\udc1d"}', "name", 200, "é世🐝".encode()),
    (b'{"name":"\\ud83d"}', "name", 200, "\ufffd".encode()),
    (b'{"name":"\\udc1d\\ud83dx"}', "name", 200, "\ufffd\ufffdx".encode()),
    (b'{"name":"\\ud83d\\u0041"}', "name", 200, "\ufffdA".encode()),
    (b'{"name":"\\ud83d\\ue000"}', "name", 200, "\ufffd\ue000".encode()),
    (b'{"name":"nul\\u0000inside"}', "name", 200, b"nul\x00inside"),
    (b'{"name":"raw \xc3\xa9 utf8"}', "name", 200, "raw é utf8".encode()),
    (b'{"a":[1,-2.5e+3,0.0,true,false,null,{}],"name":"ok"}', "name", 200, b"ok"),
    (b"", "name", 422, b""),
    (b"not json", "name", 422, b""),
    (b'["name","x"]', "name", 422, b""),
    (b'"name"', "name", 422, b""),
    (b'{"name":"Edge Hive"', "name", 422, b""),
    (b'{"name":"Edge Hive"} x', "name", 422, b""),
    (b'{"name":"x",}', "name", 422, b""),
    (b'{"name":"x"]', "name", 422, b""),
    (b'{"a":[1},"name":"x"}', "name", 422, b""),
    (b'{"a":1 "name":"x"}', "name", 422, b""),
    (b'{"a" 1,"name":"x"}', "name", 422, b""),
    (b'{1:"x"}', "name", 422, b""),
    (b'{"name":"tab\there"}', "name", 422, b""),
    (b'{"name":"bad \\x escape"}', "name", 422, b""),
    (b'{"name":"\\u12g4"}', "name", 422, b""),
    (b'{"a":01,"name":"x"}', "name", 422, b""),
    (b'{"a":NaN,"name":"x"}', "name", 422, b""),
    (b'{"a":tru,"name":"x"}', "name", 422, b""),
    (b'{"name":"unterminated}', "name", 422, b""),
    (b"{" + b'"a":[' * 70 + b"]" * 70 + b"}", "name", 422, b""),
    (b'{"a":' + b"[" * 60 + b"]" * 60 + b',"name":"deep ok"}', "name", 200, b"deep ok"),
]


def test_json_get_string(guest: NativeGuest | WasmGuest) -> None:
    outs = guest.run([(JSON_GET, req(query=key.encode(), body=body)) for body, key, _, _ in JSON_CASES])
    for (body, _, status, value), out in zip(JSON_CASES, outs, strict=True):
        resp = decode(out)
        assert (resp.status, resp.body) == (status, value), body


def _escape_oracle(data: bytes) -> bytes:
    # Python's "replace" follows Unicode's maximal-subpart rule, like the SDK.
    return json.dumps(data.decode("utf-8", "replace"), ensure_ascii=False)[1:-1].encode()


ESCAPE_CASES = [
    b"",
    b"plain",
    b'"\\/\b\f\n\r\t',
    bytes(range(32)),
    b"\x7f",
    "é世🐝\u2028".encode(),
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xe2\x82x",
    b"\xf0\x9f\x90",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"\xe0\x80\x80",
    b"a\x00b",
]


def test_json_escape(guest: NativeGuest | WasmGuest) -> None:
    outs = guest.run([(ESCAPE, req(body=b)) for b in ESCAPE_CASES])
    for data, out in zip(ESCAPE_CASES, outs, strict=True):
        resp = decode(out)
        assert resp.body == _escape_oracle(data), data
        assert json.loads(b'"' + resp.body + b'"') == data.decode("utf-8", "replace")


def test_failures_and_helpers(guest: NativeGuest | WasmGuest) -> None:
    """A handler returning NULL, and the formatting, JSON and status helpers (the failures every SDK shares,
    bad headers and big bodies are in test_sdk_common.py)."""
    names = ["null", "fmt", "json", "status"]
    outs = dict(zip(names, guest.run([(MISC, req(b"POST", b"/p/q", n.encode())) for n in names]), strict=True))
    resp = decode(outs["null"])
    assert resp.status == 500 and json.loads(resp.body)["error"] == "handler_failed"
    assert resp.headers == [(b"content-type", b"application/json")]
    assert decode(outs["fmt"]).body == b"/p/q|42|POST"
    assert decode(outs["json"]) == abi.Response(201, [(b"content-type", b"application/json")], b'{"a":1}')
    assert decode(outs["status"]).status == 418


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
            max_leaves=8,
        ),
    ),
    st.sampled_from(["name", "", "é", "a"]),
    st.booleans(),
)
def test_json_get_string_matches_python(wasm_driver: WasmGuest, obj: dict, key: str, ascii_only: bool) -> None:
    try:
        body = json.dumps(obj, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate has no raw UTF-8 form; JSON carries it as \uXXXX
        body = json.dumps(obj).encode()
    resp = decode(wasm_driver.call(req(query=key.encode(), body=body), JSON_GET))
    value = obj.get(key)
    if isinstance(value, str):
        # Lone surrogates have no UTF-8 form; the SDK yields U+FFFD like a browser.
        expected = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
        assert (resp.status, resp.body) == (200, expected)
    else:
        assert resp.status == 404


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_json_escape_matches_python(wasm_driver: WasmGuest, data: bytes) -> None:
    assert decode(wasm_driver.call(req(body=data), ESCAPE)).body == _escape_oracle(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_requests_never_crash(wasm_driver: WasmGuest, data: bytes) -> None:
    resp = decode(wasm_driver.call(data, DESCRIBE))
    assert resp.status in (200, 400)


# ---- hello, built the way `hive build` does it ----------------------------------------------------


@pytest.fixture(scope="module")
def hello_build(sdk_builds: Builds) -> tuple[Path, list[str]]:
    return sdk_builds.hello("c")[:2]


def test_hello_builds(hello_build: tuple[Path, list[str]]) -> None:
    path, lines = hello_build
    assert path.name == "hello.wasm" and path.is_file()
    assert "ziglang cc " + shlex.join(WASM_CFLAGS) in lines[0]


def test_hello_exports_and_imports(hello_build: tuple[Path, list[str]]) -> None:
    sigs, imports = exports_and_imports(hello_build[0])
    assert sigs["hive_abi_v1"] == ([], [])
    assert sigs["hive_alloc"] == (["i32"], ["i32"])
    assert sigs["hive_free"] == (["i32", "i32"], [])
    assert sigs["hive_handle"] == (["i32", "i32"], ["i64"])
    assert sigs["_initialize"] == ([], [])
    check_imports_allowed(imports, ALLOWED_WASI)


def test_build_rejects_unknown_languages(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "z"\nlanguage = "cobol"\n')
    with pytest.raises(BuildError, match="unknown language 'cobol'"):
        build_function(tmp_path / "hive.toml")


def test_build_without_ziglang_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "c"\n')
    (tmp_path / "f.c").write_text("")
    monkeypatch.setitem(sys.modules, "ziglang", None)  # find_spec then reports it missing
    with pytest.raises(BuildError, match="pip install ziglang"):
        build_function(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not toml [",
        "[function]\nlanguage = 'c'\n",
        "[function]\nname = '../x'\nlanguage = 'c'\n",
        "[function]\nname = 'x'\n",
        "[function]\nname = 'x'\nlanguage = 'c'\nsources = 'a.c'\n",
    ],
)
def test_bad_manifests(tmp_path: Path, text: str) -> None:
    (tmp_path / "hive.toml").write_text(text)
    with pytest.raises(InvalidManifest):
        build_function(tmp_path)


def test_manifest_loads_from_folder_or_file() -> None:
    folder = ROOT / "functions" / "hello"
    assert load_function_manifest(folder) == load_function_manifest(folder / "hive.toml")
    assert load_function_manifest(folder)["function"] == {"name": "hello", "language": "c", "sources": ["hello.c"]}
    with pytest.raises(InvalidManifest, match="not found"):
        load_function_manifest(folder / "missing.toml")
