"""Use a cluster the developer already has instead of starting a local control plane.

With `MODELOPS_USE_EXISTING_CLUSTER=1` and `KUBECONFIG` set (kind, minikube, a
shared dev cluster), the integration tests run against that cluster. Either way
they get an object with a `.kubeconfig` and a `stop()`, from `connect_or_start()`.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from modelops_devcluster.controlplane import ControlPlane, ControlPlaneError

USE_EXISTING_ENV = "MODELOPS_USE_EXISTING_CLUSTER"


class ExistingCluster:
    """A cluster started by someone else: only its kubeconfig; `stop()` does nothing."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def stop(self) -> None:
        """Leave the cluster running: it is not ours."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ExistingCluster(kubeconfig={str(self.kubeconfig)!r})"


def use_existing_cluster() -> bool:
    """Whether `$MODELOPS_USE_EXISTING_CLUSTER` asks for an existing cluster."""
    return os.environ.get(USE_EXISTING_ENV, "").strip().lower() in ("1", "true", "yes")


def connect_or_start(**control_plane_options: Any) -> ControlPlane | ExistingCluster:
    """The cluster to test against: the existing one named by `$KUBECONFIG` when
    `$MODELOPS_USE_EXISTING_CLUSTER=1`, otherwise a started local `ControlPlane`
    (options are passed to its constructor). Never returns a cluster that is not
    there: a missing kubeconfig or a failed start raises."""
    if use_existing_cluster():
        value = os.environ.get("KUBECONFIG", "")
        if not value:
            raise ControlPlaneError(f"{USE_EXISTING_ENV}=1 needs KUBECONFIG to name a kubeconfig")
        if os.pathsep in value:
            raise ControlPlaneError(f"KUBECONFIG={value} lists several files; name exactly one")
        path = Path(value).expanduser()
        if not path.is_file():
            raise ControlPlaneError(f"KUBECONFIG={value} is not a file")
        return ExistingCluster(path)
    return ControlPlane(**control_plane_options).start()
