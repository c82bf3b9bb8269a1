#!/usr/bin/env bash
# AssemblyScript guest toolchain: Node.js and npm. The compiler (assemblyscript) and json-as are npm
# packages each function installs into its own node_modules at build time, so nothing else is
# installed system-wide, and nothing at all when node and npm are already on PATH. Prints one line.
set -euo pipefail

installed=""
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  installed="installed Debian's nodejs and npm: "
fi

node_version=$(node --version)
note=""
if [ "${node_version#v}" != "$node_version" ] && [ "$(echo "${node_version#v}" | cut -d. -f1)" -lt 20 ]; then
  note=" (AssemblyScript 0.28 asks for Node.js 20 or newer)"
fi
echo "assemblyscript toolchain: ${installed}node $node_version, npm $(npm --version)$note"
