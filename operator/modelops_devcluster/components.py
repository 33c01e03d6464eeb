"""The command lines of etcd, kube-apiserver and kube-controller-manager.

Every flag that shapes the local cluster is here, as pure functions of paths and
ports, so one file answers "how is the test cluster configured?": loopback-only
listeners, client-certificate authentication, Node+RBAC authorization, signed
service-account tokens, and a controller manager whose controllers each act with
their own ServiceAccount. Nothing here starts a process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
"""Only a configuration value: no kube-proxy, nothing ever connects there."""
KUBERNETES_SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "validatingadmissionpolicy-status-controller",
)
"""The kube-controller-manager controllers started by default: what the operator's
Jobs, owner references, namespaces, ServiceAccounts, aggregated ClusterRoles,
the chart's Deployment and its ValidatingAdmissionPolicy (type checking, in status)
need. `("*",)` starts all of them; the control plane then
takes ~8s instead of ~3s to come up (2 cores), each controller getting its own
ServiceAccount and token first."""


def etcd_argv(bin_dir: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        str(bin_dir / "etcd"),
        "--name=modelops",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=modelops={peer_url}",
        "--unsafe-no-fsync",  # throwaway data: durability only costs time
        "--log-level=warn",
    ]


def apiserver_argv(bin_dir: Path, pki: Path, etcd_port: int, port: int) -> list[str]:
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # The default admission plugins, plus the companion of the Node authorizer.
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        "--endpoint-reconciler-type=none",  # 127.0.0.1 is not a valid Endpoints address
        "--profiling=false",
    ]


def controller_manager_argv(
    bin_dir: Path,
    pki: Path,
    kubeconfig: Path,
    cert_dir: Path,
    port: int,
    controllers: Sequence[str] = DEFAULT_CONTROLLERS,
) -> list[str]:
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup=true",  # no front proxy: nothing to look up
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir}",
        "--leader-elect=false",
        f"--controllers={','.join(controllers)}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--profiling=false",
    ]
