#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, kube-controller-manager, kubectl,
# etcd) from source through the Go module proxy, once, into a cache outside the
# repository. No prebuilt Kubernetes binary can be downloaded on our machines, so
# this is the only way to get a real API server for the integration tests.
#
#   hack/build-control-plane.sh            # build if missing, print the bin dir
#   KUBE_VERSION=1.35.4 hack/build-control-plane.sh
set -euo pipefail
# shellcheck source=hack/go-build-progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build-progress.sh"

KUBE_VERSION="${KUBE_VERSION:-1.35.4}"
CACHE="${MODELOPS_CACHE:-$HOME/.cache/modelops}"
OUT="$CACHE/control-plane/v$KUBE_VERSION"
BIN="$OUT/bin"
BINARIES=(kube-apiserver kube-controller-manager kubectl etcd)

have_all() {
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}
if have_all; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "error: go is required to build the control plane" >&2; exit 2; }
SRC="$OUT/src"
rm -rf "$SRC"; mkdir -p "$SRC/etcd" "$BIN"
cd "$SRC"
export GOFLAGS="-mod=mod" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# k8s.io/kubernetes pins its staging modules with local replace directives, which
# `go install pkg@version` refuses; a tiny wrapper module re-points them at the
# published staging modules of the same release (v1.X.Y -> v0.X.Y).
STAGING_VERSION="v0.${KUBE_VERSION#*.}"
go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" >/dev/null
MODFILE="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$KUBE_VERSION.mod"
{
  echo "module modelops.dev/control-plane"
  echo
  echo "go $(awk '/^go /{print $2; exit}' "$MODFILE")"
  echo
  echo "require k8s.io/kubernetes v$KUBE_VERSION"
  echo
  grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$MODFILE" \
    | awk -v v="$STAGING_VERSION" '{printf "replace %s => %s %s\n", $1, $1, v}'
} > go.mod
cat > etcd/main.go <<'GO'
// etcd, built from the same dependency graph the API server was tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
echo ">> resolving modules for Kubernetes v$KUBE_VERSION (downloads through the Go module proxy)" >&2
go mod tidy >&2
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_VERSION#*.}"
LDFLAGS="${LDFLAGS%.*}"
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
echo ">> building the control plane: 4 binaries, about 7 minutes on 2 cores the first time" >&2
step=0
for b in kube-apiserver kube-controller-manager kubectl; do
  step=$((step + 1))
  go_build "$step" 4 "$b" "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b" -trimpath -ldflags "$LDFLAGS"
  mv "$BIN/$b.tmp" "$BIN/$b"
done
go_build 4 4 etcd "$BIN/etcd.tmp" ./etcd -trimpath -ldflags "-s -w"
mv "$BIN/etcd.tmp" "$BIN/etcd"
rm -rf "$SRC"
echo "$BIN"
