"""The gate's evaluation Job: a ConfigMap and a batch/v1 Job owned by the ModelRollout.

Pure: (rollout identity, the document, operator config) -> manifests. The document is
kind "ModelEvaluation" (not a custom resource; the jobs' registry method `evaluate`)
with an `EvaluationJobSpec`: the candidate and the serving version, the held-out data,
the metrics the gate's rules name. The pod is the same as every kind's (`build/pod.py`:
the jobs image, restricted, every claim read-only since the document has no output),
on one node. The name is deterministic — rollout name and the candidate's manifest
digest — so a restarted operator finds the Job it created.
"""

import hashlib
import json
from typing import Any

from modelops_api.meta import ANNOTATION_SPEC_DIGEST, API_VERSION, SPEC_FILE_NAME
from modelops_api.model_rollout import EVALUATION_KIND, EvaluationJobSpec
from modelops_operator.build.jobs import (
    ResourceIdentity,
    document_digest,
    job_spec,
    labels_for,
    object_meta,
    owner_reference,
)
from modelops_operator.build.names import MAX_NAME
from modelops_operator.build.pod import Layout, pod_spec, processes_per_node
from modelops_operator.config import OperatorConfig

SUFFIX = "eval"
DIGEST_HEX = 10


def evaluation_job_name(rollout: str, manifest_digest: str) -> str:
    """`<rollout, cut>-eval-<10 hex of the candidate's manifest digest>`, ≤ 63 chars."""
    hexpart = hashlib.sha256(f"{rollout}/{manifest_digest}".encode()).hexdigest()[:DIGEST_HEX]
    keep = MAX_NAME - len(SUFFIX) - DIGEST_HEX - 2
    return f"{rollout[:keep].rstrip('-.')}-{SUFFIX}-{hexpart}"


def evaluation_document(
    rollout: ResourceIdentity, name: str, spec: EvaluationJobSpec
) -> dict[str, Any]:
    """What the Job reads: kind ModelEvaluation, named after the Job, and the spec."""
    return {
        "apiVersion": API_VERSION,
        "kind": EVALUATION_KIND,
        "metadata": {
            "name": name,
            "namespace": rollout.namespace,
            "uid": rollout.uid,
            "generation": rollout.generation,
            "rollout": rollout.name,
        },
        "spec": spec.to_wire(),
    }


def evaluation_manifests(
    rollout: ResourceIdentity,
    name: str,
    spec: EvaluationJobSpec,
    config: OperatorConfig,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ConfigMap, Job) of the evaluation, both named `name` and owned by the rollout."""
    document = evaluation_document(rollout, name, spec)
    labels = labels_for(rollout)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": rollout.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_SPEC_DIGEST: document_digest(document)},
            "ownerReferences": [owner_reference(rollout)],
        },
        "data": {SPEC_FILE_NAME: json.dumps(document, indent=2, sort_keys=True)},
    }
    layout = Layout(1, processes_per_node(spec))
    pod = pod_spec(EVALUATION_KIND, spec, config, document["spec"], name, layout)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_meta(rollout, name, labels, document),
        "spec": job_spec(spec, pod, labels),
    }
    return configmap, job
