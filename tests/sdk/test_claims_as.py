"""The AssemblyScript SDK's Request.authClaims: a function built with `edge-hive function build` (npm, asc)
reads the verified claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hive.build import build_function
from hive.sandbox import Sandbox
from hive.toolchains import assemblyscript as as_toolchain
from tests.sdk.claims import check_claims_guest

pytestmark = pytest.mark.slow  # runs npm and the AssemblyScript compiler

INDEX_TS = r"""
import { JSON } from "json-as";
import { Request, Response, serve } from "edge-hive";

serve((req: Request): Response => {
  const claims = req.authClaims();
  if (claims === null) return Response.text("none", 404);
  const res = Response.rawJson(claims);
  const parsed = JSON.parse<JSON.Obj>(claims);
  const sub = parsed.get("sub");
  if (sub !== null && sub.type == JSON.Types.String) res.header("x-sub", sub.get<string>());
  return res;
});
"""


def test_auth_claims(sandbox: Sandbox, tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    (folder / "assembly").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "claims"\nlanguage = "assemblyscript"\n')
    package = {"name": "claims", "version": "0.0.0", "private": True, "devDependencies": as_toolchain.sdk_versions()}
    (folder / "package.json").write_text(json.dumps(package))
    (folder / "assembly" / "index.ts").write_text(INDEX_TS)
    check_claims_guest(sandbox, build_function(folder))
