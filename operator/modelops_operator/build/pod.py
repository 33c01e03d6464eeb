"""The pod template of every Job (and of every JobSet's replicated Job), in named steps.

Pure: (validated spec, operator config, spec document) -> pod template parts. Each step
builds one concern — volumes and mounts, environment, the launch command and its
process layout, scheduling, the container — so each is unit-tested on its own and
`build_job` reads as their composition.
"""

from dataclasses import dataclass
from typing import Any

from modelops_api.common import JobTemplate, ModelRef, SecretKeyRef
from modelops_api.meta import SPEC_FILE_NAME, SPEC_MOUNT_DIR, TERMINATION_MESSAGE_PATH
from modelops_api.storage import parse_uri
from modelops_operator.config import OperatorConfig

CONTAINER_NAME = "job"
DOWNLOAD_CACHE_DIR = "/cache/modelops"
RUN_AS_USER = 1000
LAUNCH_COMMAND = ["python", "-m", "modelops_jobs.launch"]
"""The pod's entrypoint (modelops_jobs/launch.py): one process in-process when one
process on one node, else torchrun's launcher with the layout below."""
RDZV_PORT = 29500


@dataclass(frozen=True)
class Layout:
    """Where the pod sits in the run: nodes, processes per pod, rendezvous."""

    nodes: int = 1
    processes_per_node: int = 1
    rendezvous: str | None = None
    """host:port of node 0 (JobSet only); a plain Job rendezvouses on itself."""


def processes_per_node(spec: JobTemplate) -> int:
    """One process per requested GPU; processesPerNode when set (CPU: default 1)."""
    if spec.distribution.processes_per_node is not None:
        return spec.distribution.processes_per_node
    return spec.resources.gpu.count or 1


def launch_env(layout: Layout) -> list[dict[str, Any]]:
    """The env modelops_jobs.launch reads (CONTRACT-13). A plain Job pins node rank 0
    (an Indexed S3T shard Job's JOB_COMPLETION_INDEX is a shard, not a node); a JobSet's
    pods leave it unset, so launch takes the node rank from JOB_COMPLETION_INDEX."""
    env = [
        {"name": "MODELOPS_NNODES", "value": str(layout.nodes)},
        {"name": "MODELOPS_NPROC_PER_NODE", "value": str(layout.processes_per_node)},
    ]
    if layout.rendezvous is None:
        env.append({"name": "MODELOPS_NODE_RANK", "value": "0"})
    else:
        env.append({"name": "MODELOPS_RDZV_ENDPOINT", "value": layout.rendezvous})
    return env


def pvc_claims(value: Any) -> set[str]:
    """Every PVC named by a pvc:// URI anywhere in the spec."""
    found: set[str] = set()
    if isinstance(value, str) and value.startswith("pvc://"):
        try:
            found.add(parse_uri(value).authority)
        except ValueError:
            pass
    elif isinstance(value, dict):
        for v in value.values():
            found |= pvc_claims(v)
    elif isinstance(value, list):
        for v in value:
            found |= pvc_claims(v)
    return found


def written_claims(kind: str, spec: dict[str, Any]) -> set[str]:
    """The claims the Job writes to: the output's, and for UnlearnRequest the model
    store's (S3T writes a new store version into it). Every other claim is mounted
    read-only. An input on the output's claim shares its read-write mount (one path per
    claim): keep inputs on their own claim to have them read-only."""
    uris = [(spec.get("output") or {}).get("uri")]
    if kind == "UnlearnRequest":
        uris.append((spec.get("model") or {}).get("uri"))
    return pvc_claims([u for u in uris if u])


Volumes = tuple[list[dict[str, Any]], list[dict[str, Any]]]
"""(pod volumes, container volume mounts)."""


