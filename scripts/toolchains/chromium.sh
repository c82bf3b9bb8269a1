#!/usr/bin/env bash
# Headless Chromium for tests/browser (a real browser's CORS: preflights, credentials mode, what a page
# on another origin may read). Installs Debian's chromium package only when /usr/bin/chromium is
# missing; quiet otherwise.
set -euo pipefail

[ -x /usr/bin/chromium ] && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Quiet unless it fails: one line of output.
if ! out=$( { as_root apt-get update -qq &&
              as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } 2>&1); then
  echo "$out" >&2
  echo "chromium: installing Debian's chromium package failed" >&2
  exit 1
fi
[ -x /usr/bin/chromium ] || { echo "chromium: the package is installed but /usr/bin/chromium is missing" >&2; exit 1; }
echo "chromium: installed Debian's chromium package (for tests/browser)"
