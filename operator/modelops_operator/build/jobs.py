"""The ConfigMap and the batch/v1 Job that carry out one request (or one run).

Pure: (resource identity, validated spec, operator config, run) -> manifests. The Job
gets a deterministic name, an owner reference to the resource, the pod template of
`build/pod.py` (the jobs image running `python -m modelops_jobs.launch --spec ...` with
one process per GPU, restricted security context, read-only inputs, Secrets by
reference only), a podFailurePolicy that fails the Job at once on the
permanent-failure exit code, a deadline and a TTL. `build/jobsets.py` wraps the same
Job in a JobSet when the run spans several nodes.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from modelops_api.common import JobTemplate
from modelops_api.meta import (
    ANNOTATION_GENERATION,
    ANNOTATION_SPEC_DIGEST,
    API_VERSION,
    EXIT_PERMANENT,
    LABEL_COMPONENT,
    LABEL_KIND,
    LABEL_KUEUE_QUEUE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_RUN,
    MANAGED_BY_VALUE,
    SPEC_FILE_NAME,
)
from modelops_operator.build.names import configmap_name, job_name, label_value
from modelops_operator.build.pod import CONTAINER_NAME, Layout, pod_spec, processes_per_node
from modelops_operator.config import OperatorConfig


@dataclass(frozen=True)
class ResourceIdentity:
    """Who owns the objects: the custom resource's identity."""

    kind: str
    name: str
    namespace: str
    uid: str
    generation: int = 1


def labels_for(res: ResourceIdentity, run: int | None = None) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY_VALUE,
        LABEL_KIND: res.kind,
        LABEL_NAME: label_value(res.name),
        LABEL_COMPONENT: "job",
    }
    if run is not None:
        labels[LABEL_RUN] = str(run)
    return labels


def owner_reference(res: ResourceIdentity) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": res.kind,
        "name": res.name,
        "uid": res.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def spec_document(
    res: ResourceIdentity, spec: JobTemplate, run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the Job reads: the validated spec (defaults filled) and its identity."""
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": res.kind,
        "metadata": {
            "name": res.name,
            "namespace": res.namespace,
            "uid": res.uid,
            "generation": res.generation,
        },
        "spec": spec.to_wire(),
    }
    if run is not None:
        doc["run"] = run
    return doc


def document_digest(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def build_configmap(
    res: ResourceIdentity, document: dict[str, Any], run: int | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(res.kind, res.name, run),
            "namespace": res.namespace,
            "labels": labels_for(res, run),
            "annotations": {ANNOTATION_SPEC_DIGEST: document_digest(document)},
            "ownerReferences": [owner_reference(res)],
        },
        "data": {SPEC_FILE_NAME: json.dumps(document, indent=2, sort_keys=True)},
    }


def failure_policy() -> dict[str, Any]:
    """The permanent-failure exit code fails the Job at once; a disruption (preemption,
    node drain) does not count against the retries."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [EXIT_PERMANENT],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def job_spec(
    spec: JobTemplate,
    pod: dict[str, Any],
    labels: dict[str, str],
    indexed_completions: int | None = None,
    parallelism: int | None = None,
) -> dict[str, Any]:
    """Retries, deadline, TTL, failure policy, Indexed completion, Kueue suspension."""
    policy = spec.run_policy
    out: dict[str, Any] = {
        "backoffLimit": policy.backoff_limit,
        "activeDeadlineSeconds": policy.active_deadline_seconds,
        "ttlSecondsAfterFinished": policy.ttl_seconds_after_finished,
        "podFailurePolicy": failure_policy(),
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    if indexed_completions is not None:
        out["completionMode"] = "Indexed"
        out["completions"] = indexed_completions
        out["parallelism"] = parallelism or indexed_completions
        out["backoffLimitPerIndex"] = policy.backoff_limit
        del out["backoffLimit"]
    if spec.scheduling.queue_name:
        out["suspend"] = True
    return out


def object_meta(
    res: ResourceIdentity, name: str, labels: dict[str, str], document: dict[str, Any]
) -> dict[str, Any]:
    """Name, labels, the spec digest and generation it runs, the owner reference."""
    return {
        "name": name,
        "namespace": res.namespace,
        "labels": labels,
        "annotations": {
            ANNOTATION_SPEC_DIGEST: document_digest(document),
            ANNOTATION_GENERATION: str(res.generation),
        },
        "ownerReferences": [owner_reference(res)],
    }


def workload_labels(res: ResourceIdentity, spec: JobTemplate, run: int | None) -> dict[str, str]:
    labels = labels_for(res, run)
    if spec.scheduling.queue_name:
        labels[LABEL_KUEUE_QUEUE] = spec.scheduling.queue_name
    return labels


def build_job(
    res: ResourceIdentity,
    spec: JobTemplate,
    config: OperatorConfig,
    document: dict[str, Any],
    run: int | None = None,
    indexed_completions: int | None = None,
    parallelism: int | None = None,
    layout: Layout | None = None,
) -> dict[str, Any]:
    """The Job for a resource (or one run of it); `layout` places it in a JobSet."""
    layout = layout or Layout(1, processes_per_node(spec))
    name = job_name(res.kind, res.name, run)
    labels = workload_labels(res, spec, run)
    cm = configmap_name(res.kind, res.name, run)
    pod = pod_spec(res.kind, spec, config, document.get("spec", {}), cm, layout)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(res, name, labels, document),
        "spec": job_spec(spec, pod, labels, indexed_completions, parallelism),
    }
