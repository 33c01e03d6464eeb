"""The four kinds and their CRD-level facts: names, printer columns, root-level rules.

One `KindInfo` per kind is the single list the CRD generator, the operator's handler
registration and the docs all iterate over.
"""

from dataclasses import dataclass, field
from typing import get_args

from modelops_api.base import ApiModel, cel
from modelops_api.common import PROCESSES_MATCH_GPUS
from modelops_api.lora_transfer import LoRATransferResults, LoRATransferSpec, LoRATransferStatus
from modelops_api.model_adaptation import ModelAdaptationSpec, ModelAdaptationStatus
from modelops_api.prune_retrain import PruneRetrainResults, PruneRetrainSpec, PruneRetrainStatus
from modelops_api.unlearn_request import UnlearnRequestSpec, UnlearnRequestStatus, UnlearnResults


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ConditionDoc:
    """One condition type a kind's status carries, for docs/api.md."""

    type: str
    meaning: str


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


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[ApiModel]
    status: type[ApiModel]
    results: type[ApiModel] | None
    algorithm: str
    """The algorithm family the Job runs (the method itself when the kind has one)."""
    columns: tuple[PrinterColumn, ...] = ()
    root_rules: tuple[dict[str, str], ...] = field(default=())
    conditions: tuple[ConditionDoc, ...] = COMMON_CONDITIONS + ONE_SHOT_CONDITIONS
    """Every condition type the operator sets on this kind (docs/api.md)."""
    method_field: str | None = None
    """The spec field whose Literal names the method (None: one method, `algorithm`)."""

    @property
    def singular(self) -> str:
        return self.kind.lower()

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

_BY_KIND = {k.kind: k for k in KINDS}
_BY_PLURAL = {k.plural: k for k in KINDS}


def kind_info(name: str) -> KindInfo:
    """The KindInfo for a kind or plural name; KeyError naming the choices otherwise."""
    if name in _BY_KIND:
        return _BY_KIND[name]
    if name in _BY_PLURAL:
        return _BY_PLURAL[name]
    raise KeyError(f"unknown kind {name!r}; expected one of {sorted(_BY_KIND)}")
