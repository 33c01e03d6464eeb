"""Fixtures for the integration tier: a real API server, a client for it, a namespace.

`control_plane` starts the local etcd + kube-apiserver + kube-controller-manager
once per session (or connects to `$KUBECONFIG` with
`MODELOPS_USE_EXISTING_CLUSTER=1`). Missing binaries or a failed start is an
error of every test that uses it, never a skip.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelops_devcluster import ControlPlane, ExistingCluster, connect_or_start

DEADLINE_S = 60.0
T = TypeVar("T")


def poll_until(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_S) -> T:
    """Poll `probe` until it returns something other than None; fail the test
    after `timeout` seconds. The integration tests never sleep a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """`wait_for(what, probe, timeout=60)`: see `poll_until`."""
    return poll_until


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

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def crds_installed(
    control_plane: ControlPlane | ExistingCluster, kube_api: client.ApiClient
) -> list[str]:
    """The generated CRDs (the four kinds and ModelOpsPolicy), applied and Established."""
    from modelops_api.crdgen import crd_for, policy_crd
    from modelops_api.kinds import KINDS

    ext = client.ApiextensionsV1Api(kube_api)
    names = []
    for body in [*(crd_for(info) for info in KINDS), policy_crd()]:
        name = body["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(name, body)
        names.append(name)

    def established(name: str) -> bool | None:
        crd = ext.read_custom_resource_definition(name)
        conds = {c.type: c.status for c in (crd.status.conditions or [])}
        return True if conds.get("Established") == "True" else None

    for name in names:
        poll_until(f"CRD {name} Established", lambda n=name: established(n))
    return names


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


# -- a real S3-compatible server (SeaweedFS) ------------------------------------------

S3_BUCKET = "modelops-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`weed server -s3` on free loopback ports with an access key pair and the bucket
    `modelops-test`; a missing `weed` binary (`make seaweedfs`) fails the test."""
    from modelops_devcluster.seaweedfs import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        server.create_bucket(S3_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The server's credentials and endpoint in this process's environment, and a
    fresh download cache; returns the variables set."""
    env = {**s3_server.env(), "MODELOPS_CACHE_DIR": str(tmp_path / "cache")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A fresh s3:// prefix in the test bucket, unique to this test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"s3://{S3_BUCKET}/{name}-{uuid.uuid4().hex[:8]}"
