"""The C SDK's hive_auth_claims: a function built with `edge-hive function build` reads the verified claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive.build import build_function
from hive.sandbox import Sandbox
from tests.sdk.claims import check_claims_guest

pytestmark = pytest.mark.slow  # runs the zig compiler

MAIN_C = r"""
#include "edge_hive.h"

hive_response *handler(const hive_request *req) {
    hive_str claims = hive_auth_claims(req);
    if (!claims.ptr) return hive_response_text(404, "none");
    hive_response *res = hive_response_new(200);
    hive_str sub;
    if (hive_json_get_string(claims, "sub", &sub) == 1) hive_response_add_header_n(res, "x-sub", 5, sub.ptr, sub.len);
    hive_response_set_body(res, claims.ptr, claims.len);
    return res;
}
"""


def test_hive_auth_claims(sandbox: Sandbox, tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "hive.toml").write_text('[function]\nname = "claims"\nlanguage = "c"\nsources = ["main.c"]\n')
    (folder / "main.c").write_text(MAIN_C)
    check_claims_guest(sandbox, build_function(folder))
