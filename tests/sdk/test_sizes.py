"""Module sizes, the seed's figures: the C hello at most 10,000 bytes and the Rust hello at most 100,000, each
built from source the way `edge-hive function build` does it, with nothing of the SDKs left out; no debug
or name sections in them (the host reports a trap by its code and never reads names); and the build says
how big the module is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.sdk.common import copy_example
from tests.sdk.langs import HELLO, Builds
from tests.support import BIN

pytestmark = pytest.mark.slow  # runs zig cc and cargo

LIMITS = {"c": 10_000, "rust": 100_000}


def sections(wasm: bytes) -> dict[str, int]:
    """Section name (custom sections by their own name) -> size in bytes."""
    names = ["custom", "type", "import", "function", "table", "memory", "global", "export", "start", "elem"]
    names += ["code", "data", "datacount", "tag"]

    def leb(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = wasm[i]
            value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
            if byte < 0x80:
                return value, i

    assert wasm[:8] == b"\0asm\1\0\0\0"
    out: dict[str, int] = {}
    i = 8
    while i < len(wasm):
        size, start = leb(i + 1)
        name = names[wasm[i]]
        if wasm[i] == 0:
            length, at = leb(start)
            name = "custom:" + wasm[at : at + length].decode()
        out[name] = out.get(name, 0) + size
        i = start + size
    assert i == len(wasm)
    return out


@pytest.mark.parametrize("lang", sorted(LIMITS))
def test_hello_fits_the_seed(sdk_builds: Builds, lang: str) -> None:
    path = sdk_builds.hello(lang)[0]
    wasm = path.read_bytes()
    parts = sections(wasm)
    print(f"{HELLO[lang]}: {len(wasm)} bytes, {parts}")
    assert len(wasm) <= LIMITS[lang]
    assert not [name for name in parts if name.startswith(("custom:.debug", "custom:name"))]


def test_build_prints_the_size(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = copy_example(tmp_path_factory, "hello")
    proc = subprocess.run(
        [str(BIN / "edge-hive"), "function", "build", str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    wasm = Path(folder) / "hello.wasm"
    assert f"built {wasm} ({wasm.stat().st_size} bytes)" in proc.stdout
