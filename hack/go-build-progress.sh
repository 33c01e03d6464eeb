# Sourced by hack/build-*.sh: `go_build STEP OF NAME OUT PKG [go build flags...]` runs
# `go build -v` and prints where it is ("[2/4] kube-controller-manager: 800/1900
# packages", every 100 packages) instead of minutes of silence; compiler errors pass
# through. Everything goes to stderr: stdout is the script's answer (a path).
go_build() {
  local step="$1" of="$2" name="$3" out="$4" pkg="$5"
  shift 5
  local total
  total="$(go list -deps "$pkg" 2>/dev/null | wc -l)" || total="?"
  echo ">> [$step/$of] building $name ($total packages to compile at most)" >&2
  local began=$SECONDS
  # pipefail (set by the callers) makes a failed build fail the pipeline.
  if ! CGO_ENABLED=0 go build -v "$@" -o "$out" "$pkg" 2>&1 | awk -v total="$total" \
    -v name="$name" -v step="$step" -v of="$of" '
      !/^[A-Za-z0-9._~\/-]+$/ { print > "/dev/stderr"; next }
      { n++; if (n % 100 == 0) printf("   [%s/%s] %s: %d/%s packages\n", step, of, name, n, total) > "/dev/stderr" }
    '; then
    echo ">> [$step/$of] building $name failed" >&2
    return 1
  fi
  echo "   [$step/$of] $name built in $((SECONDS - began)) s" >&2
}
