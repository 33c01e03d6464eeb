"""ModelVersion: the record of one published model, added once and never edited.

Every run that publishes an output (any of the four kinds; each ModelAdaptation run)
becomes one ModelVersion, created by the operator with a deterministic name, so a
restarted operator records nothing twice. The spec is the immutable record: where the
model is, its manifest digest, what made it, and its lineage. The status is written by
the ModelRollout that considers the version: its evaluation, where it serves, whether
it was rolled back, and its registry entry.

Tenants read versions; only the operator creates them (chart RBAC).
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from modelops_api.base import ApiModel
from modelops_api.common import DNSName
from modelops_api.status import Condition, DatasetLineage

SourceName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        min_length=1,
        max_length=253,
    ),
]
"""A resource name (a DNS subdomain: the four job kinds accept up to 253 characters)."""

MetricName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.]*$", max_length=64)]
MetricValue = Annotated[float, Field(allow_inf_nan=False)]
Digest = Annotated[str, Field(max_length=80)]
UriText = Annotated[str, Field(max_length=1024)]
SourceKind = Literal["PruneRetrain", "UnlearnRequest", "LoRATransfer", "ModelAdaptation"]


class VersionSource(ApiModel):
    """The resource (and run) that published the version."""

    kind: SourceKind = Field(description="Kind of the resource that made it.")
    name: SourceName = Field(description="Its name (same namespace).")
    uid: Annotated[str, Field(max_length=64)] = Field(description="Its UID.")
    run: int | None = Field(None, ge=1, description="ModelAdaptation: the run number.")
    method: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="The method it ran (cpt, s3t, lora, perp, ssd, translora...)."
    )


class Parent(ApiModel):
    """An input of the run: a base model, an adapter, or the model that was unlearned."""

    role: Literal["base", "adapter", "source", "target"] = Field(
        description="base: the model trained or pruned; adapter: a source adapter;"
        " source/target: Trans-LoRA's source and target base models."
    )
    uri: UriText = Field(description="Where it is.")
    digest: Digest | None = Field(None, description="Its digest, when known.")
    version: Annotated[str, Field(max_length=253)] | None = Field(
        None, description="The ModelVersion recorded for that URI, when there is one."
    )


class Deletion(ApiModel):
    """UnlearnRequest versions: what was forgotten."""

    request: SourceName = Field(description="The UnlearnRequest.")
    deleted_samples: int = Field(ge=0, description="Samples forgotten.")
    requested_time: datetime = Field(description="When the UnlearnRequest was created.")


class ModelVersionSpec(ApiModel):
    """The immutable record of a published model."""

    uri: UriText = Field(description="Where the model is (the run's output.uri).")
    manifest_digest: Digest = Field(description="sha256 of its manifest.json.")
    source: VersionSource = Field(description="What published it.")
    parents: list[Parent] = Field(
        default_factory=list, max_length=8, description="Models and adapters it came from."
    )
    datasets: list[DatasetLineage] = Field(
        default_factory=list, max_length=16, description="Data it was made from."
    )
    metrics: dict[MetricName, MetricValue] = Field(
        default_factory=dict,
        max_length=64,
        description="The run's own numeric results (perplexity, forget/retain scores...).",
    )
    deletion: Deletion | None = Field(None, description="Set for UnlearnRequest versions.")
    created_time: datetime = Field(description="When the run published it.")


class VersionPhase(StrEnum):
    """Where a version stands in serving."""

    RECORDED = "Recorded"
    EVALUATING = "Evaluating"
    GATE_FAILED = "GateFailed"
    AWAITING_APPROVAL = "AwaitingApproval"
    REJECTED = "Rejected"
    CANARY = "Canary"
    SERVING = "Serving"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"
    RETIRED = "Retired"
    """Was serving; a newer version replaced it."""


Comparison = Literal["LessOrEqual", "GreaterOrEqual"]


class MetricCheck(ApiModel):
    """One gate rule's verdict."""

    metric: MetricName = Field(description="The metric.")
    comparison: Comparison = Field(description="How the candidate must compare.")
    candidate: MetricValue | None = Field(None, description="The candidate's value.")
    baseline: MetricValue | None = Field(
        None, description="The serving version's value on the same data (Serving rules)."
    )
    limit: MetricValue | None = Field(
        None,
        description="The bound the candidate had to meet (baseline with tolerance, or the threshold).",
    )
    passed: bool = Field(description="Whether the rule held.")
    message: Annotated[str, Field(max_length=512)] = Field(
        "", description="Which metric failed and by how much, or why it could not be checked."
    )


class Evaluation(ApiModel):
    """The gate's verdict for this version."""

    passed: bool = Field(description="Whether every rule held.")
    checks: list[MetricCheck] = Field(default_factory=list, max_length=32, description="Per rule.")
    baseline_version: Annotated[str, Field(max_length=253)] | None = Field(
        None, description="The serving version it was compared with."
    )
    data_uri: UriText | None = Field(None, description="The held-out data both were scored on.")
    time: datetime = Field(description="When the gate decided.")


class ServingRecord(ApiModel):
    """A period in which this version served (all or part of) an InferenceService."""

    inference_service: DNSName = Field(description="The InferenceService.")
    rollout: DNSName = Field(description="The ModelRollout.")
    since: datetime = Field(description="When it started taking all traffic (or the canary share).")
    until: datetime | None = Field(None, description="When it stopped.")
    role: Literal["canary", "default"] = Field(description="canary share or the default.")


class RegistryEntry(ApiModel):
    """The version's entry in an MLflow model registry."""

    model_name: Annotated[str, Field(max_length=256)] = Field(description="Registered model.")
    version: Annotated[str, Field(max_length=32)] = Field(description="MLflow version number.")


class ModelVersionStatus(ApiModel):
    """Where the version stands; written by the ModelRollout that considers it."""

    phase: VersionPhase = Field(VersionPhase.RECORDED, description="Where it stands.")
    conditions: list[Condition] = Field(default_factory=list, max_length=16, description="Latest.")
    evaluation: Evaluation | None = Field(None, description="The gate's verdict.")
    serving: list[ServingRecord] = Field(
        default_factory=list, max_length=32, description="Where and when it served."
    )
    rolled_back_time: datetime | None = Field(None, description="When a canary of it failed.")
    rollout_message: Annotated[str, Field(max_length=1024)] | None = Field(
        None, description="Why it stands where it does (failed metric, rejection, ...)."
    )
    registry: RegistryEntry | None = Field(None, description="Its MLflow registry entry.")
