#!/usr/bin/env bash
# systemd-analyze, which tests/operations/test_systemd.py runs to verify systemd/edge-hive.service.
# Installs Debian's systemd package only when the command is missing; quiet otherwise.
set -euo pipefail

command -v systemd-analyze >/dev/null 2>&1 && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Quiet unless it fails: one line of output.
if ! out=$( { as_root apt-get update -qq &&
              as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd; } 2>&1); then
  echo "$out" >&2
  echo "systemd: installing the systemd package (for systemd-analyze) failed" >&2
  exit 1
fi
echo "systemd: installed Debian's systemd package (for systemd-analyze)"
