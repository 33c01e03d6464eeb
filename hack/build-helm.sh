#!/usr/bin/env bash
# Build helm (v3) from source through the Go module proxy, once, into a cache outside
# the repository, the same way hack/build-control-plane.sh builds the control plane:
# no prebuilt helm binary can be downloaded on our machines.
#
#   hack/build-helm.sh                      # build if missing, print the path of helm
#   HELM_VERSION=3.19.5 hack/build-helm.sh
set -euo pipefail
# shellcheck source=hack/go-build-progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build-progress.sh"

HELM_VERSION="${HELM_VERSION:-3.19.5}"
CACHE="${MODELOPS_CACHE:-$HOME/.cache/modelops}"
OUT="$CACHE/helm/v$HELM_VERSION"
BIN="$OUT/bin"

if [[ -x "$BIN/helm" ]]; then echo "$BIN/helm"; exit 0; fi

command -v go >/dev/null || { echo "error: go is required to build helm" >&2; exit 2; }
SRC="$OUT/src"
rm -rf "$SRC"; mkdir -p "$SRC" "$BIN"
cd "$SRC"
export GOFLAGS="-mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# A one-line wrapper module pins helm at the requested release and resolves its
# dependency graph exactly as helm's own go.mod/go.sum declare it.
go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" >/dev/null
MODFILE="$(go env GOMODCACHE)/cache/download/helm.sh/helm/v3/@v/v$HELM_VERSION.mod"
{
  echo "module modelops.dev/helm"
  echo
  echo "go $(awk '/^go /{print $2; exit}' "$MODFILE")"
  echo
  echo "require helm.sh/helm/v3 v$HELM_VERSION"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
echo ">> resolving modules for helm v$HELM_VERSION" >&2
go mod tidy >&2

# The same ldflags as helm's Makefile: the version, and the Kubernetes version that
# `helm template`/`helm lint` assume (client-go v0.X.Y -> Kubernetes 1.X).
CLIENT_GO="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
K8S_MINOR="$(echo "${CLIENT_GO#v}" | cut -d. -f2)"
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$K8S_MINOR"
done
go_build 1 1 "helm v$HELM_VERSION" "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm -trimpath -ldflags "$LDFLAGS"
mv "$BIN/helm.tmp" "$BIN/helm"
rm -rf "$SRC"
echo "$BIN/helm"
