"""The Rust SDK (hive/sdk/rust/edge-hive-wasm): hello-rust's build, the driver guest's query, body and error
helpers, random requests, and toolchain errors, all built with Debian's cargo the way `edge-hive function
build` does and run in the real sandbox. What every SDK shares (the ABI vectors, headers, logging, [config],
panics, hello's answers, the template) is in test_sdk_common.py.

The toolchain comes from scripts/toolchains/rust.sh; without it these tests fail (they never skip).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive import abi
from hive.build import build_function
from hive.errors import BuildError
from hive.sandbox import GuestInstance, GuestLimits, Sandbox
from hive.toolchains import rust
from tests.sdk.common import ROOT, check_echoed_or_rejected, check_interface, instance, req
from tests.sdk.langs import ENV, Builds

pytestmark = pytest.mark.slow  # cargo: about 20 s for the first build of each crate


def instantiate(sandbox: Sandbox, wasm: Path, env: list[bytes] | None = None) -> GuestInstance:
    return instance(sandbox, wasm.read_bytes(), env, GuestLimits(timeout_ms=2000), "rust")


def error_of(resp: abi.Response) -> dict[str, str]:
    assert resp.headers == [(b"content-type", b"application/json")]
    return json.loads(resp.body)


# ---- hello-rust, built the way `edge-hive function build` does it ------------------------------------


@pytest.fixture(scope="module")
def hello_build(sdk_builds: Builds) -> tuple[Path, list[str]]:
    return sdk_builds.hello("rust")[:2]


def test_hello_builds_offline_with_debian_cargo(hello_build: tuple[Path, list[str]]) -> None:
    path, lines = hello_build
    assert path.name == "hello-rust.wasm" and path.is_file()
    assert lines[0].startswith("/usr/bin/cargo build --release --offline --target wasm32-wasi ")
    assert str(rust.SDK_DIR) in lines[0]
    assert not (path.parent / "Cargo.lock").exists()  # resolved against Debian's registry: not left behind
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "Cargo.toml",
        "README.md",
        "hello-rust.wasm",
        "hive.toml",
        "src",
        "target",
    ]


def test_hello_exports_and_imports(hello_build: tuple[Path, list[str]]) -> None:
    info = check_interface(hello_build[0])
    assert ("wasi_snapshot_preview1", "clock_time_get") in info["imports"]  # edge_hive_wasm::time::now()


# ---- the driver: query, body and error helpers, random requests ------------------------------------


@pytest.fixture(scope="module")
def driver_wasm(sdk_builds: Builds) -> Path:
    """tests/sdk/guests/rust: routes by path to exercise the API; any other path echoes the request."""
    return sdk_builds.driver("rust")


@pytest.fixture(scope="module")
def driver(sandbox: Sandbox, driver_wasm: Path) -> GuestInstance:
    return instantiate(sandbox, driver_wasm, env=ENV)


def test_query_params(driver: GuestInstance) -> None:
    query = b"a=1&b=%20x&a=2&c=a+b&d&e=%zz&f=%C3%A9&g=%4&=empty&%61%62=ab"
    names = ["a", "b", "c", "d", "e", "f", "g", "", "ab", "missing"]
    resp = driver.call(req(b"GET", b"/t/query", query, body="\n".join(names).encode()))
    assert resp.body.decode().split("\n") == [
        'Some("1")',
        'Some(" x")',
        'Some("a b")',
        'Some("")',
        'Some("%zz")',
        'Some("é")',
        'Some("%4")',
        'Some("empty")',
        'Some("ab")',
        "None",
    ]


def test_body_helpers_and_errors(driver: GuestInstance) -> None:
    assert driver.call(req(b"POST", b"/t/text", body="héllo".encode())).body == "HÉLLO".encode()
    bad_text = driver.call(req(b"POST", b"/t/text", body=b"\xff"))
    assert bad_text.status == 400 and error_of(bad_text)["message"] == "the request body is not valid UTF-8"

    ok = driver.call(req(b"POST", b"/t/json", body=b'{"a": {"b": [1, "\\u00e9"]}}'))
    assert (ok.status, ok.headers, ok.body) == (
        201,
        [(b"content-type", b"application/json"), (b"x-kind", b"json")],
        '{"b":[1,"é"]}'.encode(),
    )
    bad_json = driver.call(req(b"POST", b"/t/json", body=b"{nope"))
    assert bad_json.status == 400 and error_of(bad_json)["message"].startswith("invalid JSON body: ")

    assert driver.call(req(path=b"/t/bad-request")).status == 400
    assert error_of(driver.call(req(path=b"/t/bad-request"))) == {"error": "bad_request", "message": 'no "name"\n'}
    teapot = driver.call(req(path=b"/t/teapot"))
    assert teapot.status == 418 and error_of(teapot) == {"error": "teapot", "message": "short and stout"}
    parse = driver.call(req(path=b"/t/parse"))  # `?` on a std error
    assert parse.status == 500 and error_of(parse) == {
        "error": "internal_error",
        "message": "invalid digit found in string",
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=80))
def test_random_envelopes_never_crash(driver: GuestInstance, data: bytes) -> None:
    check_echoed_or_rejected(data, driver.call(data))


_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_text, _text, _text, st.lists(st.tuples(_text, _text), max_size=5), st.binary(max_size=200))
def test_random_requests_round_trip(
    driver: GuestInstance, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    if path.startswith("/t/"):
        path = "/x" + path
    envelope = req(method.encode(), path.encode(), query.encode(), [(n.encode(), v.encode()) for n, v in headers], body)
    assert driver.call(envelope).body == envelope


# ---- build errors -------------------------------------------------------------------------------


def test_missing_toolchain_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "functions" / "hello-rust", tmp_path / "f", ignore=shutil.ignore_patterns("target"))
    monkeypatch.setattr(rust, "CARGO", tmp_path / "no-cargo")
    with pytest.raises(BuildError) as e:
        build_function(tmp_path / "f")
    assert (
        "apt-get install rustc cargo libstd-rust-dev-wasm32 lld-14 librust-serde-json-dev librust-chrono-dev"
        in e.value.message
    )
    assert str(tmp_path / "no-cargo") in e.value.message
    monkeypatch.setattr(rust, "CARGO", Path("/usr/bin/cargo"))
    dangling = tmp_path / "rust-lld"
    dangling.symlink_to(tmp_path / "lld-14")  # rust-lld without lld-14 installed
    monkeypatch.setattr(rust, "LINKER", dangling)
    with pytest.raises(BuildError, match="lld-14"):
        build_function(tmp_path / "f")


@pytest.mark.parametrize(
    ("cargo_toml", "message"),
    [
        (None, "no Cargo.toml"),
        ('[package]\nname = "x"\nversion = "0.1.0"\n', 'crate-type = \\["cdylib"\\]'),
        ("not toml [", "Cargo.toml"),
    ],
)
def test_bad_crates(tmp_path: Path, cargo_toml: str | None, message: str) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "x"\nlanguage = "rust"\n')
    if cargo_toml is not None:
        (tmp_path / "Cargo.toml").write_text(cargo_toml)
    with pytest.raises(BuildError, match=message):
        build_function(tmp_path)
