"""A multi-node run on the operator's runtime (issues 13 and 16 together), against the
local control plane with the JobSet CRD installed: the operator creates the JobSet
through its one HTTP path (`k8s/api.py`), the JobSet watch feeds the informer cache, and
reconciles of the run in progress (resyncs every 0.5 s, and the watch events) list no
JobSets: the collection is listed only before the first JobSet watch event arrives.

The JobSet controller does not run here (no webhooks, no node Jobs): the test plays it,
writing the status it would write through the JobSet's status subresource (all nodes
ready, then Failed); the resource follows only if the watch events reach the cache.
"""

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from tests.integration.kube_helpers import create, get

from modelops_operator import metrics
from modelops_operator.build.jobsets import JOBSET_GROUP, JOBSET_PLURAL, JOBSET_VERSION

SPEC = {
    "model": {"uri": "pvc://models/tiny"},
    "output": {"uri": "pvc://models/out"},
    "resources": {"nodes": 2, "gpu": {"count": 0}, "cpu": "1", "memory": "1Gi"},
    "distribution": {"processesPerNode": 2},
}


@pytest.fixture
def jobset_crd(control_plane: Any, tmp_path: Any) -> Iterator[None]:
    """The JobSet CRD alone (the controller's `install_crds`); removed afterwards."""
    from modelops_devcluster.jobset import JobSetController

    crd = JobSetController(control_plane.kubeconfig, control_plane.pki_dir, tmp_path)
    crd.install_crds()
    try:
        yield
    finally:
        crd.stop()  # no process, no webhooks: deletes the CRD


@pytest.fixture
def operator_with_jobsets(
    requests: Any, jobset_crd: None, control_plane: Any, crds_installed: Any, namespace: str
) -> Iterator[Any]:
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    cfg = OperatorConfig(
        namespaces=(namespace,), resync_seconds=0.5, jobs_image="modelops-jobs:test", jobsets=True
    )
    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.1) as running:
        yield running


def reconciles() -> float:
    return metrics.RECONCILES.labels("PruneRetrain")._value.get()


def jobset_lists(requests: list[tuple[str, str, float]], since: float = 0.0) -> int:
    return sum(
        1
        for method, path, when in requests
        if method == "GET" and path.endswith(f"/{JOBSET_PLURAL}") and when >= since
    )


def node_jobs(**counts: int) -> dict[str, Any]:
    """The replicated Job's counts, every one present (the CRD's schema requires them)."""
    zero = dict.fromkeys(("ready", "succeeded", "failed", "active", "suspended"), 0)
    return {"name": "node", **zero, **counts}


def play_status(custom: client.CustomObjectsApi, ns: str, name: str, status: dict) -> None:
    """What the JobSet controller would write (it does not run in this test)."""
    custom.patch_namespaced_custom_object_status(
        JOBSET_GROUP, JOBSET_VERSION, ns, JOBSET_PLURAL, name, {"status": status}
    )


@pytest.mark.timeout(180)
def test_a_watched_jobset_run_lists_no_jobsets(
    requests, kube_api, namespace, operator_with_jobsets, wait_for
):
    custom = client.CustomObjectsApi(kube_api)
    create(kube_api, namespace, {"kind": "PruneRetrain", "metadata": {"name": "n2"}, "spec": SPEC})

    def phase() -> str | None:
        return get(kube_api, namespace, "PruneRetrain", "n2").get("status", {}).get("phase")

    def jobsets() -> list[dict] | None:
        found = custom.list_namespaced_custom_object(
            JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL
        )["items"]
        return found or None

    assert [js["metadata"]["name"] for js in wait_for("the JobSet", jobsets)] == ["n2-prune"]
    wait_for("Pending", lambda: phase() == "Pending" or None)
    ready = {"replicatedJobsStatus": [node_jobs(ready=1, active=1)]}
    play_status(custom, namespace, "n2-prune", ready)
    wait_for("Running, from the JobSet's watch event", lambda: phase() == "Running" or None)
    before = jobset_lists(requests)
    assert 1 <= before <= 5, f"listed only until the first JobSet watch event: {before}"

    since, counted = time.monotonic(), reconciles()
    wait_for("ten more reconciles (resync 0.5 s)", lambda: reconciles() >= counted + 10 or None)
    failed = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "FailedJobs",
                "message": "played: a node Job failed",
                "lastTransitionTime": "2026-12-02T02:00:00Z",
            }
        ],
        "replicatedJobsStatus": [node_jobs(failed=1)],
    }
    play_status(custom, namespace, "n2-prune", failed)
    wait_for("Failed, from the JobSet's watch event", lambda: phase() == "Failed" or None)
    assert jobset_lists(requests, since) == 0, "a run in progress is read from the cache"
