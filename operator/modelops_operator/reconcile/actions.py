"""The actions a plan consists of. `k8s/apply.py` carries them out in order."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EnsureConfigMap:
    """Create the ConfigMap if it does not exist (an existing one is left alone)."""

    manifest: dict[str, Any]


@dataclass(frozen=True)
class CreateJob:
    """Create the Job; AlreadyExists counts as done (deterministic names)."""

    manifest: dict[str, Any]


@dataclass(frozen=True)
class DeleteJob:
    """Delete a Job (and its pods, in the background); a JobSet when `jobset`."""

    name: str
    namespace: str
    jobset: bool = False


@dataclass(frozen=True)
class PatchStatus:
    """Merge-patch the resource's status subresource."""

    patch: dict[str, Any]


@dataclass(frozen=True)
class RecordEvent:
    """A Kubernetes Event on the resource."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class RequeueAfter:
    """Look again after this many seconds even if nothing changes."""

    seconds: float


@dataclass(frozen=True)
class MetricUpdate:
    """A metric to set from a plan (applied by handlers, not by the API adapter)."""

    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EnsureModelVersion:
    """Create this ModelVersion if no object of its name exists (never updated:
    versions are only added). Carried out by `k8s/apply.py`."""

    manifest: dict[str, Any]


@dataclass(frozen=True)
class PatchModelVersionStatus:
    """Merge-patch a ModelVersion's status (the rollout that considers it writes it)."""

    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class PatchInferenceService:
    """Merge-patch the InferenceService's spec (serving.kserve.io/v1beta1). Always
    preceded, in the same plan, by the PatchStatus that records it in `status.applied`."""

    name: str
    patch: dict[str, Any]


@dataclass(frozen=True)
class RegisterVersion:
    """Register a ModelVersion in the MLflow registry (idempotent: found by its
    `modelops.version` tag first), then record the entry in the version's status."""

    model_name: str
    version: str
    source_uri: str
    tags: dict[str, str]
    description: str = ""


@dataclass(frozen=True)
class SetRegistryAliases:
    """Point the registry's champion/challenger aliases at these versions (None:
    delete the alias), then record them in the ModelRollout's status.registryAliases."""

    model_name: str
    champion: str | None
    challenger: str | None


Action = (
    EnsureConfigMap
    | CreateJob
    | DeleteJob
    | PatchStatus
    | RecordEvent
    | RequeueAfter
    | MetricUpdate
    | EnsureModelVersion
    | PatchModelVersionStatus
    | PatchInferenceService
    | RegisterVersion
    | SetRegistryAliases
)
