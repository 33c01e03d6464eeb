"""Operator settings, read once from the environment (the Helm chart sets them)."""

import json
import os
from dataclasses import dataclass, field
from typing import Any


def _env_list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "")
    return tuple(x.strip() for x in raw.split(",") if x.strip())


def _env_json(env: Any, name: str, default: Any) -> Any:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be JSON: {exc}") from exc
    if type(value) is not type(default):
        raise ValueError(f"{name} must be a JSON {type(default).__name__}")
    return value


def _env_url(env: Any, name: str) -> str | None:
    raw = env.get(name, "").strip()
    if raw and not raw.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http(s) URL")
    return raw or None


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the builders and handlers need to know about the installation."""

    jobs_image: str = "ghcr.io/modelops/modelops-jobs:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    """ServiceAccount of Job pods; its token is never mounted."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means cluster-wide."""
    metrics_port: int = 8080
    health_port: int = 8081
    job_metrics_port: int = 9400
    default_gpu_resource: str = "nvidia.com/gpu"
    pvc_mount_root: str = "/mnt/pvc"
    hf_cache_claim: str | None = None
    """A PVC holding the Hugging Face cache, mounted read-only in every Job pod."""
    download_cache_claim: str | None = None
    """A ReadWriteMany PVC for s3:// and gs:// downloads, shared by every Job pod, so a
    retried pod finds what an earlier one fetched (keyed by URI and digest)."""
    resync_seconds: float = 30.0
    peering: str | None = None
    """kopf peering name (several replicas, one active); None runs standalone."""
    peering_priority: int = 0
    """This replica's peering priority; 0 draws a random one (ties pause every replica)."""
    peering_lifetime: int = 60
    """Seconds a silent replica's peering record stays valid before another takes over."""
    extra_job_env: dict[str, str] = field(default_factory=dict)
    default_node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels every Job pod requires unless its spec sets its own."""
    default_tolerations: tuple[dict[str, Any], ...] = ()
    """Tolerations added to every Job pod (e.g. for tainted GPU nodes)."""
    default_priority_class: str | None = None
    """PriorityClass of Job pods whose spec names none."""
    policy_name: str | None = None
    """The installation's default ModelOpsPolicy (docs/security.md); None: no default."""
    policy_namespace: str | None = None
    """Namespace of that policy (the chart's release namespace)."""
    default_scratch_size: str = "20Gi"
    """sizeLimit of a Job pod's /tmp emptyDir when spec.resources.ephemeralStorage is unset."""
    jobsets: bool = False
    """Watch the JobSets it creates for resources.nodes > 1 (the chart's jobset.enabled,
    which also grants the RBAC); without it their status is read on each resync."""
    mlflow_url: str | None = None
    """Base URL of the MLflow tracking server versions are registered in (the chart's
    registry.mlflow.url); None: no registry. Installation config, never a tenant's."""
    mlflow_token_file: str | None = None
    """A file (a mounted Secret) holding MLflow's bearer token, read on every call."""
    mlflow_ca_file: str | None = None
    """A PEM CA bundle (a mounted Secret) for an https:// MLflow with a private CA."""
    mlflow_username_file: str | None = None
    mlflow_password_file: str | None = None
    """Files (one mounted Secret) with the username and password of MLflow's basic auth
    (`mlflow server --app-name basic-auth`), read on every call; exclusive with the token
    (the registry client refuses both at start)."""

    @classmethod
    def from_env(cls) -> "OperatorConfig":
        env = os.environ
        extra = {
            k[len("MODELOPS_JOB_ENV_") :]: v
            for k, v in env.items()
            if k.startswith("MODELOPS_JOB_ENV_")
        }
        return cls(
            jobs_image=env.get("MODELOPS_JOBS_IMAGE", cls.jobs_image),
            image_pull_policy=env.get("MODELOPS_IMAGE_PULL_POLICY", cls.image_pull_policy),
            service_account=env.get("MODELOPS_JOB_SERVICE_ACCOUNT") or None,
            namespaces=_env_list("MODELOPS_NAMESPACES"),
            metrics_port=int(env.get("MODELOPS_METRICS_PORT", cls.metrics_port)),
            health_port=int(env.get("MODELOPS_HEALTH_PORT", cls.health_port)),
            hf_cache_claim=env.get("MODELOPS_HF_CACHE_CLAIM") or None,
            download_cache_claim=env.get("MODELOPS_DOWNLOAD_CACHE_CLAIM") or None,
            resync_seconds=float(env.get("MODELOPS_RESYNC_SECONDS", cls.resync_seconds)),
            peering=env.get("MODELOPS_PEERING") or None,
            peering_priority=int(env.get("MODELOPS_PEERING_PRIORITY", "0")),
            peering_lifetime=int(env.get("MODELOPS_PEERING_LIFETIME", "60")),
            extra_job_env=extra,
            default_gpu_resource=env.get("MODELOPS_GPU_RESOURCE", cls.default_gpu_resource),
            default_node_selector=_env_json(env, "MODELOPS_JOB_NODE_SELECTOR", {}),
            default_tolerations=tuple(_env_json(env, "MODELOPS_JOB_TOLERATIONS", [])),
            default_priority_class=env.get("MODELOPS_JOB_PRIORITY_CLASS") or None,
            policy_name=env.get("MODELOPS_POLICY_NAME") or None,
            policy_namespace=env.get("MODELOPS_POLICY_NAMESPACE") or None,
            default_scratch_size=env.get("MODELOPS_JOB_SCRATCH_SIZE", cls.default_scratch_size),
            jobsets=env.get("MODELOPS_JOBSETS", "").lower() in ("1", "true", "yes"),
            mlflow_url=_env_url(env, "MODELOPS_MLFLOW_URL"),
            mlflow_token_file=env.get("MODELOPS_MLFLOW_TOKEN_FILE") or None,
            mlflow_ca_file=env.get("MODELOPS_MLFLOW_CA_FILE") or None,
            mlflow_username_file=env.get("MODELOPS_MLFLOW_USERNAME_FILE") or None,
            mlflow_password_file=env.get("MODELOPS_MLFLOW_PASSWORD_FILE") or None,
        )
