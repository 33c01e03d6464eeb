"""The operator, run for real against the local control plane: it creates the
ConfigMap and the Job, follows the Job (driven through its pod's status, the way the
kubelet reports it; the real Job controller does the rest), survives restarts
without duplicates, and lets garbage collection clean up."""

import json
import signal

import pytest
from kubernetes import client
from tests.integration.kube_helpers import (
    condition,
    create,
    get,
    prune,
    read_or_none,
    start_operator_process,
)

from modelops_api.meta import EXIT_PERMANENT, EXIT_RETRYABLE, GROUP, LABEL_NAME, VERSION
from modelops_devcluster.pod_runner import finish_pod


def pods_of(api, namespace, job):
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    )
    return pods.items


def pending_pod(api, namespace, job, seen=()):
    for pod in pods_of(api, namespace, job):
        if pod.status.phase == "Pending" and pod.metadata.name not in seen:
            return pod
    return None


def result_message(ok=True, reason="Succeeded", results=None, message=""):
    body = {"ok": ok, "reason": reason, "message": message, "results": results or {}}
    if ok:
        body["artifact"] = {"uri": "pvc://models/out", "manifestDigest": "sha256:abc"}
    return json.dumps(body)


def phase_is(api, namespace, kind, name, phase):
    obj = get(api, namespace, kind, name)
    return obj if obj.get("status", {}).get("phase") == phase else None


def test_creates_configmap_and_job(kube_api, namespace, operator, wait_for):
    create(
        kube_api,
        namespace,
        prune("p1", scheduling={"nodeSelector": {"pool": "gpu"}, "priorityClassName": "high"}),
    )
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    job = wait_for(
        "Job p1-prune", lambda: read_or_none(batch.read_namespaced_job, "p1-prune", namespace)
    )
    cr = get(kube_api, namespace, "PruneRetrain", "p1")
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "PruneRetrain",
        "p1",
        cr["metadata"]["uid"],
        True,
    )
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.image == "modelops-jobs:test"
    assert container.command == ["python", "-m", "modelops_jobs.launch"]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert pod.automount_service_account_token is False
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert pod.node_selector == {"pool": "gpu"} and pod.priority_class_name == "high"
    rules = job.spec.pod_failure_policy.rules
    assert rules[0].action == "FailJob" and rules[0].on_exit_codes.values == [EXIT_PERMANENT]
    cm = core.read_namespaced_config_map("p1-prune", namespace)
    document = json.loads(cm.data["spec.json"])
    assert (
        document["kind"] == "PruneRetrain" and document["metadata"]["uid"] == cr["metadata"]["uid"]
    )
    assert document["spec"]["pruning"]["criterion"] == "magnitude", "defaults are filled"
    cr = wait_for(
        "phase Pending", lambda: phase_is(kube_api, namespace, "PruneRetrain", "p1", "Pending")
    )
    assert cr["status"]["jobRef"]["name"] == "p1-prune"
    assert condition(cr, "JobCreated")["status"] == "True"
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=p1")
    assert any(e.reason == "JobCreated" for e in events.items)


def test_success_sets_phase_results_and_conditions(kube_api, namespace, operator, wait_for):
    create(kube_api, namespace, prune("p2"))
    pod = wait_for("pod", lambda: pending_pod(kube_api, namespace, "p2-prune"))
    core = client.CoreV1Api(kube_api)
    finish_pod(
        core,
        pod,
        0,
        result_message(
            results={"sparsity": 0.5, "maskPreserved": True, "retrainedPerplexity": 12.5}
        ),
    )
    cr = wait_for(
        "Succeeded",
        lambda: phase_is(kube_api, namespace, "PruneRetrain", "p2", "Succeeded"),
        timeout=90,
    )
    status = cr["status"]
    assert status["results"] == {
        "sparsity": 0.5,
        "maskPreserved": True,
        "retrainedPerplexity": 12.5,
    }
    assert status["artifact"]["manifestDigest"] == "sha256:abc"
    assert (
        condition(cr, "Succeeded")["status"] == "True"
        and condition(cr, "Ready")["status"] == "True"
    )
    assert status["completionTime"] and status["observedGeneration"] == 1


def test_permanent_failure_fails_at_once(kube_api, namespace, operator, wait_for):
    create(kube_api, namespace, prune("p3"))
    pod = wait_for("pod", lambda: pending_pod(kube_api, namespace, "p3-prune"))
    finish_pod(
        client.CoreV1Api(kube_api),
        pod,
        EXIT_PERMANENT,
        result_message(False, "NotACausalLM", message="model is a bert"),
    )
    cr = wait_for(
        "Failed", lambda: phase_is(kube_api, namespace, "PruneRetrain", "p3", "Failed"), timeout=90
    )
    failed = condition(cr, "Failed")
    assert failed["reason"] == "NotACausalLM" and "bert" in failed["message"]
    job = client.BatchV1Api(kube_api).read_namespaced_job("p3-prune", namespace)
    assert job.status.failed == 1, "podFailurePolicy: no retry for the permanent code"
    assert len(pods_of(kube_api, namespace, "p3-prune")) == 1


def test_retryable_failure_is_retried_then_succeeds(kube_api, namespace, operator, wait_for):
    create(kube_api, namespace, prune("p4"))
    core = client.CoreV1Api(kube_api)
    first = wait_for("first pod", lambda: pending_pod(kube_api, namespace, "p4-prune"))
    finish_pod(core, first, EXIT_RETRYABLE, result_message(False, "Preempted"))
    second = wait_for(
        "second pod",
        lambda: pending_pod(kube_api, namespace, "p4-prune", seen={first.metadata.name}),
    )
    finish_pod(core, second, 0, result_message(results={"sparsity": 0.5}))
    cr = wait_for(
        "Succeeded",
        lambda: phase_is(kube_api, namespace, "PruneRetrain", "p4", "Succeeded"),
        timeout=90,
    )
    assert cr["status"]["retries"] == 1


