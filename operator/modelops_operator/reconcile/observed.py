"""What the reconciler sees: plain, immutable snapshots of the resource and its Job.

`k8s/observe.py` fills these from the API server; tests build them by hand. Nothing
here talks to the API server.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelops_operator.reconcile.policy import Gate


@dataclass(frozen=True)
class PodTermination:
    """A finished container of one of the Job's pods."""

    pod: str
    exit_code: int
    message: str
    finished_at: datetime | None = None


@dataclass(frozen=True)
class JobView:
    """The state of a Job the operator created."""

    name: str
    uid: str | None = None
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    suspended: bool = False
    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """type -> (status, reason, message)."""
    start_time: datetime | None = None
    completion_time: datetime | None = None
    terminations: tuple[PodTermination, ...] = ()
    """Terminated pods, newest first."""
    spec_digest: str | None = None
    """The digest of the spec document the Job runs (its spec-digest annotation)."""
    generation: int | None = None
    """The resource generation the Job was built from (its generation annotation)."""

    def condition_true(self, type_: str) -> bool:
        return self.conditions.get(type_, ("False", "", ""))[0] == "True"

    @property
    def complete(self) -> bool:
        return self.condition_true("Complete") or self.condition_true("SuccessCriteriaMet")

    @property
    def failed_terminally(self) -> bool:
        return self.condition_true("Failed") or self.condition_true("FailureTarget")


@dataclass(frozen=True)
class ResourceView:
    """The custom resource, as received."""

    kind: str
    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str] = field(default_factory=dict)
    creation_time: datetime | None = None
    deleting: bool = False


@dataclass(frozen=True)
class Observed:
    """Everything `plan()` decides from."""

    resource: ResourceView
    jobs: dict[str, JobView] = field(default_factory=dict)
    """Jobs owned by the resource, by name."""
    configmaps: frozenset[str] = frozenset()
    drift: Any = None
    """ModelAdaptation: the latest drift query outcome (drift.state.QueryOutcome) or None."""
    gate: Gate = field(default_factory=Gate)
    """The ModelOpsPolicy in force and the referenced Secrets' opt-in (reconcile/policy.py)."""
    jobset_api: str | None = None
    """None when JobSets can be created (or are not needed); else why not: the reason
    JobSetNotInstalled (no CRD) or JobSetForbidden (no RBAC) (reconcile/jobset_outcome.py)."""
    known_versions: dict[str, str] = field(default_factory=dict)
    """URI -> ModelVersion name, for the versions in the namespace: a new version's
    parents get their `version` from it (reconcile/versions.py); empty: none known."""


@dataclass(frozen=True)
class VersionView:
    """A ModelVersion: its name, its spec and status as stored (wire form)."""

    name: str
    spec: dict[str, Any]
    status: dict[str, Any]
    creation_time: datetime | None = None


@dataclass(frozen=True)
class InferenceServiceView:
    """The part of a KServe InferenceService a rollout reads."""

    name: str
    generation: int
    storage_uri: str | None
    """spec.predictor.model.storageUri."""
    canary_traffic_percent: int | None
    """spec.predictor.canaryTrafficPercent (None: unset)."""
    ready: bool
    """status.conditions Ready is True."""
    observed_generation: int | None = None
    """status.observedGeneration (KServe sets it once it acted on a spec)."""
    traffic: tuple[tuple[str, int, bool], ...] = ()
    """status.components.predictor.traffic: (revisionName, percent, latestRevision)."""
    latest_ready_revision: str | None = None
    previous_rolledout_revision: str | None = None


@dataclass(frozen=True)
class RolloutObserved:
    """Everything the rollout state machine decides from."""

    resource: ResourceView
    versions: tuple[VersionView, ...] = ()
    """Every ModelVersion in the namespace made by the spec's candidates, and the
    UnlearnRequest versions whose parent is the serving version; oldest first."""
    isvc: InferenceServiceView | None = None
    """None: the InferenceService does not exist (or KServe is not installed)."""
    isvc_missing_reason: str | None = None
    """Why isvc is None: InferenceServiceNotFound or KServeNotInstalled."""
    analysis: Any = None
    """The analysis query outcome (drift.state.QueryOutcome) when one ran now, else None."""
    eval_job: JobView | None = None
    """The gate's evaluation Job of the current candidate, if it exists."""
    gate: Gate = field(default_factory=Gate)
    """The ModelOpsPolicy in force (the analysis URL must be allowed)."""
    registry_configured: bool = False
    """The installation has an MLflow registry URL."""
