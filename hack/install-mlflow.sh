#!/usr/bin/env bash
# Install the MLflow tracking server the registry tests run (`mlflow server`, SQLite
# backend) into a virtualenv of its own, once, outside the repository: the pins are
# requirements/mlflow.txt, the venv is $MODELOPS_CACHE/mlflow-<mlflow version>. It is
# never the project venv: the operator talks to MLflow over its REST API and has no
# mlflow dependency. modelops_devcluster/mlflow.py finds the server here.
#
#   hack/install-mlflow.sh        # install if missing (or if the pins changed); print the path of mlflow
#
# Pins that changed are installed over the existing venv (pip adds or swaps only what
# differs, e.g. the two auth packages), not into a fresh one: a cached machine does not
# download all of mlflow again. A package dropped from the pins stays installed (harmless
# for the server); `rm -rf` the venv for a clean one.
#
# Progress goes to stderr; the only line on stdout is the path of the mlflow command.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/requirements/mlflow.txt"
CACHE="${MODELOPS_CACHE:-$HOME/.cache/modelops}"
VERSION="$(sed -n 's/^mlflow==\(.*\)$/\1/p' "$PINS")"
[[ -n "$VERSION" ]] || { echo "error: $PINS pins no mlflow==" >&2; exit 2; }
OUT="$CACHE/mlflow-$VERSION"
STAMP="$OUT/.installed-$(sha256sum "$PINS" | cut -c1-12)"

if [[ -f "$STAMP" && -x "$OUT/bin/mlflow" ]]; then echo "$OUT/bin/mlflow"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/mlflow-$VERSION.lock"
flock 9  # two `make mlflow` at once: the second waits, then finds the stamp
if [[ -f "$STAMP" && -x "$OUT/bin/mlflow" ]]; then echo "$OUT/bin/mlflow"; exit 0; fi

START=$SECONDS
if [[ -x "$OUT/bin/python" ]]; then
  echo ">> [mlflow] updating the pins of mlflow $VERSION in $OUT" >&2
else
  echo ">> [mlflow] installing mlflow $VERSION into $OUT" >&2
  rm -rf "$OUT"
  python3 -m venv "$OUT"
  "$OUT/bin/python" -m pip install -q --upgrade pip >&2
fi
"$OUT/bin/python" -m pip install -q -r "$PINS" >&2
"$OUT/bin/mlflow" --version >&2
rm -f "$OUT"/.installed-*  # the stamp of the pins installed before
touch "$STAMP"
echo ">> [mlflow] done in $((SECONDS - START))s" >&2
echo "$OUT/bin/mlflow"
