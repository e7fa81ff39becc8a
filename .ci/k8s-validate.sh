#!/usr/bin/env bash
# Renders deploy/k8s (every Kustomize overlay and the whole) and validates each manifest
# against the Kubernetes OpenAPI schemas, strictly (unknown fields fail), with
# kubernetes-validate from PyPI, which ships the schemas (no cluster, no network beyond
# PyPI). Versions: 1.34 (what most clusters run) and 1.37 (the newest it ships).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
KV_VERSION=1.37.0
if ! kubernetes-validate --version 2>/dev/null | grep -q "$KV_VERSION"; then
  python3 -m pip install --quiet "kubernetes-validate==$KV_VERSION"
fi
# kubectl carries Kustomize; Debian's kubernetes-client when the machine has none.
if ! command -v kubectl >/dev/null; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get install -y -qq kubernetes-client >/dev/null
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
targets=(origin base overlays/eu overlays/us overlays/ap .)
for t in "${targets[@]}"; do
  name="$(echo "$t" | tr '/.' '__')"
  kubectl kustomize "$root/deploy/k8s/$t" > "$out/$name.yaml"
  for v in 1.34.0 1.37.0; do
    kubernetes-validate --quiet --strict -k "$v" "$out/$name.yaml"
  done
  echo "k8s: deploy/k8s/$t: $(grep -c '^kind:' "$out/$name.yaml") manifests valid against Kubernetes 1.34 and 1.37 (strict)"
done
# The check can fail: a misspelt field in a copy of the whole is rejected.
sed 's/terminationGracePeriodSeconds/terminationGracePeriodSecs/' "$out/_.yaml" > "$out/bad.yaml"
if kubernetes-validate --quiet --strict -k 1.34.0 "$out/bad.yaml" >/dev/null 2>&1; then
  echo "k8s: a misspelt field passed validation" >&2
  exit 1
fi
