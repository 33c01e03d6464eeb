"""The custom resource kinds and their CRD-level facts: names, printer columns, root rules.

Two lists, because they mean different things to the rest of the code:
- `KINDS`: the four job kinds (one `KindInfo` each), which the operator's handler
  registration, the jobs registry, the policy and the demo iterate over: each runs a Job;
- `RELEASE_KINDS`: ModelVersion and ModelRollout (issue 15), which run no algorithm and
  are reconciled by their own handlers (`CrdKind`, without the job facts).
The CRD generator, the API reference and the chart's CRD copy cover `CRD_KINDS`, both.
`kind_info()` finds job kinds only (a job document of another kind is refused);
`crd_kind()` finds any of them.
"""

from dataclasses import dataclass
from typing import get_args

from modelops_api.base import ApiModel, cel
from modelops_api.common import PROCESSES_MATCH_GPUS
from modelops_api.crd_kind import ConditionDoc, CrdKind, PrinterColumn
from modelops_api.lora_transfer import LoRATransferResults, LoRATransferSpec, LoRATransferStatus
from modelops_api.model_adaptation import ModelAdaptationSpec, ModelAdaptationStatus
from modelops_api.prune_retrain import PruneRetrainResults, PruneRetrainSpec, PruneRetrainStatus
from modelops_api.release_kinds import RELEASE_KINDS
from modelops_api.unlearn_request import UnlearnRequestSpec, UnlearnRequestStatus, UnlearnResults

__all__ = [
    "CRD_KINDS",
    "KINDS",
    "RELEASE_KINDS",
    "ConditionDoc",
    "CrdKind",
    "KindInfo",
    "PrinterColumn",
    "crd_kind",
    "kind_info",
]


COMMON_CONDITIONS: tuple[ConditionDoc, ...] = (
    ConditionDoc("Ready", "True when the resource needs nothing more: Succeeded (or Idle)."),
    ConditionDoc("Running", "True while a Job runs (for ModelAdaptation: a run is active)."),
    ConditionDoc(
        "Succeeded",
        "True when the request (ModelAdaptation: its latest run) succeeded; False before"
        " and while it runs, and after a failure. `kubectl wait --for=condition=Succeeded`.",
    ),
    ConditionDoc(
        "Failed",
        "True when the request (ModelAdaptation: its latest run) failed; the reason names"
        " why. `kubectl wait --for=condition=Failed`.",
    ),
    ConditionDoc("SpecValid", "False (reason InvalidSpec) when the operator refused the spec."),
    ConditionDoc("JobMissing", "True when a Job was deleted before it finished."),
    ConditionDoc("Suspended", "True while the Job is suspended (Kueue has not admitted it yet)."),
)
ONE_SHOT_CONDITIONS: tuple[ConditionDoc, ...] = (
    ConditionDoc("JobCreated", "True once the Job exists."),
    ConditionDoc(
        "SpecChanged",
        "True when the Job was built from another generation than the resource's (only"
        " with a CRD older than the immutability rule); the request is Failed.",
    ),
)


@dataclass(frozen=True, kw_only=True)
class KindInfo(CrdKind):
    """A job kind: a resource whose reconcile runs an algorithm in a Job."""

    results: type[ApiModel] | None
    algorithm: str
    """The algorithm family the Job runs (the method itself when the kind has one)."""
    conditions: tuple[ConditionDoc, ...] = COMMON_CONDITIONS + ONE_SHOT_CONDITIONS
    method_field: str | None = None
    """The spec field whose Literal names the method (None: one method, `algorithm`)."""

    def methods(self) -> tuple[str, ...]:
        """Every method the API accepts for this kind, read from the spec model itself."""
        if self.method_field is None:
            return (self.algorithm,)
        return tuple(get_args(self.spec.model_fields[self.method_field].annotation))

    def method_of(self, spec: ApiModel) -> str:
        """The method a validated spec of this kind asks for."""
        if self.method_field is None:
            return self.algorithm
        return str(getattr(spec, self.method_field))


def _immutable(what: str) -> dict[str, str]:
    """From creation on: a rule that held only once `status.jobRef` was written left a
    window in which the Job ran one spec while status claimed another (issue 12)."""
    return cel(
        "self.spec == oldSelf.spec",
        f"spec is immutable: the {what} runs the spec it was created with; delete this"
        " resource and create a new one instead",
        ".spec",
        "FieldValueForbidden",
    )


