"""The JobSet (jobset.x-k8s.io/v1alpha2) for a run that spans several nodes.

Pure, like build/jobs.py. Its one replicated Job ("node") is the plain Job's template,
Indexed with one pod per node; node 0 is the rendezvous coordinator, reached by its
stable DNS name (`network.enableDNSHostnames`). Retries move from the Job to the
JobSet: a child Job fails on its first failed pod (backoffLimit 0), and the JobSet then
recreates the whole group (all ranks restart together and resume from the checkpoint)
up to `runPolicy.backoffLimit` times — except when a pod exited with the
permanent-failure code: its Job fails by podFailurePolicy and the JobSet fails at once.
The JobSet carries the Kueue queue label, `suspend`, the owner reference and the TTL.
"""

from typing import Any

from modelops_api.common import JobTemplate
from modelops_operator.build.jobs import (
    ResourceIdentity,
    build_job,
    object_meta,
    workload_labels,
)
from modelops_operator.build.names import jobset_name
from modelops_operator.build.pod import RDZV_PORT, Layout, processes_per_node
from modelops_operator.config import OperatorConfig

JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_API_VERSION = f"{JOBSET_GROUP}/{JOBSET_VERSION}"
JOBSET_PLURAL = "jobsets"
REPLICATED_JOB = "node"
LABEL_JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
LABEL_RESTART_ATTEMPT = "jobset.sigs.k8s.io/restart-attempt"
LABEL_JOB_INDEX = "jobset.sigs.k8s.io/job-index"
ANNOTATION_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
PERMANENT_FAILURE_RULE = "PermanentFailure"  # JobSet: [A-Za-z][A-Za-z0-9_,:]*
RESTART_RULE = "RestartGroup"


def rendezvous_endpoint(name: str) -> str:
    """Node 0's stable DNS name in the JobSet's headless service (its subdomain is the
    JobSet's name), and torchrun's c10d port."""
    return f"{name}-{REPLICATED_JOB}-0-0.{name}:{RDZV_PORT}"


def group_failure_policy(spec: JobTemplate) -> dict[str, Any]:
    """Exit code 3 (its Job failed by podFailurePolicy) fails the JobSet; anything
    else restarts the whole group, up to the retry budget."""
    return {
        "maxRestarts": spec.run_policy.backoff_limit,
        "restartStrategy": "Recreate",
        "rules": [
            {
                "name": PERMANENT_FAILURE_RULE,
                "action": "FailJobSet",
                "onJobFailureReasons": ["PodFailurePolicy"],
            },
            {"name": RESTART_RULE, "action": "RestartJobSet"},
        ],
    }


def node_job(job: dict[str, Any]) -> dict[str, Any]:
    """The replicated Job's template: the plain Job's spec, minus what the JobSet owns
    (retries, TTL, suspension)."""
    spec = dict(job["spec"])
    spec["backoffLimit"] = 0
    spec.pop("backoffLimitPerIndex", None)
    spec.pop("ttlSecondsAfterFinished", None)
    spec.pop("suspend", None)
    return {"metadata": {"labels": dict(job["metadata"]["labels"])}, "spec": spec}


def build_jobset(
    res: ResourceIdentity,
    spec: JobTemplate,
    config: OperatorConfig,
    document: dict[str, Any],
    run: int | None = None,
) -> dict[str, Any]:
    """The JobSet for a resource (or one run of it) with resources.nodes > 1."""
    nodes = spec.resources.nodes
    name = jobset_name(res.kind, res.name, run)
    layout = Layout(nodes, processes_per_node(spec), rendezvous_endpoint(name))
    job = build_job(res, spec, config, document, run, nodes, nodes, layout)
    js_spec: dict[str, Any] = {
        "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": node_job(job)}],
        "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
        "coordinator": {"replicatedJob": REPLICATED_JOB, "jobIndex": 0, "podIndex": 0},
        "successPolicy": {"operator": "All"},
        "failurePolicy": group_failure_policy(spec),
        "ttlSecondsAfterFinished": spec.run_policy.ttl_seconds_after_finished,
    }
    if spec.scheduling.queue_name:
        js_spec["suspend"] = True
    return {
        "apiVersion": JOBSET_API_VERSION,
        "kind": "JobSet",
        "metadata": object_meta(res, name, workload_labels(res, spec, run), document),
        "spec": js_spec,
    }


def build_workload(
    res: ResourceIdentity,
    spec: JobTemplate,
    config: OperatorConfig,
    document: dict[str, Any],
    run: int | None = None,
    indexed_completions: int | None = None,
    parallelism: int | None = None,
) -> dict[str, Any]:
    """A plain Job on one node (exactly as before JobSets), a JobSet on several."""
    if spec.resources.nodes > 1:
        return build_jobset(res, spec, config, document, run)
    return build_job(res, spec, config, document, run, indexed_completions, parallelism)


def is_jobset(manifest: dict[str, Any]) -> bool:
    return manifest.get("kind") == "JobSet"
