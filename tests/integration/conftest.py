"""Fixtures for the integration tier: a real API server, a client for it, a namespace.

`control_plane` starts the local etcd + kube-apiserver + kube-controller-manager
once per session (or connects to `$KUBECONFIG` with
`MODELOPS_USE_EXISTING_CLUSTER=1`). Missing binaries or a failed start is an
error of every test that uses it, never a skip.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
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
