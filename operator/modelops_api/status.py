"""The status every kind shares: phase, conditions, the Job, timing, artifact.

Each kind's status subclasses `BaseStatus` with its own typed `results`. The operator
writes these models; the Job's termination message (`JobResult`) is parsed with them,
so a malformed result is a parse error, never a half-written status.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from modelops_api.base import ApiModel


class Phase(StrEnum):
    """Where a request stands. Succeeded and Failed are terminal for one-shot kinds."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    IDLE = "Idle"
    """ModelAdaptation only: waiting for its next trigger."""

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED)


PHASES = [p.value for p in Phase]

ConditionType = Literal[
    "Ready",
    "JobCreated",
    "Running",
    "Succeeded",
    "Failed",
    "Suspended",
    "SpecValid",
    "JobMissing",
    "DriftDetected",
    "PrometheusReachable",
    "Unfiltered",
    "PolicyViolation",
]


class Condition(ApiModel):
    """A Kubernetes-style condition."""

    type: Annotated[str, Field(max_length=64)] = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)] = Field(
        description="CamelCase reason."
    )
    message: Annotated[str, Field(max_length=2048)] = Field(
        "", description="Human-readable detail."
    )
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int = Field(0, ge=0, description="metadata.generation it describes.")


class JobRef(ApiModel):
    """The Job carrying out the request."""

    name: Annotated[str, Field(max_length=63)] = Field(description="Job name.")
    namespace: Annotated[str, Field(max_length=63)] = Field(description="Job namespace.")
    uid: Annotated[str, Field(max_length=64)] | None = Field(None, description="Job UID.")


MAX_DATASETS = 16
"""At most this many datasets in an Artifact (and a ModelVersion): the termination message
that carries them is at most 4096 bytes."""


class DatasetLineage(ApiModel):
    """A dataset the run read (defined here, next to the Artifact that reports it;
    modelops_api.model_version re-exports it for the ModelVersion's lineage)."""

    role: Annotated[str, Field(max_length=32)] = Field(
        description="train, replay, eval, forget, seeds, ..."
    )
    uri: Annotated[str, Field(max_length=1024)] = Field(description="Where it is.")
    digest: Annotated[str, Field(max_length=80)] | None = Field(
        None, description="Its digest, when the Job reported one."
    )


class Artifact(ApiModel):
    """What a run produced."""

    uri: Annotated[str, Field(max_length=1024)] = Field(description="Output location.")
    manifest_digest: Annotated[str, Field(max_length=80)] | None = Field(
        None, description="sha256 of manifest.json (lineage, metrics, file digests)."
    )
    version: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="Model version written, for stores with versions."
    )
    datasets: list[DatasetLineage] = Field(
        default_factory=list,
        max_length=MAX_DATASETS,
        description="The datasets the run read, with the sha256 of their files (lineage).",
    )


class BaseStatus(ApiModel):
    """Status fields every kind has."""

    phase: Phase | None = Field(None, description="Pending, Running, Succeeded, Failed, ...")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=32, description="Latest observations, one per type."
    )
    observed_generation: int | None = Field(None, description="Generation last reconciled.")
    job_ref: JobRef | None = Field(None, description="The Job of the current run.")
    start_time: datetime | None = Field(None, description="When the run started.")
    completion_time: datetime | None = Field(None, description="When the run finished.")
    artifact: Artifact | None = Field(None, description="The output of the last successful run.")
    message: Annotated[str, Field(max_length=2048)] | None = Field(
        None, description="Short summary of the current state."
    )
    retries: int | None = Field(None, ge=0, description="Failed pod attempts that were retried.")
    model_version: Annotated[str, Field(max_length=253)] | None = Field(
        None,
        description="The ModelVersion recorded for the output (ModelAdaptation: the latest run's).",
    )


class JobResult(ApiModel):
    """What the Job writes to its termination message (at most 4096 bytes)."""

    ok: bool = Field(description="Whether the algorithm completed.")
    reason: Annotated[str, Field(max_length=64)] = Field(description="CamelCase reason.")
    message: Annotated[str, Field(max_length=1024)] = Field("", description="Detail.")
    results: dict[str, Any] = Field(default_factory=dict, description="Kind-specific results.")
    artifact: Artifact | None = Field(None, description="Output location and digest.")
    status: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra status fields of the kind (e.g. a deletion receipt).",
    )
