"""The Zig SDK's Request.authClaims: a function built with `edge-hive function build` reads the verified claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive.build import build_function
from hive.sandbox import Sandbox
from tests.sdk.claims import check_claims_guest

pytestmark = pytest.mark.slow  # runs the zig compiler

MAIN_ZIG = r"""
const std = @import("std");
const hive = @import("edge_hive");

pub const panic = hive.panic;
pub const std_options: std.Options = .{ .logFn = hive.logFn };

const Claims = struct { sub: []const u8 = "" };

pub fn handler(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    const claims = req.authClaims() orelse return hive.Response.text(alloc, 404, "none");
    const parsed = try std.json.parseFromSliceLeaky(Claims, alloc, claims, .{ .ignore_unknown_fields = true });
    var res = try hive.Response.bytes(alloc, 200, "application/json", claims);
    try res.header("x-sub", parsed.sub);
    return res;
}

comptime {
    hive.exportHandler(handler);
}
"""


def test_auth_claims(sandbox: Sandbox, tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "hive.toml").write_text('[function]\nname = "claims"\nlanguage = "zig"\n')
    (folder / "main.zig").write_text(MAIN_ZIG)
    check_claims_guest(sandbox, build_function(folder))
