"""ModelAdaptation: keep this model current with new data.

A long-lived resource. Each run is one Job: continual pre-training with LR re-warming,
re-decaying and replay (`cpt`, arXiv:2403.08763), S3T sharded sliced training that
makes the model exactly unlearnable (`s3t`), or a plain LoRA fine-tune (`lora`, which
can also train a Trans-LoRA discriminator). Runs start by hand, on a cron schedule,
or when a drift metric queried from Prometheus crosses its threshold.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from modelops_api.base import ApiModel, cel, with_cel
from modelops_api.common import (
    DatasetRef,
    JobTemplate,
    LoRAConfig,
    ModelRef,
    Optimization,
    OutputRef,
)
from modelops_api.cron import CRON_PATTERN
from modelops_api.durations import Duration, cel_bounds, within
from modelops_api.durations import parse_duration as parse_duration
from modelops_api.kind import Resource
from modelops_api.prometheus_source import PROMETHEUS_SOURCE_RULES, PrometheusSource
from modelops_api.status import BaseStatus, JobRef, Phase
from modelops_api.storage import S3T_NEEDS_FILESYSTEM

ForDuration = Annotated[Duration, AfterValidator(within("for", "0s", "168h"))]
IntervalDuration = Annotated[Duration, AfterValidator(within("interval", "1s", "24h"))]
CooldownDuration = Annotated[Duration, AfterValidator(within("cooldown", "0s", "720h"))]
Threshold = Annotated[float, Field(allow_inf_nan=False)]


class LRSchedule(ApiModel):
    """Learning-rate schedule of a continual pre-training run."""

    kind: Literal["rewarm_cosine", "constant", "infinite"] = Field(
        "rewarm_cosine",
        description=(
            "rewarm_cosine: linear re-warm then cosine re-decay; constant: eta_min = "
            "minLrRatio x learningRate throughout (no re-warming); "
            "infinite: warmup, cooldown, constant, and a final anneal."
        ),
    )
    warmup_ratio: float = Field(0.01, ge=0, le=0.5, description="Share of steps re-warming.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="eta_min / eta_max.")
    cooldown_ratio: float = Field(
        0.6, ge=0, le=1, description="infinite: share of steps cooling down."
    )
    constant_lr_ratio: float = Field(0.55, gt=0, le=1, description="infinite: eta_const / eta_max.")
    anneal_ratio: float = Field(
        0.1, ge=0, le=1, description="infinite: share of steps in the final anneal."
    )
    resume_from_pre_anneal: bool = Field(
        True,
        description="infinite: continue from the parent's pre-anneal checkpoint without re-warming.",
    )


class CPTSpec(ApiModel):
    """Continual pre-training."""

    replay_data: DatasetRef | None = Field(
        None, description="The old data (D0), replayed in order."
    )
    replay_ratio: float = Field(
        0.05, ge=0, le=0.9, description="Share of every batch taken from D0."
    )
    schedule: LRSchedule = Field(default_factory=LRSchedule, description="LR schedule.")
    validation_old: DatasetRef | None = Field(None, description="Held-out D0 validation text.")
    validation_new: DatasetRef | None = Field(None, description="Held-out D1 validation text.")


class S3TTrainSpec(ApiModel):
    """S3T sequence-aware sharded sliced training."""

    model_config = with_cel(
        cel(
            "!has(self.deletionProbabilities) || size(self.deletionProbabilities) == self.slices",
            "deletionProbabilities needs one entry per slice",
            ".deletionProbabilities",
        ),
    )

    shards: int = Field(3, ge=1, le=64, description="Shards m (isolated models).")
    slices: int = Field(4, ge=1, le=16, description="Slices L per shard (and PEFT layer groups).")
    orders: int = Field(
        4,
        ge=1,
        le=720,
        description="Slice orders B trained per shard (cyclic rotations by default).",
    )
    order_selection: Literal["cyclic", "bipartite", "full"] = Field(
        "cyclic",
        description="cyclic rotations, bipartite matching on deletion probabilities, or all L!.",
    )
    deletion_probabilities: list[float] | None = Field(
        None, max_length=16, description="Per-slice deletion probabilities (for bipartite)."
    )
    epochs_per_step: int = Field(1, ge=1, le=1000, description="Epochs at each cumulative step.")
    lora: LoRAConfig = Field(default_factory=LoRAConfig, description="Adapter shape per layer.")
    task: Literal["classification", "causal_lm"] = Field(
        "causal_lm", description="What the shards are trained on."
    )
    label_field: Annotated[str, Field(max_length=64)] = Field("label", description="Label field.")
    num_labels: int = Field(2, ge=2, le=100_000, description="Classes (classification).")
    parallelism: int = Field(0, ge=0, le=64, description="Shard pods at once; 0 means all shards.")

    @model_validator(mode="after")
    def _probabilities(self) -> "S3TTrainSpec":
        if (
            self.deletion_probabilities is not None
            and len(self.deletion_probabilities) != self.slices
        ):
            raise ValueError("deletionProbabilities needs one entry per slice")
        return self


class LoRATrainSpec(ApiModel):
    """Plain LoRA / QLoRA fine-tuning on task data (prompt, completion)."""

    lora: LoRAConfig = Field(
        default_factory=lambda: LoRAConfig(rank=8, alpha=16.0), description="Adapter."
    )
    transfer_ready: bool = Field(
        False, description="Also train the Trans-LoRA discriminator and keep seed examples."
    )
    seed_examples: int = Field(5, ge=1, le=64, description="Seeds kept for a later transfer.")
    discriminator_epochs: int = Field(
        1,
        ge=1,
        le=100,
        description="Epochs of discriminator training on its balanced real/synthetic set (1 in the paper).",
    )


class DriftTrigger(PrometheusSource):
    """Start a run when a Prometheus query crosses a threshold."""

    model_config = with_cel(
        cel(
            "self.direction == 'above' ? self.clearThreshold < self.fireThreshold "
            ": self.clearThreshold > self.fireThreshold",
            "clearThreshold must be strictly on the safe side of fireThreshold "
            "(< for direction above, > for below): equal thresholds are no hysteresis",
            ".clearThreshold",
        ),
        *PROMETHEUS_SOURCE_RULES,
        cel_bounds("for", "0s", "168h"),
        cel_bounds("interval", "1s", "24h"),
        cel_bounds("cooldown", "0s", "720h"),
    )

    fire_threshold: Threshold = Field(description="Fire when the value crosses this.")
    clear_threshold: Threshold = Field(
        description="Re-arm once the value is strictly past this (on the safe side of fire)."
    )
    direction: Literal["above", "below"] = Field("above", description="Fire above or below.")
    for_: ForDuration = Field(
        "5m",
        alias="for",
        description="How long the value must hold past fireThreshold, continuously (0s to 168h).",
    )
    interval: IntervalDuration = Field("1m", description="Evaluation interval (1s to 24h).")
    cooldown: CooldownDuration = Field(
        "1h", description="No new run for this long after one starts (0s to 720h)."
    )
    no_data: Literal["ignore", "trigger", "error"] = Field(
        "ignore", description="What an empty result or NaN does."
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> "DriftTrigger":
        if self.direction == "above" and self.clear_threshold >= self.fire_threshold:
            raise ValueError(
                "clearThreshold must be < fireThreshold for direction above "
                "(equal thresholds are no hysteresis)"
            )
        if self.direction == "below" and self.clear_threshold <= self.fire_threshold:
            raise ValueError(
                "clearThreshold must be > fireThreshold for direction below "
                "(equal thresholds are no hysteresis)"
            )
        return self


class Trigger(ApiModel):
    """When runs start."""

    model_config = with_cel(
        cel(
            "self.type != 'schedule' || has(self.schedule)",
            "schedule is required for type schedule",
            ".schedule",
        ),
        cel(
            "self.type != 'drift' || has(self.drift)", "drift is required for type drift", ".drift"
        ),
    )

    type: Literal["manual", "schedule", "drift"] = Field(
        "manual",
        description="manual: one run at creation and one per new run-now annotation; schedule: cron; drift: Prometheus.",
    )
    schedule: Annotated[str, Field(pattern=CRON_PATTERN, max_length=128)] | None = Field(
        None,
        description=(
            "Cron expression (5 fields, UTC: minute 0-59, hour 0-23, day 1-31, month 1-12 "
            "or JAN-DEC, weekday 0-7 or SUN-SAT; *, ranges, lists, /steps) or @daily etc."
        ),
    )
    drift: DriftTrigger | None = Field(None, description="Drift settings for type drift.")
    run_on_create: bool = Field(True, description="manual: run once when created.")

    @model_validator(mode="after")
    def _needs_block(self) -> "Trigger":
        if self.type == "schedule" and not self.schedule:
            raise ValueError("schedule is required for type schedule")
        if self.type == "drift" and self.drift is None:
            raise ValueError("drift is required for type drift")
        return self


S3T_ONE_NODE = (
    "strategy s3t runs its shards as the pods of one Indexed Job (s3t.parallelism at a"
    " time); resources.nodes must be 1"
)


class ModelAdaptationSpec(JobTemplate):
    """Keep a model current: how each run trains and what starts a run."""

    model_config = with_cel(
        cel(
            "self.strategy != 'cpt' || has(self.data)", "data is required for strategy cpt", ".data"
        ),
        cel(
            "self.strategy != 's3t' || self.output.uri.startsWith('pvc://')"
            " || self.output.uri.startsWith('file://')",
            S3T_NEEDS_FILESYSTEM,
            ".output.uri",
        ),
        cel(
            "self.strategy != 's3t' || !has(self.resources) || !has(self.resources.nodes)"
            " || self.resources.nodes == 1",
            S3T_ONE_NODE,
            ".resources.nodes",
        ),
    )

    strategy: Literal["cpt", "s3t", "lora"] = Field("cpt", description="How each run trains.")
    model: ModelRef = Field(description="The model to adapt (the first run's parent).")
    data: DatasetRef | None = Field(
        None, description="New data (D1), or the task / S3T training data."
    )
    optimization: Optimization = Field(default_factory=Optimization, description="Training loop.")
    cpt: CPTSpec = Field(default_factory=CPTSpec, description="Continual pre-training settings.")
    s3t: S3TTrainSpec = Field(
        default_factory=S3TTrainSpec, alias="s3t", description="S3T training settings."
    )
    lora: LoRATrainSpec = Field(
        default_factory=LoRATrainSpec, description="LoRA fine-tune settings."
    )
    trigger: Trigger = Field(default_factory=Trigger, description="What starts a run.")
    output: OutputRef = Field(description="Model versions are written under this location.")
    successful_runs_history_limit: int = Field(3, ge=0, le=100, description="Finished runs kept.")
    failed_runs_history_limit: int = Field(3, ge=0, le=100, description="Failed runs kept.")
    suspend: bool = Field(False, description="Start no new runs.")

    @model_validator(mode="after")
    def _data(self) -> "ModelAdaptationSpec":
        if self.strategy == "cpt" and self.data is None:
            raise ValueError("data is required for strategy cpt")
        if self.strategy == "s3t" and not self.output.uri.startswith(("pvc://", "file://")):
            raise ValueError(f"output.uri: {S3T_NEEDS_FILESYSTEM}")
        if self.strategy == "s3t" and self.resources.nodes > 1:
            raise ValueError(f"resources.nodes: {S3T_ONE_NODE}")
        return self


class RunRecord(ApiModel):
    """One run of a ModelAdaptation."""

    run: int = Field(ge=1, description="Run number.")
    phase: Phase = Field(description="Phase of the run.")
    trigger: Annotated[str, Field(max_length=256)] = Field(description="What started it.")
    job_ref: JobRef | None = Field(None, description="Its Job.")
    start_time: datetime | None = Field(None, description="Start.")
    completion_time: datetime | None = Field(None, description="End.")
    results: dict[str, Any] | None = Field(
        None,
        description="Its results (losses, steps, version).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    message: Annotated[str, Field(max_length=1024)] | None = Field(None, description="Detail.")
    model_version: Annotated[str, Field(max_length=253)] | None = Field(
        None, description="The ModelVersion recorded for this run's output."
    )


class DriftStatus(ApiModel):
    """Where the drift trigger stands: the whole state of its state machine, so a
    restarted operator continues where the last one stopped. Written as a whole
    object (a cleared field is removed), never with a value JSON cannot carry."""

    last_value: Annotated[float, Field(allow_inf_nan=False)] | None = Field(
        None, description="Last finite value queried (unset for NaN, +Inf, -Inf or no data)."
    )
    last_value_text: Annotated[str, Field(max_length=32)] | None = Field(
        None, description="The last sample as text: the number, NaN, +Inf, -Inf or 'no data'."
    )
    last_evaluation_time: datetime | None = Field(None, description="When it was queried.")
    pending_since: datetime | None = Field(
        None,
        description="Since when the value has been past fireThreshold without a break (armed only).",
    )
    armed: bool = Field(
        True, description="False after firing until the value passes clearThreshold."
    )
    last_trigger_time: datetime | None = Field(None, description="Last time drift started a run.")
    last_error: Annotated[str, Field(max_length=1024)] | None = Field(
        None, description="Why the last evaluation failed (unset once one succeeds)."
    )
    last_error_reason: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="CamelCase reason of lastError (PrometheusUnreachable, QueryFailed, ...)."
    )
    consecutive_errors: int = Field(
        0, ge=0, le=1_000_000, description="Failed evaluations in a row (backoff)."
    )


class ModelAdaptationStatus(BaseStatus):
    """Status of a ModelAdaptation."""

    runs: list[RunRecord] = Field(default_factory=list, max_length=256, description="Recent runs.")
    run_count: int = Field(0, ge=0, description="Runs started so far.")
    active_run: int | None = Field(None, description="Number of the run in progress.")
    next_run_allowed_time: datetime | None = Field(None, description="Cooldown end.")
    next_schedule_time: datetime | None = Field(None, description="Next cron time.")
    last_run_now: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="The run-now annotation value last honoured."
    )
    drift: DriftStatus | None = Field(None, description="Drift trigger state.")
    current_version: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="Latest model version."
    )


class ModelAdaptation(Resource[ModelAdaptationSpec, ModelAdaptationStatus]):
    """A whole ModelAdaptation resource (apiVersion, kind, metadata, spec, status)."""
