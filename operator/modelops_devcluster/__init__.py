"""A real local Kubernetes control plane for the integration tests and `modelops cluster`.

No test of the operator talks to a fake API server. This package starts etcd,
kube-apiserver (RBAC on) and kube-controller-manager at a pinned version, built
once from source by `hack/build-control-plane.sh`, on free 127.0.0.1 ports; or,
with `MODELOPS_USE_EXISTING_CLUSTER=1`, hands back the cluster `KUBECONFIG` names.
It uses only the standard library and the `openssl` command.
"""

from modelops_devcluster.binaries import KUBE_VERSION, BinariesError, ensure_binaries
from modelops_devcluster.components import DEFAULT_CONTROLLERS
from modelops_devcluster.controlplane import ControlPlane, ControlPlaneError
from modelops_devcluster.existing import ExistingCluster, connect_or_start, use_existing_cluster

__all__ = [
    "DEFAULT_CONTROLLERS",
    "KUBE_VERSION",
    "BinariesError",
    "ControlPlane",
    "ControlPlaneError",
    "ExistingCluster",
    "connect_or_start",
    "ensure_binaries",
    "use_existing_cluster",
]
