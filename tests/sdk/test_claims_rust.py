"""The Rust SDK's Request::auth_claims: a function built with `edge-hive function build` (Debian's cargo)
reads the verified claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive.build import build_function
from hive.sandbox import Sandbox
from tests.sdk.claims import check_claims_guest

pytestmark = pytest.mark.slow  # cargo

LIB_RS = r"""
use edge_hive_wasm::{edge_function, Error, Request, Response};

#[edge_function]
fn handle(req: Request) -> Result<Response, Error> {
    let claims = match req.auth_claims() {
        Some(claims) => claims,
        None => return Ok(Response::new(404).body("none")),
    };
    let value: serde_json::Value =
        serde_json::from_str(claims).map_err(|e| Error::bad_request(e.to_string()))?;
    let sub = value["sub"].as_str().unwrap_or("").to_string();
    Ok(Response::new(200).header("x-sub", sub).body(claims))
}
"""

CARGO_TOML = """\
[package]
name = "claims"
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


def test_auth_claims(sandbox: Sandbox, tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    (folder / "src").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "claims"\nlanguage = "rust"\n')
    (folder / "Cargo.toml").write_text(CARGO_TOML)
    (folder / "src" / "lib.rs").write_text(LIB_RS)
    check_claims_guest(sandbox, build_function(folder))