def base_volumes(configmap: str, scratch: str) -> Volumes:
    """The spec ConfigMap (read-only) and a size-limited /tmp."""
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": configmap}},
        {"name": "tmp", "emptyDir": {"sizeLimit": scratch}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_MOUNT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return volumes, mounts


def claim_volumes(kind: str, spec_doc: dict[str, Any], mount_root: str) -> Volumes:
    """One volume per referenced claim; read-only unless the Job writes to it."""
    writable = written_claims(kind, spec_doc)
    volumes, mounts = [], []
    for i, claim in enumerate(sorted(pvc_claims(spec_doc))):
        source: dict[str, Any] = {"claimName": claim}
        mount: dict[str, Any] = {"name": f"pvc-{i}", "mountPath": f"{mount_root}/{claim}"}
        if claim not in writable:
            source["readOnly"] = mount["readOnly"] = True
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": source})
        mounts.append(mount)
    return volumes, mounts


def cache_volumes(config: OperatorConfig) -> tuple[Volumes, list[dict[str, Any]]]:
    """The shared Hugging Face cache (read-only) and download cache, when configured,
    and the env that points at them."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env = [{"name": "HF_HOME", "value": "/tmp/hf"}]
    if config.hf_cache_claim:
        claim = {"claimName": config.hf_cache_claim, "readOnly": True}
        volumes.append({"name": "hf-cache", "persistentVolumeClaim": claim})
        mounts.append({"name": "hf-cache", "mountPath": "/cache/hf", "readOnly": True})
        env = [{"name": "HF_HOME", "value": "/cache/hf"}]
    if config.download_cache_claim:
        claim = {"claimName": config.download_cache_claim}
        volumes.append({"name": "download-cache", "persistentVolumeClaim": claim})
        mounts.append({"name": "download-cache", "mountPath": DOWNLOAD_CACHE_DIR})
        env.append({"name": "MODELOPS_CACHE_DIR", "value": DOWNLOAD_CACHE_DIR})
    return (volumes, mounts), env


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


def secret_env(spec: JobTemplate) -> list[dict[str, Any]]:
    """Environment variables filled from Secrets by reference (never by value)."""
    refs: list[tuple[str, SecretKeyRef]] = []
    for field_name in ("model", "source_model", "target_model"):
        model = getattr(spec, field_name, None)
        if isinstance(model, ModelRef) and model.token_secret_ref is not None:
            refs.append(("HF_TOKEN", model.token_secret_ref))
            break
    creds = spec.storage
    if creds is not None:
        for field_name, env_name in STORAGE_ENV.items():
            key = getattr(creds, field_name)
            if key is not None:
                refs.append((env_name, SecretKeyRef(name=creds.secret_name, key=key)))
    return [
        {
            "name": env_name,
            "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key, "optional": False}},
        }
        for env_name, ref in refs
    ]


def job_env(
    spec: JobTemplate, config: OperatorConfig, cache_env: list[dict[str, Any]], layout: Layout
) -> list[dict[str, Any]]:
    """Fixed settings, caches, launch layout, operator extras, then Secret references."""
    env: list[dict[str, Any]] = [
        {"name": "MODELOPS_PVC_ROOT", "value": config.pvc_mount_root},
        {"name": "MODELOPS_TERMINATION_LOG", "value": TERMINATION_MESSAGE_PATH},
        *cache_env[:1],
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *cache_env[1:],
        *launch_env(layout),
    ]
    env += [{"name": k, "value": v} for k, v in sorted(config.extra_job_env.items())]
    return env + secret_env(spec)


def resources(spec: JobTemplate, config: OperatorConfig) -> dict[str, Any]:
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


def container(
    spec: JobTemplate,
    config: OperatorConfig,
    env: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """The one container: the launcher, the spec file, restricted and resource-bounded."""
    return {
        "name": CONTAINER_NAME,
        "image": spec.image or config.jobs_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": list(LAUNCH_COMMAND),
        "args": [
            "--spec",
            f"{SPEC_MOUNT_DIR}/{SPEC_FILE_NAME}",
            "--metrics-port",
            str(config.job_metrics_port),
        ],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": config.job_metrics_port}],
        "resources": resources(spec, config),
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
    }


def scheduling(spec: JobTemplate, config: OperatorConfig) -> dict[str, Any]:
    """nodeSelector (with the GPU product), tolerations, priority class: set ones only."""
    sched = spec.scheduling
    out: dict[str, Any] = {}
    node_selector = dict(sched.node_selector or config.default_node_selector)
    if spec.resources.gpu.count > 0 and spec.resources.gpu.product:
        node_selector["nvidia.com/gpu.product"] = spec.resources.gpu.product
    if node_selector:
        out["nodeSelector"] = node_selector
    tolerations = [t.to_wire() for t in sched.tolerations] + [
        dict(t) for t in config.default_tolerations
    ]
    if tolerations:
        out["tolerations"] = tolerations
    priority_class = sched.priority_class_name or config.default_priority_class
    if priority_class:
        out["priorityClassName"] = priority_class
    return out


def pod_spec(
    kind: str,
    spec: JobTemplate,
    config: OperatorConfig,
    spec_doc: dict[str, Any],
    configmap: str,
    layout: Layout,
) -> dict[str, Any]:
    """The whole pod spec, composed of the steps above."""
    scratch = spec.resources.ephemeral_storage or config.default_scratch_size
    parts = [
        base_volumes(configmap, scratch),
        claim_volumes(kind, spec_doc, config.pvc_mount_root),
    ]
    caches, cache_env = cache_volumes(config)
    parts.append(caches)
    volumes = [v for vols, _ in parts for v in vols]
    mounts = [m for _, ms in parts for m in ms]
    env = job_env(spec, config, cache_env, layout)
    out: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container(spec, config, env, mounts)],
        "volumes": volumes,
    }
    if config.service_account:
        out["serviceAccountName"] = config.service_account
    return out | scheduling(spec, config)
