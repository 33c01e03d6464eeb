"""ModelRollout: one InferenceService's release channel, the spec side.

A ModelRollout names a KServe InferenceService and the resources whose versions may
serve there. Each new ModelVersion from them goes through the same steps: an
evaluation gate (against the version in service on the same held-out data, or against
absolute thresholds), optional manual approval, then a canary (canaryTrafficPercent
steps, each held while a Prometheus analysis query stays in bounds), then promotion to
the default, or a rollback to the previous URI. One ModelRollout per InferenceService,
one rollout at a time: a newer candidate supersedes a pending one. Versions made by an
UnlearnRequest from the version in service are always taken (a deletion is effective in
serving only once they serve). The status side: `rollout_status.py`.
"""

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from modelops_api.base import ApiModel, cel, with_cel
from modelops_api.common import DatasetRef, DNSName, JobTemplate
from modelops_api.durations import Duration, cel_bounds, within
from modelops_api.model_version import Comparison, MetricName, MetricValue, SourceKind
from modelops_api.prometheus_source import PROMETHEUS_SOURCE_RULES, PrometheusSource

ANNOTATION_APPROVE = "modelops.dev/approve"
"""On a ModelRollout: the name of the version awaiting approval approves it."""
ANNOTATION_REJECT = "modelops.dev/reject"
"""On a ModelRollout: the name of a pending or canary version rejects it (rolled back)."""

StepPercent = Annotated[int, Field(ge=1, le=100)]
HoldDuration = Annotated[Duration, AfterValidator(within("interval", "0s", "168h"))]


class InferenceServiceRef(ApiModel):
    """The KServe InferenceService (serving.kserve.io/v1beta1) in this namespace."""

    name: DNSName = Field(description="Its name.")


class CandidateSource(ApiModel):
    """A resource whose published versions are candidates for this InferenceService."""

    kind: SourceKind = Field(description="Its kind.")
    name: DNSName = Field(description="Its name (same namespace).")


class GateRule(ApiModel):
    """One declarative check a candidate must pass before it takes any traffic."""

    model_config = with_cel(
        cel(
            "self.baseline == 'Absolute' ? has(self.threshold) : !has(self.threshold)",
            "threshold is required with baseline Absolute and not allowed with Serving",
            ".threshold",
        ),
    )

    metric: MetricName = Field(
        description="perplexity, taskScore, forgetAccuracy, retainAccuracy, membershipAuc,"
        " transferredScore, ... (the evaluation's or the run's own results)."
    )
    comparison: Comparison = Field(description="LessOrEqual: lower is better; GreaterOrEqual.")
    baseline: Literal["Serving", "Absolute"] = Field(
        "Serving",
        description="Serving: compare with the version in service, scored on the same"
        " held-out data (needs gate.evaluation); Absolute: compare with threshold.",
    )
    tolerance: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = Field(
        0.0,
        description="Serving: the relative worsening allowed (0.02 = 2%).",
    )
    threshold: MetricValue | None = Field(None, description="Absolute: the bound.")

    @model_validator(mode="after")
    def _threshold_iff_absolute(self) -> "GateRule":
        """The pydantic twin of the CEL rule above."""
        if (self.baseline == "Absolute") != (self.threshold is not None):
            raise ValueError(
                "threshold is required with baseline Absolute and not allowed with Serving"
            )
        return self


class GateEvaluation(ApiModel):
    """Score the candidate and the version in service on the same held-out data, in a
    Job (the jobs image) owned by this ModelRollout."""

    data: DatasetRef = Field(description="Held-out data (JSON Lines), never trained on.")
    max_samples: int = Field(256, ge=1, le=1_000_000, description="Score at most this many.")
    seq_len: int = Field(256, ge=8, le=32768, description="Tokens per sample.")


