"""The ConfigMap and the batch/v1 Job that carry out one request (or one run).

Pure: (resource identity, validated spec, operator config, run) -> manifests. The Job
gets a deterministic name, an owner reference to the resource, the jobs image running
`python -m modelops_jobs --spec ...`, GPU resources and scheduling from the spec, the
restricted security context (non-root, no privilege escalation, all capabilities
dropped, RuntimeDefault seccomp, read-only root with an emptyDir /tmp, no
service-account token, a size-limited /tmp), input claims mounted read-only and only
the output's claim read-write, a podFailurePolicy that fails the Job at once on the
permanent-failure exit code, a deadline and a TTL. Secrets are passed by reference
only (`valueFrom.secretKeyRef`), never copied.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from modelops_api.common import JobTemplate, ModelRef, SecretKeyRef
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
    SPEC_MOUNT_DIR,
    TERMINATION_MESSAGE_PATH,
)
from modelops_api.storage import parse_uri
from modelops_operator.build.names import configmap_name, job_name, label_value
from modelops_operator.config import OperatorConfig

CONTAINER_NAME = "job"
DOWNLOAD_CACHE_DIR = "/cache/modelops"
RUN_AS_USER = 1000


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


def _pvc_claims(value: Any) -> set[str]:
    """Every PVC named by a pvc:// URI anywhere in the spec."""
    found: set[str] = set()
    if isinstance(value, str) and value.startswith("pvc://"):
        try:
            found.add(parse_uri(value).authority)
        except ValueError:
            pass
    elif isinstance(value, dict):
        for v in value.values():
            found |= _pvc_claims(v)
    elif isinstance(value, list):
        for v in value:
            found |= _pvc_claims(v)
    return found


def written_claims(kind: str, spec: dict[str, Any]) -> set[str]:
    """The claims the Job writes to: the output's, and for UnlearnRequest the model
    store's (S3T writes a new store version into it). Every other claim is mounted
    read-only. An input on the output's claim shares its read-write mount (one path per
    claim): keep inputs on their own claim to have them read-only."""
    uris = [(spec.get("output") or {}).get("uri")]
    if kind == "UnlearnRequest":
        uris.append((spec.get("model") or {}).get("uri"))
    return _pvc_claims([u for u in uris if u])


def _secret_env(spec: JobTemplate) -> list[dict[str, Any]]:
    """Environment variables filled from Secrets by reference (never by value)."""
    refs: list[tuple[str, SecretKeyRef]] = []
    for field_name in ("model", "source_model", "target_model"):
        model = getattr(spec, field_name, None)
        if isinstance(model, ModelRef) and model.token_secret_ref is not None:
            refs.append(("HF_TOKEN", model.token_secret_ref))
            break
    refs += _storage_refs(spec)
    return [
        {
            "name": env_name,
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key, "optional": False}},
        }
        for env_name, ref in refs
    ]


# The environment variable each StorageCredentials field fills (the names the object
# store clients read; see modelops_jobs.objectstore).
STORAGE_ENV = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region": "AWS_REGION",
    "service_account_key": "GOOGLE_SERVICE_ACCOUNT_KEY",
}


def _storage_refs(spec: JobTemplate) -> list[tuple[str, SecretKeyRef]]:
    """Object-store credentials: each named key of the storage Secret, by reference."""
    creds = spec.storage
    if creds is None:
        return []
    out = []
    for field_name, env_name in STORAGE_ENV.items():
        key = getattr(creds, field_name)
        if key is not None:
            out.append((env_name, SecretKeyRef(name=creds.secret_name, key=key)))
    return out


