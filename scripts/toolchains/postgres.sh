#!/usr/bin/env bash
# PostgreSQL server binaries (initdb, pg_ctl, postgres) for the cluster-mode tests (tests/cluster,
# tests/kv's PostgreSQL backend): their fixture starts a throwaway server in a temp dir. Installs
# Debian's postgresql package only when the binaries are missing; quiet otherwise. Debian keeps them
# in /usr/lib/postgresql/<version>/bin, off PATH: the fixture looks there too.
set -euo pipefail

have() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] && return 0
  done
  return 1
}

have && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Quiet unless it fails. The package's own cluster (postgresql@<ver>-main) is not used by the tests.
if ! out=$( { as_root apt-get update -qq &&
              as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } 2>&1); then
  echo "$out" >&2
  echo "postgres: installing Debian's postgresql package failed" >&2
  exit 1
fi
have || { echo "postgres: the postgresql package is installed but initdb/pg_ctl were not found" >&2; exit 1; }
echo "postgres: installed Debian's postgresql package (for the cluster-mode tests)"
