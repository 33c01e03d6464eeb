#!/usr/bin/env bash
# Fetch KServe's InferenceService CRD (serving.kserve.io/v1beta1) from its Go module
# (github.com/kserve/kserve) through the Go module proxy, once, into a cache outside the
# repository. The rollout of a ModelRollout patches an InferenceService; the tests and the
# devcluster install this CRD into the local control plane. No KServe controller runs
# here (it needs Knative or a cluster's Deployments): tests play it (tests/kserve_standin.py).
#
#   hack/kserve-crds.sh                       # fetch if missing, print the cache dir
#   KSERVE_VERSION=0.16.0 hack/kserve-crds.sh
#
# The cache dir holds crds/serving.kserve.io_inferenceservices.yaml (about 1 MB).
# Cold: ~3 s (one module zip, ~13 MB, through the proxy). Cached: instant.
set -euo pipefail

KSERVE_VERSION="${KSERVE_VERSION:-0.16.0}"
CACHE="${MODELOPS_CACHE:-$HOME/.cache/modelops}"
OUT="$CACHE/kserve/v$KSERVE_VERSION"
CRD="serving.kserve.io_inferenceservices.yaml"
if [[ -s "$OUT/crds/$CRD" ]]; then
  echo "$OUT"; exit 0
fi

command -v go >/dev/null || { echo "error: go is required to fetch KServe's CRDs" >&2; exit 2; }
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
echo ">> fetching github.com/kserve/kserve@v$KSERVE_VERSION (Go module proxy)" >&2
# Run outside any module: `go mod download module@version` needs no go.mod.
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
MODDIR="$(cd "$TMP" && go mod download -json "github.com/kserve/kserve@v$KSERVE_VERSION" \
  | awk -F'"' '/"Dir":/{print $4}')"
[[ -s "$MODDIR/config/crd/full/$CRD" ]] || {
  echo "error: $MODDIR/config/crd/full/$CRD not found in the module" >&2; exit 1; }
mkdir -p "$OUT/crds"
install -m 0644 "$MODDIR/config/crd/full/$CRD" "$OUT/crds/$CRD.tmp"
mv "$OUT/crds/$CRD.tmp" "$OUT/crds/$CRD"
echo "$OUT"
