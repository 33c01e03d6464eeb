"""The real JobSet controller on the local control plane takes the JobSet the operator
builds: its webhooks (served on 127.0.0.1 with the devcluster's CA) admit it, and the
controller creates the Indexed node Job, whose pods (made by the real Job controller)
carry the launch env, node 0's completion index and the JobSet's labels."""

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import poll_until
from tests.jobset_harness import running_jobset_controller

from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_operator.build.jobs import ResourceIdentity, build_configmap, spec_document
from modelops_operator.build.jobsets import (
    JOBSET_GROUP,
    JOBSET_PLURAL,
    JOBSET_VERSION,
    build_jobset,
)
from modelops_operator.config import OperatorConfig


@pytest.fixture(scope="module")
def jobset_controller(
    control_plane: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    with running_jobset_controller(control_plane, tmp_path_factory.mktemp("jobset")) as c:
        yield c


def two_node_jobset(namespace: str, name: str = "tn") -> tuple[dict[str, Any], dict[str, Any]]:
    spec = ModelAdaptationSpec.model_validate(
        {
            "model": {"uri": "pvc://m/base"},
            "data": {"uri": "pvc://d/new"},
            "output": {"uri": "pvc://o/out"},
            "resources": {"nodes": 2, "gpu": {"count": 0}, "cpu": "1", "memory": "1Gi"},
            "distribution": {"processesPerNode": 2},
        }
    )
    res = ResourceIdentity(
        "ModelAdaptation", name, namespace, "00000000-0000-0000-0000-000000000001"
    )
    doc = spec_document(res, spec, {"number": 1})
    js = build_jobset(res, spec, OperatorConfig(jobs_image="modelops-jobs:test"), doc, run=1)
    for obj in (js,):
        obj["metadata"].pop("ownerReferences")  # no owner object in this test
    cm = build_configmap(res, doc, 1)
    cm["metadata"].pop("ownerReferences")
    return js, cm


@pytest.mark.timeout(240)
def test_controller_turns_the_operators_jobset_into_indexed_node_pods(
    kube_api: client.ApiClient, jobset_controller: Any, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    core = client.CoreV1Api(kube_api)
    js, cm = two_node_jobset(namespace)
    core.create_namespaced_config_map(namespace, cm)
    custom.create_namespaced_custom_object(
        JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL, js
    )

    def pods() -> list[Any] | None:
        items = core.list_namespaced_pod(
            namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={js['metadata']['name']}"
        ).items
        return items if len(items) == 2 else None

    found = poll_until("the JobSet's two node pods", pods, timeout=120)
    by_index = {
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p for p in found
    }
    assert set(by_index) == {"0", "1"}
    pod0 = by_index["0"]
    assert pod0.metadata.name.startswith("tn-adapt-1-node-0-0-")
    assert pod0.spec.hostname == "tn-adapt-1-node-0-0" and pod0.spec.subdomain == "tn-adapt-1"
    env = {e.name: e.value for e in pod0.spec.containers[0].env}
    assert env["MODELOPS_RDZV_ENDPOINT"] == "tn-adapt-1-node-0-0.tn-adapt-1:29500"
    assert env["MODELOPS_NNODES"] == "2" and env["MODELOPS_NPROC_PER_NODE"] == "2"
    assert pod0.spec.containers[0].command == ["python", "-m", "modelops_jobs.launch"]
    assert pod0.metadata.labels["app.kubernetes.io/managed-by"] == "modelops"
    # The JobSet's headless service gives node 0 its stable DNS name.
    svc = core.read_namespaced_service("tn-adapt-1", namespace)
    assert svc.spec.cluster_ip == "None"


def test_webhook_refuses_an_invalid_jobset(
    kube_api: client.ApiClient, jobset_controller: Any, namespace: str
) -> None:
    """The validating webhook is live: a JobSet whose pod names cannot fit is refused."""
    js, _ = two_node_jobset(namespace)
    js["metadata"]["name"] = "x" * 60
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            JOBSET_GROUP, JOBSET_VERSION, namespace, JOBSET_PLURAL, js
        )
    assert err.value.status in (400, 403, 422)
    assert "too long" in err.value.body