def _resources(spec: JobTemplate, config: OperatorConfig) -> dict[str, Any]:
    res = spec.resources
    amounts: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    if res.ephemeral_storage:
        amounts["ephemeral-storage"] = res.ephemeral_storage
    limits = dict(amounts)
    if res.gpu.count > 0:
        limits[config.default_gpu_resource] = str(res.gpu.count)
        amounts[config.default_gpu_resource] = str(res.gpu.count)
    return {"requests": amounts, "limits": limits}


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_job(
    res: ResourceIdentity,
    spec: JobTemplate,
    config: OperatorConfig,
    document: dict[str, Any],
    run: int | None = None,
    indexed_completions: int | None = None,
    parallelism: int | None = None,
) -> dict[str, Any]:
    """The Job for a resource (or one run of it)."""
    name = job_name(res.kind, res.name, run)
    labels = labels_for(res, run)
    sched = spec.scheduling
    if sched.queue_name:
        labels[LABEL_KUEUE_QUEUE] = sched.queue_name
    claims = sorted(_pvc_claims(document.get("spec", {})))
    writable = written_claims(res.kind, document.get("spec", {}))
    scratch = spec.resources.ephemeral_storage or config.default_scratch_size
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": configmap_name(res.kind, res.name, run)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": scratch}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_MOUNT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    for i, claim in enumerate(claims):
        source: dict[str, Any] = {"claimName": claim}
        mount: dict[str, Any] = {
            "name": f"pvc-{i}",
            "mountPath": f"{config.pvc_mount_root}/{claim}",
        }
        if claim not in writable:
            source["readOnly"] = mount["readOnly"] = True
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": source})
        mounts.append(mount)
    env: list[dict[str, Any]] = [
        {"name": "MODELOPS_PVC_ROOT", "value": config.pvc_mount_root},
        {"name": "MODELOPS_TERMINATION_LOG", "value": TERMINATION_MESSAGE_PATH},
        {"name": "HF_HOME", "value": "/tmp/hf"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if config.hf_cache_claim:
        volumes.append(
            {
                "name": "hf-cache",
                "persistentVolumeClaim": {"claimName": config.hf_cache_claim, "readOnly": True},
            }
        )
        mounts.append({"name": "hf-cache", "mountPath": "/cache/hf", "readOnly": True})
        env[2] = {"name": "HF_HOME", "value": "/cache/hf"}
    if config.download_cache_claim:
        volumes.append(
            {
                "name": "download-cache",
                "persistentVolumeClaim": {"claimName": config.download_cache_claim},
            }
        )
        mounts.append({"name": "download-cache", "mountPath": DOWNLOAD_CACHE_DIR})
        env.append({"name": "MODELOPS_CACHE_DIR", "value": DOWNLOAD_CACHE_DIR})
    env += [{"name": k, "value": v} for k, v in sorted(config.extra_job_env.items())]
    env += _secret_env(spec)
    node_selector = dict(sched.node_selector or config.default_node_selector)
    if spec.resources.gpu.count > 0 and spec.resources.gpu.product:
        node_selector["nvidia.com/gpu.product"] = spec.resources.gpu.product
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": spec.image or config.jobs_image,
                "imagePullPolicy": config.image_pull_policy,
                "command": ["python", "-m", "modelops_jobs"],
                "args": [
                    "--spec",
                    f"{SPEC_MOUNT_DIR}/{SPEC_FILE_NAME}",
                    "--metrics-port",
                    str(config.job_metrics_port),
                ],
                "env": env,
                "ports": [{"name": "metrics", "containerPort": config.job_metrics_port}],
                "resources": _resources(spec, config),
                "securityContext": container_security_context(),
                "volumeMounts": mounts,
                "terminationMessagePath": TERMINATION_MESSAGE_PATH,
                "terminationMessagePolicy": "File",
            }
        ],
        "volumes": volumes,
    }
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = [t.to_wire() for t in sched.tolerations] + [
        dict(t) for t in config.default_tolerations
    ]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    priority_class = sched.priority_class_name or config.default_priority_class
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    policy = spec.run_policy
    job_spec: dict[str, Any] = {
        "backoffLimit": policy.backoff_limit,
        "activeDeadlineSeconds": policy.active_deadline_seconds,
        "ttlSecondsAfterFinished": policy.ttl_seconds_after_finished,
        "podFailurePolicy": {
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
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if indexed_completions is not None:
        job_spec["completionMode"] = "Indexed"
        job_spec["completions"] = indexed_completions
        job_spec["parallelism"] = parallelism or indexed_completions
        job_spec["backoffLimitPerIndex"] = policy.backoff_limit
        del job_spec["backoffLimit"]
    if sched.queue_name:
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": res.namespace,
            "labels": labels,
            "annotations": {
                ANNOTATION_SPEC_DIGEST: document_digest(document),
                ANNOTATION_GENERATION: str(res.generation),
            },
            "ownerReferences": [owner_reference(res)],
        },
        "spec": job_spec,
    }
