#!/usr/bin/env bash
# Build SeaweedFS's `weed` (an Apache-2.0 S3-compatible object store) from source
# through the Go module proxy, once, into a cache outside the repository, the same way
# hack/build-control-plane.sh and hack/build-helm.sh build theirs. The jobs and e2e
# tests run s3:// against this real server (tests/storage_server.py starts it); no
# prebuilt binary can be downloaded on our machines, and servers under the AGPL are
# not to be used.
#
#   hack/build-seaweedfs.sh                         # build if missing, print the path of weed
#   SEAWEEDFS_VERSION=v0.0.0-2026... hack/build-seaweedfs.sh
#   SEAWEEDFS_GO_P=1 nice -n 10 hack/build-seaweedfs.sh   # gentle on a shared machine
#
# Progress goes to stderr (which step, and the elapsed time at the end); the only
# line on stdout is the path of the binary.
set -euo pipefail

# SeaweedFS's release tags are not semver, so the proxy serves it by pseudo-version.
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
MODULE=github.com/seaweedfs/seaweedfs
CACHE="${MODELOPS_CACHE:-$HOME/.cache/modelops}"
OUT="$CACHE/seaweedfs/$SEAWEEDFS_VERSION"
BIN="$OUT/bin"

if [[ -x "$BIN/weed" ]]; then echo "$BIN/weed"; exit 0; fi

command -v go >/dev/null || { echo "error: go is required to build seaweedfs" >&2; exit 2; }
START=$SECONDS
step() { echo ">> [seaweedfs $((SECONDS - START))s] $*" >&2; }
SRC="$OUT/src"
rm -rf "$SRC"; mkdir -p "$SRC" "$BIN"
cd "$SRC"
export GOFLAGS="-mod=mod ${GOFLAGS:-}" GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
PARALLEL="${SEAWEEDFS_GO_P:-$(nproc)}"

# A wrapper module pins seaweedfs at the requested commit and resolves its dependency
# graph exactly as its go.mod declares it; replace directives of a dependency are
# ignored by Go, so the ones pointing at published modules are copied over (a local
# path replace in its go.mod is commented out upstream).
step "fetching $MODULE@$SEAWEEDFS_VERSION"
go mod download -json "$MODULE@$SEAWEEDFS_VERSION" >/dev/null
MODFILE="$(go env GOMODCACHE)/cache/download/$MODULE/@v/$SEAWEEDFS_VERSION.mod"
{
  echo "module modelops.dev/seaweedfs"
  echo
  echo "go $(awk '/^go /{print $2; exit}' "$MODFILE")"
  echo
  echo "require $MODULE $SEAWEEDFS_VERSION"
  echo
  grep -E '^replace [^ ]+ => [^ .][^ ]* v[0-9]' "$MODFILE" || true
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
GO
step "resolving modules (a few hundred; the first run downloads them)"
go mod tidy >&2

step "compiling weed with -p=$PARALLEL (the first build takes a while on 2 cores)"
COMMIT="${SEAWEEDFS_VERSION##*-}"
CGO_ENABLED=0 go build -p "$PARALLEL" -trimpath \
  -ldflags "-s -w -X $MODULE/weed/util/version.COMMIT=${COMMIT:0:8}" \
  -o "$BIN/weed.tmp" "$MODULE/weed" >&2
mv "$BIN/weed.tmp" "$BIN/weed"
rm -rf "$SRC"
step "done: $BIN/weed (elapsed $((SECONDS - START))s)"
echo "$BIN/weed"
