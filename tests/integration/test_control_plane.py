"""The local control plane is a real one: pinned version, RBAC enforced, the Job
controller and the garbage collector running, and nothing left behind when it stops.

Every other integration test relies on these properties; if one breaks, this file
says which.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

import modelops_devcluster
from modelops_devcluster import KUBE_VERSION, ControlPlane, ExistingCluster
from modelops_devcluster.kserve import crd_path as kserve_crd_path

Cluster = ControlPlane | ExistingCluster
WaitFor = Callable[..., Any]


def _local(cluster: Cluster) -> ControlPlane:
    if not isinstance(cluster, ControlPlane):
        pytest.skip("needs the local control plane (its CA and processes), not an existing cluster")
    return cluster


def _gone(read: Callable[[], object]) -> bool | None:
    """True once `read` answers 404, None while the object still exists."""
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return None


def test_api_server_reports_the_pinned_version(
    control_plane: Cluster, kube_api: client.ApiClient
) -> None:
    info = client.VersionApi(kube_api).get_code()
    if isinstance(control_plane, ControlPlane):
        assert info.git_version == f"v{KUBE_VERSION}"
        assert (info.major, info.minor) == ("1", KUBE_VERSION.split(".")[1])
    else:
        assert info.major == "1"


def test_rbac_denies_a_user_without_bindings(
    control_plane: Cluster, kube_api: client.ApiClient, namespace: str, wait_for: WaitFor
) -> None:
    plane = _local(control_plane)
    kubeconfig = plane.kubeconfig_for_user("alice", ["modelops-testers"])
    alice = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))

    with pytest.raises(ApiException) as denied:
        alice.list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert 'User "alice" cannot list resource "pods"' in json.loads(denied.value.body)["message"]

    # The certificate's groups are honoured: binding the group lets alice in.
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
    ))  # fmt: skip
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="testers-read-pods"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
        subjects=[client.RbacV1Subject(kind="Group", name="modelops-testers", api_group="rbac.authorization.k8s.io")],
    ))  # fmt: skip

    def allowed() -> bool | None:
        try:
            alice.list_namespaced_pod(namespace)
            return True
        except ApiException as exc:
            if exc.status == 403:
                return None
            raise

    wait_for("the RoleBinding to take effect", allowed)
    with pytest.raises(ApiException) as still_denied:
        alice.list_namespaced_pod("default")
    assert still_denied.value.status == 403


def test_service_account_tokens_authenticate(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    token = core.create_namespaced_service_account_token(
        "robot",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token

    settings = client.Configuration()
    settings.host = kube_api.configuration.host
    settings.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    settings.verify_ssl = kube_api.configuration.verify_ssl
    settings.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(settings) as robot:
        review = client.AuthenticationV1Api(robot).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:robot"
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(robot).list_namespaced_pod(namespace)
        assert denied.value.status == 403


def test_job_controller_creates_the_pod_of_a_job(
    control_plane: Cluster, kube_api: client.ApiClient, namespace: str, wait_for: WaitFor
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    job = batch.create_namespaced_job(namespace, client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(name="main", image="busybox:1.36", command=["true"])],
            )),
        ),
    ))  # fmt: skip

    def job_pod() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(
            namespace, label_selector="batch.kubernetes.io/job-name=hello"
        )
        return pods.items[0] if pods.items else None

    pod = wait_for("kube-controller-manager to create the Job's pod", job_pod)
    [owner] = pod.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "Job",
        "hello",
        job.metadata.uid,
        True,
    )
    if isinstance(control_plane, ControlPlane):  # no scheduler, no kubelet
        assert pod.status.phase == "Pending"
        assert pod.spec.node_name is None

    def active() -> int | None:
        status = batch.read_namespaced_job_status("hello", namespace).status
        return status.active if status.active else None

    assert wait_for("the Job controller to count the pod as active", active) == 1


def test_job_status_is_driven_by_patching_the_status_subresource(
    kube_api: client.ApiClient, namespace: str, wait_for: WaitFor
) -> None:
    """With no kubelet, a test finishes a Job itself. The API server (1.35) accepts
    Complete only together with SuccessCriteriaMet, zero active/ready/terminating
    pods and a completionTime; Failed needs FailureTarget the same way."""
    batch = client.BatchV1Api(kube_api)
    batch.create_namespaced_job(namespace, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "done"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox:1.36", "command": ["true"]}],
        }}},
    })  # fmt: skip

    def started() -> bool | None:
        return (
            True if batch.read_namespaced_job_status("done", namespace).status.start_time else None
        )

    wait_for("the Job controller to set startTime", started)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [
        {"type": t, "status": "True", "reason": "CompletionsReached", "message": "test", "lastTransitionTime": now}
        for t in ("SuccessCriteriaMet", "Complete")
    ]  # fmt: skip
    batch.patch_namespaced_job_status("done", namespace, {"status": {
        "conditions": conditions, "succeeded": 1, "active": 0, "ready": 0, "terminating": 0,
        "completionTime": now,
    }})  # fmt: skip

    status = batch.read_namespaced_job_status("done", namespace).status
    assert {c.type: c.status for c in status.conditions} == {
        "SuccessCriteriaMet": "True",
        "Complete": "True",
    }
    assert (status.succeeded, status.active) == (1, None)


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(
    kube_api: client.ApiClient, namespace: str, wait_for: WaitFor
) -> None:
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"k": "v"})
    )
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="dependent",
        owner_references=[client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
        )],
    )))  # fmt: skip

    core.delete_namespaced_config_map("owner", namespace)

    wait_for(
        "the garbage collector to delete the dependent ConfigMap",
        lambda: _gone(lambda: core.read_namespaced_config_map("dependent", namespace)),
    )


def _proc_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_stop_leaves_no_process_or_temp_dir_behind(control_plane: Cluster) -> None:
    first = _local(control_plane)
    with ControlPlane(bin_dir=first.bin_dir) as second:
        pids = [p.pid for p in second.processes]
        assert len(pids) == 3 and all(_proc_alive(pid) for pid in pids)
        assert second.server != first.server
        assert second.kubectl("get", "namespace", "default", "-o", "name").stdout.strip() == (
            "namespace/default"
        )
        data_dir = second.data_dir
        # A restart keeps the start order, so a stop still stops clients before the
        # servers they use (else etcd waits out the 15 s SIGTERM grace for its watchers).
        order = [p.name for p in second.processes]
        second.restart(("etcd", "kube-apiserver"))
        assert [p.name for p in second.processes] == order
        pids += [p.pid for p in second.processes]
    assert not any(_proc_alive(pid) for pid in pids)
    assert not data_dir.exists()


def test_cli_up_kubeconfig_down(control_plane: Cluster, tmp_path: Path) -> None:
    plane = _local(control_plane)
    # `cluster up` installs KServe's CRD from the cache: the real one, beside this
    # test's own state directory (MODELOPS_CACHE is a temporary directory here).
    (tmp_path / "kserve").symlink_to(kserve_crd_path().parents[2], target_is_directory=True)
    env = {
        **os.environ,
        "MODELOPS_CACHE": str(tmp_path),
        "MODELOPS_CONTROL_PLANE_BIN": str(plane.bin_dir),
        "PYTHONPATH": str(Path(modelops_devcluster.__file__).resolve().parents[1]),
    }

    def cluster(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelops_devcluster", *args],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip

    started = cluster("up", "--run-pods")
    assert started.returncode == 0, started.stderr
    kubeconfig = started.stdout.strip().removeprefix("export KUBECONFIG=")
    pids: list[int] = []

    def recorded() -> dict[str, int]:
        state = json.loads((tmp_path / "cluster" / "state.json").read_text())
        return {p["name"]: p["pid"] for p in state["processes"]}

    try:
        first = recorded()
        pids = list(first.values())
        assert set(first) == {"etcd", "kube-apiserver", "kube-controller-manager", "pod-runner"}
        assert all(_proc_alive(pid) for pid in pids)  # they outlived `up`
        # Issue 12: `up` installs the CRDs, says where kubectl is, and runs pods on request.
        assert f"kubectl: {plane.bin_dir / 'kubectl'}" in started.stderr
        crds = plane.kubectl("get", "crd", "-o", "name", kubeconfig=Path(kubeconfig)).stdout
        assert "customresourcedefinition.apiextensions.k8s.io/pruneretrains.modelops.dev" in crds
        assert cluster("kubeconfig").stdout.strip() == kubeconfig
        again = cluster("up")
        assert again.returncode == 0 and "already running" in again.stderr
        # A fault drill: the restarted components get new pids, and `down` stops them.
        drill = cluster("restart", "kube-apiserver")
        assert drill.returncode == 0 and "unavailable for" in drill.stderr, drill.stderr
        second = recorded()
        assert second["kube-apiserver"] != first["kube-apiserver"]
        assert not _proc_alive(first["kube-apiserver"])
        pids += list(second.values())
        ready = plane.kubectl("get", "--raw", "/readyz", kubeconfig=Path(kubeconfig))
        assert ready.stdout.strip() == "ok"
    finally:
        stopped = cluster("down")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_proc_alive(pid) for pid in pids)
    assert cluster("kubeconfig").returncode == 1
