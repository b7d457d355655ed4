#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/k8s against the Kubernetes
# schemas (kubernetes-validate from PyPI, pinned, in a venv cached outside the
# clone). The compose file and the manifests' troupe configuration are
# checked by tests/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.34.0
KUBE=1.33.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/troupe/kubernetes-validate-$VERSION"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "kubernetes-validate==$VERSION"
fi
manifests=$(ls deploy/k8s/*.yaml | grep -v kustomization.yaml)
"$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE" $manifests
echo "deploy/k8s: $(echo "$manifests" | wc -w) manifests valid for Kubernetes $KUBE"
