"""Cluster fixtures for the integration and e2e tiers: a real API server, a client
for it, a namespace, the CRDs, the operator.

`control_plane` starts the local etcd + kube-apiserver + kube-controller-manager
once per session (or connects to `$KUBECONFIG` with
`MODELOPS_USE_EXISTING_CLUSTER=1`). Missing binaries or a failed start is an
error of every test that uses it, never a skip. The root conftest loads this module
as a plugin for runs that include those tiers (one definition, one control plane per
session), so the tiers without a cluster never import the kubernetes client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from tests.conftest import DEADLINE_S, poll_until

from modelops_devcluster import ControlPlane, ExistingCluster, connect_or_start
from modelops_devcluster.persistent import install_crds

pytest_plugins = ["tests.mlflow_fixtures"]  # the MLflow server (registry) fixtures


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane | ExistingCluster]:
    cluster = connect_or_start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane | ExistingCluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount exists (so Pods can be
    admitted at once); deleted afterwards without waiting."""
    core = client.CoreV1Api(kube_api)
    name = f"it-{uuid.uuid4().hex[:10]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"modelops.dev/test": "integration"})
        )
    )

    def default_sa() -> bool | None:
        try:
            core.read_namespaced_service_account("default", name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    try:
        poll_until(f"ServiceAccount {name}/default", default_sa)
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


# -- modelops on the control plane --------------------------------------------------


@pytest.fixture(scope="session")
def crds_installed(control_plane: ControlPlane | ExistingCluster) -> list[str]:
    """The generated CRDs (the four kinds and ModelOpsPolicy), applied and Established:
    the dev cluster's own `install_crds`, so tests install them as `make dev-up` does."""
    return install_crds(control_plane.kubeconfig, timeout=DEADLINE_S)


@pytest.fixture
def operator(
    control_plane: ControlPlane | ExistingCluster, crds_installed: list[str], namespace: str
) -> Iterator[Any]:
    """The real operator, in-process, watching the test's namespace."""
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    config = OperatorConfig(
        namespaces=(namespace,), resync_seconds=5.0, jobs_image="modelops-jobs:test"
    )
    with run_in_thread(config, str(control_plane.kubeconfig), tick=0.2) as running:
        yield running


@pytest.fixture(scope="session")
def kserve_crd(control_plane: ControlPlane | ExistingCluster) -> str:
    """KServe's InferenceService CRD (serving.kserve.io/v1beta1, from its Go module:
    `make kserve`), applied and Established; its name. No KServe controller runs here:
    operator/modelops_devcluster/kserve_standin.py plays it."""
    from modelops_devcluster.kserve import install_inferenceservice_crd

    return install_inferenceservice_crd(control_plane.kubeconfig, timeout=DEADLINE_S)
