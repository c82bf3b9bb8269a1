#!/usr/bin/env bash
# Rust guest toolchain (hive/toolchains/rust.py): Debian's rustc 1.63 and cargo, the wasm32 std, the
# linker rustc finds as rust-lld (lld-14, only a Recommends of the std package), and the crates the SDK
# and examples use, which land in the cargo directory source /usr/share/cargo/registry.
set -euo pipefail

PACKAGES=(rustc cargo libstd-rust-dev-wasm32 lld-14 librust-serde-json-dev librust-chrono-dev)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Quiet unless it fails.
if ! out=$( { as_root apt-get update -qq &&
              as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } 2>&1); then
  echo "$out" >&2
  echo "rust toolchain: installing ${missing[*]} failed" >&2
  exit 1
fi
echo "rust toolchain: installed ${missing[*]}"