def test_job_deleted_by_hand_is_reported_not_recreated(kube_api, namespace, operator, wait_for):
    create(kube_api, namespace, prune("p5"))
    batch = client.BatchV1Api(kube_api)
    wait_for("Job", lambda: read_or_none(batch.read_namespaced_job, "p5-prune", namespace))
    wait_for("Pending", lambda: phase_is(kube_api, namespace, "PruneRetrain", "p5", "Pending"))
    batch.delete_namespaced_job("p5-prune", namespace, propagation_policy="Background")
    cr = wait_for("Failed", lambda: phase_is(kube_api, namespace, "PruneRetrain", "p5", "Failed"))
    assert condition(cr, "JobMissing")["reason"] == "JobDeleted"
    # Level-based: the operator keeps observing the same state and creates nothing.
    jobs = batch.list_namespaced_job(namespace, label_selector=f"{LABEL_NAME}=p5")
    assert [j.metadata.name for j in jobs.items if not j.metadata.deletion_timestamp] == []


def test_queue_name_creates_a_suspended_job(kube_api, namespace, operator, wait_for):
    create(kube_api, namespace, prune("p6", scheduling={"queueName": "gpu-queue"}))
    batch = client.BatchV1Api(kube_api)
    job = wait_for("Job", lambda: read_or_none(batch.read_namespaced_job, "p6-prune", namespace))
    assert (
        job.spec.suspend is True and job.metadata.labels["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    )
    wait_for("Suspended", lambda: phase_is(kube_api, namespace, "PruneRetrain", "p6", "Suspended"))


def test_deleting_the_resource_removes_job_and_configmap(kube_api, namespace, operator, wait_for):
    create(kube_api, namespace, prune("p7"))
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    wait_for("Job", lambda: read_or_none(batch.read_namespaced_job, "p7-prune", namespace))
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "pruneretrains", "p7"
    )
    wait_for(
        "Job gone",
        lambda: (
            True if read_or_none(batch.read_namespaced_job, "p7-prune", namespace) is None else None
        ),
        timeout=90,
    )
    wait_for(
        "ConfigMap gone",
        lambda: (
            True
            if read_or_none(core.read_namespaced_config_map, "p7-prune", namespace) is None
            else None
        ),
        timeout=90,
    )


def test_model_adaptation_runs_and_run_now_annotation(kube_api, namespace, operator, wait_for):
    spec = {
        "model": {"uri": "pvc://m/base"},
        "data": {"uri": "pvc://d/new"},
        "output": {"uri": "pvc://m/versions"},
    }
    create(
        kube_api, namespace, {"kind": "ModelAdaptation", "metadata": {"name": "ma"}, "spec": spec}
    )
    core = client.CoreV1Api(kube_api)
    pod = wait_for("run 1 pod", lambda: pending_pod(kube_api, namespace, "ma-adapt-1"))
    cm = json.loads(core.read_namespaced_config_map("ma-adapt-1", namespace).data["spec.json"])
    assert cm["run"] == {"number": 1, "trigger": "created"}
    finish_pod(core, pod, 0, result_message(results={"newLoss": 1.5}))
    cr = wait_for(
        "run 1 Succeeded",
        lambda: phase_is(kube_api, namespace, "ModelAdaptation", "ma", "Succeeded"),
        timeout=90,
    )
    assert cr["status"]["runCount"] == 1 and cr["status"]["runs"][0]["results"]["newLoss"] == 1.5
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modeladaptations",
        "ma",
        {"metadata": {"annotations": {"modelops.dev/run-now": "again"}}},
    )
    wait_for("run 2 pod", lambda: pending_pod(kube_api, namespace, "ma-adapt-2"))
    cm2 = json.loads(core.read_namespaced_config_map("ma-adapt-2", namespace).data["spec.json"])
    assert cm2["run"]["parent"] == "pvc://models/out", "run 2 continues from run 1's artifact"


N_RESOURCES = 30


@pytest.mark.timeout(300)
def test_sigkill_mid_reconcile_leaves_exactly_one_job_per_resource(
    control_plane, kube_api, crds_installed, namespace, wait_for, tmp_path
):
    for i in range(N_RESOURCES):
        create(kube_api, namespace, prune(f"r{i:02d}"))
    batch = client.BatchV1Api(kube_api)
    with open(tmp_path / "operator-1.log", "w") as log:
        proc = start_operator_process(control_plane.kubeconfig, namespace, log)
        try:
            wait_for(
                "first Jobs",
                lambda: True if len(batch.list_namespaced_job(namespace).items) >= 3 else None,
                timeout=90,
            )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    created_before = len(batch.list_namespaced_job(namespace).items)
    with open(tmp_path / "operator-2.log", "w") as log:
        proc = start_operator_process(control_plane.kubeconfig, namespace, log)
        try:

            def all_pending():
                items = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "pruneretrains"
                )["items"]
                ok = [i for i in items if i.get("status", {}).get("jobRef")]
                return True if len(ok) == N_RESOURCES else None

            wait_for("every resource has its Job", all_pending, timeout=180)
        finally:
            proc.terminate()
            proc.wait(30)
    jobs = batch.list_namespaced_job(namespace).items
    names = sorted(j.metadata.name for j in jobs)
    assert names == sorted(f"r{i:02d}-prune" for i in range(N_RESOURCES)), (
        "exactly one Job per resource"
    )
    assert created_before < N_RESOURCES or created_before == N_RESOURCES