class Gate(ApiModel):
    """What a candidate must show before it takes traffic. Empty: every version passes."""

    model_config = with_cel(
        cel(
            "!has(self.rules) || has(self.evaluation) || "
            "!self.rules.exists(r, !has(r.baseline) || r.baseline == 'Serving')",
            "evaluation is required when a rule has baseline Serving (candidate and serving"
            " version are scored on the same held-out data)",
            ".evaluation",
        ),
    )

    rules: list[GateRule] = Field(default_factory=list, max_length=16, description="All must hold.")
    evaluation: GateEvaluation | None = Field(
        None, description="Held-out scoring of candidate and serving version (for Serving rules)."
    )

    @model_validator(mode="after")
    def _serving_rules_need_evaluation(self) -> "Gate":
        """The pydantic twin of the CEL rule above."""
        if self.evaluation is None and any(r.baseline == "Serving" for r in self.rules):
            raise ValueError(
                "evaluation is required when a rule has baseline Serving (candidate and"
                " serving version are scored on the same held-out data)"
            )
        return self


class Analysis(PrometheusSource):
    """A Prometheus query that must stay within bounds while a canary step holds (for
    example the canary's error ratio). A failed or empty query holds the step (never
    promotes on missing data)."""

    model_config = with_cel(
        cel("has(self.min) || has(self.max)", "set min, max or both", ".max"),
        cel(
            "!has(self.min) || !has(self.max) || self.min <= self.max",
            "min must not exceed max",
            ".min",
        ),
        *PROMETHEUS_SOURCE_RULES,
        cel_bounds("interval", "1s", "1h"),
    )

    min: MetricValue | None = Field(None, description="Fail below this.")
    max: MetricValue | None = Field(None, description="Fail above this.")
    interval: Annotated[Duration, AfterValidator(within("interval", "1s", "1h"))] = Field(
        "30s", description="Query every (1s to 1h)."
    )

    @model_validator(mode="after")
    def _bounds(self) -> "Analysis":
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class Canary(ApiModel):
    """Traffic steps to the candidate, each held for `interval` while analysis holds."""

    model_config = with_cel(
        cel(
            "self.steps.size() == 0 || self.steps[self.steps.size() - 1] == 100",
            "the last step must be 100",
            ".steps",
        ),
        cel(
            "self.steps.isSorted() && self.steps.all(s, self.steps.filter(t, t == s).size() == 1)",
            "steps must be strictly increasing",
            ".steps",
        ),
        cel_bounds("interval", "0s", "168h"),
    )

    steps: list[StepPercent] = Field(
        default_factory=lambda: [10, 50, 100],
        min_length=1,
        max_length=10,
        description="Percent of traffic to the candidate, strictly increasing, ending at 100.",
    )
    interval: HoldDuration = Field("5m", description="Hold each step this long (0s to 168h).")
    analysis: Analysis | None = Field(None, description="Query that must hold during each step.")

    @model_validator(mode="after")
    def _increasing(self) -> "Canary":
        if self.steps[-1] != 100:
            raise ValueError("steps: the last step must be 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("steps must be strictly increasing")
        return self


class Registry(ApiModel):
    """Register each version in the installation's MLflow model registry (the chart's
    registry.mlflow.url) under this name; champion/challenger aliases follow the rollout."""

    model_name: Annotated[str, Field(min_length=1, max_length=190, pattern=r"^[^/:\s]+$")] = Field(
        description="Registered model name, registered as `<namespace>.<modelName>` so that"
        " one namespace's rollouts never touch another's registered models (no '/', ':' or"
        " whitespace: MLflow refuses them)."
    )


def registered_model_name(namespace: str, model_name: str) -> str:
    """The MLflow registered-model name of a rollout's spec.registry.modelName: prefixed
    with its namespace (a DNS label, so the first '.' ends it unambiguously). A tenant
    may name any model; it only ever reaches its own namespace's."""
    return f"{namespace}.{model_name}"


class Unlearning(ApiModel):
    """How long a deletion may take to reach serving before it is reported."""

    model_config = with_cel(cel_bounds("maxDelay", "0s", "720h"))

    max_delay: Annotated[Duration, AfterValidator(within("maxDelay", "0s", "720h"))] = Field(
        "24h",
        description="After an UnlearnRequest succeeds, its version must serve within this"
        " (0s to 720h); past it the DeletionEffective condition turns False and an alert fires.",
    )


_EVAL_JOB_PROCESSES = cel(
    "!has(self.evaluationJob) || !has(self.evaluationJob.distribution) || "
    "!has(self.evaluationJob.distribution.processesPerNode) || "
    "(has(self.evaluationJob.resources) && has(self.evaluationJob.resources.gpu) && "
    "has(self.evaluationJob.resources.gpu.count) ? self.evaluationJob.resources.gpu.count : 1)"
    " in [0, self.evaluationJob.distribution.processesPerNode]",
    "evaluationJob.distribution.processesPerNode must be unset or equal"
    " evaluationJob.resources.gpu.count when GPUs are requested (one process per GPU)",
    ".evaluationJob.distribution.processesPerNode",
)
"""`common.PROCESSES_MATCH_GPUS` for the evaluation Job (its twin: JobTemplate's validator)."""


class ModelRolloutSpec(ApiModel):
    """The release channel of one InferenceService."""

    model_config = with_cel(
        cel(
            "self.candidates.all(c, self.candidates.exists_one(d, d.kind == c.kind"
            " && d.name == c.name))",
            "candidates must not name the same resource twice",
            ".candidates",
        ),
        _EVAL_JOB_PROCESSES,
    )

    inference_service: InferenceServiceRef = Field(description="Where versions serve.")
    candidates: list[CandidateSource] = Field(
        min_length=1, max_length=16, description="Resources whose versions may serve here."
    )
    gate: Gate = Field(default_factory=Gate, description="What a candidate must show first.")
    canary: Canary = Field(default_factory=Canary, description="Traffic steps and analysis.")
    require_approval: bool = Field(
        False,
        description="Wait after the gate until modelops.dev/approve names the version.",
    )
    registry: Registry | None = Field(None, description="Also register versions in MLflow.")
    unlearning: Unlearning = Field(default_factory=Unlearning, description="Deletion deadline.")
    evaluation_job: JobTemplate | None = Field(
        None, description="Image, resources and scheduling of the gate's evaluation Job."
    )

    @model_validator(mode="after")
    def _distinct_candidates(self) -> "ModelRolloutSpec":
        """The pydantic twin of the CEL rule above."""
        seen = [(c.kind, c.name) for c in self.candidates]
        if len(set(seen)) != len(seen):
            raise ValueError("candidates must not name the same resource twice")
        return self


EVALUATION_KIND = "ModelEvaluation"
"""The `kind` of the gate's evaluation Job document: not a custom resource, the
document a ModelRollout's evaluation Job reads (registry method `evaluate`)."""


class EvaluatedModel(ApiModel):
    """A version to score: where it is and what made it (how to load it)."""

    version: Annotated[str, Field(max_length=253)] = Field(description="The ModelVersion.")
    uri: Annotated[str, Field(max_length=1024)] = Field(description="Where the model is.")
    kind: SourceKind = Field(description="The kind that published it.")
    method: Annotated[str, Field(max_length=64)] | None = Field(None, description="Its method.")
    base_uri: Annotated[str, Field(max_length=1024)] | None = Field(
        None, description="For an adapter (LoRA, Trans-LoRA): the base model it applies to."
    )


class EvaluationJobSpec(JobTemplate):
    """What the gate's evaluation Job runs: score the candidate and (when one serves)
    the serving version on the same held-out data, with the same seed."""

    candidate: EvaluatedModel = Field(description="The candidate.")
    baseline: EvaluatedModel | None = Field(None, description="The version in service.")
    data: DatasetRef = Field(description="Held-out data.")
    max_samples: int = Field(256, ge=1, le=1_000_000, description="Score at most this many.")
    seq_len: int = Field(256, ge=8, le=32768, description="Tokens per sample.")
    metrics: list[MetricName] = Field(
        default_factory=lambda: ["perplexity"],
        min_length=1,
        max_length=16,
        description="Metrics the gate's rules name (the Job reports each it can compute).",
    )