_PHASE = PrinterColumn("Phase", ".status.phase", description="Where the request stands.")
_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="PruneRetrain",
        plural="pruneretrains",
        short_names=("pr", "prune"),
        spec=PruneRetrainSpec,
        status=PruneRetrainStatus,
        results=PruneRetrainResults,
        algorithm="perp",
        columns=(
            _PHASE,
            PrinterColumn("Sparsity", ".status.results.sparsity", "number", "Measured sparsity."),
            PrinterColumn(
                "PPL", ".status.results.retrainedPerplexity", "number", "Retrained perplexity."
            ),
            PrinterColumn("Criterion", ".spec.pruning.criterion", priority=1),
            PrinterColumn("Pattern", ".spec.pruning.pattern", priority=1),
            _AGE,
        ),
        root_rules=(_immutable("run"), PROCESSES_MATCH_GPUS),
    ),
    KindInfo(
        kind="UnlearnRequest",
        plural="unlearnrequests",
        short_names=("ur", "unlearn"),
        spec=UnlearnRequestSpec,
        status=UnlearnRequestStatus,
        results=UnlearnResults,
        algorithm="unlearn",
        method_field="method",
        columns=(
            _PHASE,
            PrinterColumn("Method", ".spec.method"),
            PrinterColumn(
                "Deleted", ".status.results.deletedSamples", "integer", "Samples forgotten."
            ),
            PrinterColumn("Version", ".status.receipt.versionAfter", priority=1),
            _AGE,
        ),
        root_rules=(_immutable("deletion"), PROCESSES_MATCH_GPUS),
        conditions=COMMON_CONDITIONS
        + ONE_SHOT_CONDITIONS
        + (
            ConditionDoc(
                "Serving",
                "method s3t: True when shards serve (reason ShardsOutOfService when some"
                " do not); False (reason NoShardInService) when the model serves nothing.",
            ),
            ConditionDoc(
                "DeletionEffective",
                "Set when the model it unlearned from serves through a ModelRollout: False"
                " (reason DeletionPending, DeletionOverdue past the rollout's"
                " spec.unlearning.maxDelay) while an InferenceService still serves it, True"
                " (reason DeletionEffective) once this request's version (or one made from"
                " it) is the default (status.deletionEffective).",
            ),
        ),
    ),
    KindInfo(
        kind="LoRATransfer",
        plural="loratransfers",
        short_names=("lt", "transfer"),
        spec=LoRATransferSpec,
        status=LoRATransferStatus,
        results=LoRATransferResults,
        algorithm="translora",
        columns=(
            _PHASE,
            PrinterColumn(
                "Score", ".status.results.transferredScore", "number", "Transferred score."
            ),
            PrinterColumn(
                "Accepted", ".status.results.acceptanceRate", "number", "Filter acceptance."
            ),
            _AGE,
        ),
        root_rules=(_immutable("transfer"), PROCESSES_MATCH_GPUS),
        conditions=COMMON_CONDITIONS
        + ONE_SHOT_CONDITIONS
        + (ConditionDoc("Unfiltered", "True when no discriminator filtered the synthetic data."),),
    ),
    KindInfo(
        kind="ModelAdaptation",
        plural="modeladaptations",
        short_names=("ma", "adapt"),
        spec=ModelAdaptationSpec,
        status=ModelAdaptationStatus,
        results=None,
        algorithm="adapt",
        method_field="strategy",
        columns=(
            _PHASE,
            PrinterColumn("Strategy", ".spec.strategy"),
            PrinterColumn("Trigger", ".spec.trigger.type"),
            PrinterColumn("Runs", ".status.runCount", "integer", "Runs started."),
            PrinterColumn("Drift", ".status.drift.lastValue", "number", "Last drift value.", 1),
            _AGE,
        ),
        conditions=(
            *COMMON_CONDITIONS,
            ConditionDoc("PrometheusReachable", "drift trigger: whether the last query succeeded."),
            ConditionDoc("DriftDetected", "drift trigger: True while drift is past the threshold."),
        ),
        root_rules=(
            cel(
                "self.spec.strategy == oldSelf.spec.strategy",
                "spec.strategy is immutable; create a new ModelAdaptation instead",
                ".spec.strategy",
                "FieldValueForbidden",
            ),
            cel(
                "self.spec.output.uri == oldSelf.spec.output.uri",
                "spec.output.uri is immutable (model versions live there)",
                ".spec.output.uri",
                "FieldValueForbidden",
            ),
            PROCESSES_MATCH_GPUS,
        ),
    ),
)

CRD_KINDS: tuple[CrdKind, ...] = (*KINDS, *RELEASE_KINDS)
"""Every kind with a generated CRD: the job kinds, then the release kinds."""

_BY_KIND = {k.kind: k for k in KINDS}
_BY_PLURAL = {k.plural: k for k in KINDS}
_CRD_BY_NAME = {**{k.kind: k for k in CRD_KINDS}, **{k.plural: k for k in CRD_KINDS}}


def kind_info(name: str) -> KindInfo:
    """The KindInfo for a kind or plural name; KeyError naming the choices otherwise."""
    if name in _BY_KIND:
        return _BY_KIND[name]
    if name in _BY_PLURAL:
        return _BY_PLURAL[name]
    raise KeyError(f"unknown kind {name!r}; expected one of {sorted(_BY_KIND)}")


def crd_kind(name: str) -> CrdKind:
    """Any kind with a CRD (job or release kind), by kind or plural name."""
    if name in _CRD_BY_NAME:
        return _CRD_BY_NAME[name]
    raise KeyError(f"unknown kind {name!r}; expected one of {sorted(k.kind for k in CRD_KINDS)}")
