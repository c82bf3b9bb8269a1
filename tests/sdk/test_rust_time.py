"""edge_hive_wasm::time (now and rfc3339, what replaces chrono in small modules), in a function built with
Debian's cargo and run on the host, against Python's datetime."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hive.build import build_function
from hive.sandbox import Sandbox
from tests.sdk.common import instance, req

pytestmark = pytest.mark.slow  # runs cargo

CARGO_TOML = """[package]
name = "clock"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
edge-hive-wasm = { version = "0.1", default-features = false }

[profile.release]
opt-level = "s"
strip = true
"""

LIB_RS = """use edge_hive_wasm::{edge_function, time, Error, Request, Response};

// The query: Unix seconds separated by commas; the body: each as RFC 3339, then the clock.
#[edge_function]
fn handler(req: Request) -> Result<Response, Error> {
    let stamps: Vec<String> = req.query().split(',').map(|s| time::rfc3339(s.parse().unwrap_or(0))).collect();
    Ok(Response::text(format!("{} {}", stamps.join(","), time::now())))
}
"""

TIMES = [0, 1, 59, 86399, 86400, 951782400, 951868800, 1700000000, 1709164800, 4107542400, 4107628800, 253402300799]
CLAMPED = {-5: 0, 253402300800: 253402300799, 2**62: 253402300799}


def test_rfc3339_and_now(tmp_path: Path, sandbox: Sandbox) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "Cargo.toml").write_text(CARGO_TOML)
    (tmp_path / "src" / "lib.rs").write_text(LIB_RS)
    (tmp_path / "hive.toml").write_text('[function]\nname = "clock"\nlanguage = "rust"\n')
    guest = instance(sandbox, build_function(tmp_path).read_bytes())
    query = ",".join(str(t) for t in [*TIMES, *CLAMPED])
    stamps, now = guest.call(req(query=query.encode())).body.decode().split(" ")
    expected = [
        datetime.fromtimestamp(CLAMPED.get(t, t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in [*TIMES, *CLAMPED]
    ]
    assert stamps.split(",") == expected
    assert abs(int(now) - time.time()) < 300
