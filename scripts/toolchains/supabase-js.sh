#!/usr/bin/env bash
# supabase-js for tests/integration/test_supabase_js.py: `npm ci` in tests/node (package.json and its
# lockfile pin the version) when its node_modules is missing or older than the lockfile; quiet otherwise.
# Needs node and npm (scripts/toolchains/assemblyscript.sh installs them; it runs before this one).
set -euo pipefail
cd "$(dirname "$0")/../../tests/node"

stamp=node_modules/.package-lock.json
[ -f node_modules/@supabase/supabase-js/package.json ] && [ -f "$stamp" ] && [ ! package-lock.json -nt "$stamp" ] && exit 0

command -v npm >/dev/null 2>&1 || { echo "supabase-js: npm is missing (scripts/toolchains/assemblyscript.sh installs it)" >&2; exit 1; }
# Quiet unless it fails: one line of output. --ignore-scripts: nothing from the registry runs here.
if ! out=$(npm ci --no-audit --no-fund --ignore-scripts 2>&1); then
  echo "$out" >&2
  echo "supabase-js: npm ci in tests/node failed" >&2
  exit 1
fi
echo "supabase-js: installed $(node -p 'require("./node_modules/@supabase/supabase-js/package.json").version') into tests/node/node_modules"
