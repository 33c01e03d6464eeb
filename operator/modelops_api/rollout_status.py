"""ModelRollout status: the whole state of the rollout state machine.

Everything the next decision needs is here, so a restarted operator continues where the
last one stopped: no second canary step, no lost rollback. The machine itself is pure
(`modelops_operator/reconcile/rollout.py`); this is the shape it persists through the
API server's merge-patch semantics (a cleared field is sent as null).

Write-ahead: before the operator patches the InferenceService it records the patch it
is about to make (`applied`), so on restart the InferenceService matches either the
previous `applied` (the patch did not happen: make it) or the new one (it did).
Anything else is an edit by hand, and the rollout pauses.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from modelops_api.base import ApiModel
from modelops_api.model_version import MetricValue, UriText
from modelops_api.status import Condition

VersionName = Annotated[str, Field(max_length=253)]


class RolloutPhase(StrEnum):
    """Where the channel stands."""

    IDLE = "Idle"
    """Serving its current version; no candidate."""
    EVALUATING = "Evaluating"
    """The gate's evaluation Job runs."""
    AWAITING_APPROVAL = "AwaitingApproval"
    CANARY = "Canary"
    """A canary step holds."""
    PROMOTING = "Promoting"
    """Making the candidate the default (100%, no canary)."""
    ROLLING_BACK = "RollingBack"
    """Restoring the previous URI."""
    PAUSED = "Paused"
    """The InferenceService was edited by hand, or is missing: nothing is touched."""


class IsvcState(ApiModel):
    """What the operator set (or is about to set) on the InferenceService's predictor."""

    storage_uri: UriText = Field(description="spec.predictor.model.storageUri.")
    canary_traffic_percent: int | None = Field(
        None, ge=0, le=100, description="spec.predictor.canaryTrafficPercent (unset: none)."
    )


class AnalysisState(ApiModel):
    """The analysis query of the current step."""

    last_value: MetricValue | None = Field(None, description="Last value queried.")
    last_value_text: Annotated[str, Field(max_length=32)] | None = Field(
        None, description="As text: the number, NaN, +Inf, -Inf or 'no data'."
    )
    last_query_time: datetime | None = Field(None, description="When.")
    in_bounds_since: datetime | None = Field(
        None, description="Since when every query of this step returned a value in bounds."
    )
    last_error: Annotated[str, Field(max_length=1024)] | None = Field(
        None, description="Why the last query failed (the step holds)."
    )
    last_error_reason: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="PrometheusUnreachable, NoData, QueryFailed, PolicyViolation..."
    )


class CurrentRollout(ApiModel):
    """The candidate being rolled out."""

    version: VersionName = Field(description="The candidate ModelVersion.")
    uri: UriText = Field(description="Its URI.")
    unlearning: bool = Field(False, description="An UnlearnRequest made it (rollout required).")
    step: int = Field(-1, ge=-1, le=10, description="Index into canary.steps (-1: none yet).")
    step_start_time: datetime | None = Field(
        None, description="When the InferenceService reported the step's traffic split."
    )
    evaluation_job: Annotated[str, Field(max_length=63)] | None = Field(
        None, description="The gate's evaluation Job."
    )
    approved: bool = Field(False, description="Approved (or no approval required).")
    analysis: AnalysisState | None = Field(None, description="The current step's analysis.")
    start_time: datetime = Field(description="When this candidate was taken.")


class HistoryEntry(ApiModel):
    """One candidate's outcome."""

    version: VersionName = Field(description="The ModelVersion.")
    outcome: Literal["Promoted", "RolledBack", "GateFailed", "Rejected", "Superseded"] = Field(
        description="What happened to it."
    )
    time: datetime = Field(description="When.")
    message: Annotated[str, Field(max_length=512)] = Field("", description="Why.")


class RegistryAliases(ApiModel):
    """The MLflow aliases as last set (champion: serving; challenger: the canary)."""

    champion: VersionName | None = Field(None, description="Version holding champion.")
    challenger: VersionName | None = Field(None, description="Version holding challenger.")


class ModelRolloutStatus(ApiModel):
    """Status of a ModelRollout."""

    phase: RolloutPhase = Field(RolloutPhase.IDLE, description="Where the channel stands.")
    conditions: list[Condition] = Field(default_factory=list, max_length=32, description="Latest.")
    observed_generation: int | None = Field(None, description="Generation last reconciled.")
    serving_version: VersionName | None = Field(
        None, description="The version that is the InferenceService's default."
    )
    serving_uri: UriText | None = Field(None, description="Its URI.")
    serving_since: datetime | None = Field(None, description="Since when it is the default.")
    previous_version: VersionName | None = Field(None, description="The default before it.")
    current: CurrentRollout | None = Field(None, description="The rollout in progress.")
    applied: IsvcState | None = Field(
        None, description="What the operator last set on the InferenceService (written first)."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list, max_length=20, description="Recent candidates, newest last."
    )
    registry_aliases: RegistryAliases | None = Field(None, description="MLflow aliases set.")
    message: Annotated[str, Field(max_length=2048)] | None = Field(None, description="Summary.")
