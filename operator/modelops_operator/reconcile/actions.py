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


Action = (
    EnsureConfigMap
    | CreateJob
    | DeleteJob
    | PatchStatus
    | RecordEvent
    | RequeueAfter
    | MetricUpdate
)
