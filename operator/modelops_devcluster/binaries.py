"""Where the control-plane binaries come from.

No prebuilt Kubernetes binary can be downloaded on our machines, so
`hack/build-control-plane.sh` builds kube-apiserver, kube-controller-manager,
kubectl and etcd from source once, into a cache outside the repository. This
module is the single Python entry point to that cache: it finds (or builds) the
binaries for the pinned version and fails loudly when it cannot.
"""

from __future__ import annotations

import collections
import fcntl
import os
import subprocess
import sys
from pathlib import Path

KUBE_VERSION = "1.35.4"
"""The pinned Kubernetes release of the local control plane."""

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")

BIN_DIR_ENV = "MODELOPS_CONTROL_PLANE_BIN"
CACHE_ENV = "MODELOPS_CACHE"
BUILD_SCRIPT = Path("hack") / "build-control-plane.sh"


class BinariesError(RuntimeError):
    """The control-plane binaries are missing and could not be built."""


def cache_root() -> Path:
    """The modelops cache (`$MODELOPS_CACHE`, default `~/.cache/modelops`)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "modelops")


def default_bin_dir(version: str = KUBE_VERSION) -> Path:
    """Where the build script puts the binaries of `version`."""
    return cache_root() / "control-plane" / f"v{version}" / "bin"


def missing_binaries(bin_dir: Path) -> list[str]:
    """The names in `BINARIES` that are not executable files in `bin_dir`."""
    return [
        b for b in BINARIES if not os.access(bin_dir / b, os.X_OK) or not (bin_dir / b).is_file()
    ]


def repo_root() -> Path | None:
    """The source checkout this package lives in, if it is one (has the build script)."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / BUILD_SCRIPT).is_file() else None


def ensure_binaries(version: str = KUBE_VERSION) -> Path:
    """Return a directory holding all of `BINARIES`, building them if needed.

    `$MODELOPS_CONTROL_PLANE_BIN` names a directory that must already hold them.
    Otherwise `hack/build-control-plane.sh` runs (a no-op once cached; the first
    build compiles Kubernetes and takes a long time). Raises `BinariesError` with
    the tail of the build output when Go is missing or the build fails.
    """
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        bin_dir = Path(override).expanduser().resolve()
        missing = missing_binaries(bin_dir)
        if missing:
            raise BinariesError(
                f"${BIN_DIR_ENV}={override} lacks executable {', '.join(missing)}; "
                f"unset it to build them with {BUILD_SCRIPT}"
            )
        return bin_dir

    root = repo_root()
    if root is None:
        bin_dir = default_bin_dir(version)
        missing = missing_binaries(bin_dir)
        if missing:
            raise BinariesError(
                f"control-plane binaries missing from {bin_dir} ({', '.join(missing)}) and no "
                f"source checkout with {BUILD_SCRIPT} was found to build them; "
                f"set ${BIN_DIR_ENV} to a directory holding {', '.join(BINARIES)}"
            )
        return bin_dir
    return _run_build_script(root, version)


def _run_build_script(root: Path, version: str) -> Path:
    """Run the build script under a lock, streaming its output to stderr."""
    lock_dir = cache_root() / "control-plane"
    lock_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KUBE_VERSION": version}
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with open(lock_dir / ".build.lock", "w") as lock:
        # Two test sessions starting at once must not both rebuild into one directory.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            proc = subprocess.Popen(
                ["bash", str(root / BUILD_SCRIPT)],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        except OSError as exc:
            raise BinariesError(f"cannot run {BUILD_SCRIPT}: {exc}") from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if not Path(line.strip()).is_dir():  # the bin dir it prints is not news
                sys.stderr.write(line)
        code = proc.wait()
    lines = [line for line in tail if line.strip()]
    if code != 0 or not lines:
        raise BinariesError(
            f"{BUILD_SCRIPT} failed with exit code {code} (it needs Go and the Go module "
            "proxy); last output:\n" + "\n".join(lines)
        )
    bin_dir = Path(lines[-1].strip())
    missing = missing_binaries(bin_dir)
    if missing:
        raise BinariesError(
            f"{BUILD_SCRIPT} reported {bin_dir} but it lacks {', '.join(missing)}; "
            "last output:\n" + "\n".join(lines)
        )
    return bin_dir
