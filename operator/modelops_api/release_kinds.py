"""The release kinds of issue 15 and their CRD-level facts: ModelVersion and ModelRollout.

They run no algorithm, so they are not job kinds (`kinds.KINDS`): nothing that iterates
the job kinds (handler registration, the jobs registry, the demo) sees them. The CRD
generator, the API reference and the chart's CRD copy do (`kinds.CRD_KINDS`).
"""

from modelops_api.base import cel
from modelops_api.common import NAME_PATTERN
from modelops_api.crd_kind import ConditionDoc, CrdKind, PrinterColumn
from modelops_api.model_rollout import ModelRolloutSpec
from modelops_api.model_version import ModelVersionSpec, ModelVersionStatus
from modelops_api.rollout_status import ModelRolloutStatus

MAX_NAME = 63


LABEL_VALUE_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
"""A resource name that is also a label value: dots allowed (a version's name keeps its
source's, `build/names.version_name`), at most 63 characters."""


def _short_name(kind: str, why: str, pattern: str = NAME_PATTERN) -> dict[str, str]:
    """A name of at most 63 characters: a label value and a field of other records."""
    form = "a DNS label" if pattern == NAME_PATTERN else "a label value"
    return cel(
        f"size(self.metadata.name) <= {MAX_NAME} && self.metadata.name.matches('{pattern}')",
        f"metadata.name: a {kind} name must be {form} of at most {MAX_NAME} characters ({why})",
        None,  # a fieldPath must lie inside the schema; metadata's is not (the message names it)
        "FieldValueInvalid",
    )


VERSION_IMMUTABLE = cel(
    "self.spec == oldSelf.spec",
    "spec is immutable: a ModelVersion records a published model once; versions are"
    " added, never edited",
    ".spec",
    "FieldValueForbidden",
)
ISVC_IMMUTABLE = cel(
    "self.spec.inferenceService.name == oldSelf.spec.inferenceService.name",
    "spec.inferenceService.name is immutable: create a ModelRollout for the other"
    " InferenceService instead",
    ".spec.inferenceService.name",
    "FieldValueForbidden",
)

_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")

MODEL_VERSION = CrdKind(
    kind="ModelVersion",
    plural="modelversions",
    short_names=("mv",),
    spec=ModelVersionSpec,
    status=ModelVersionStatus,
    columns=(
        PrinterColumn("Source-Kind", ".spec.source.kind", description="Kind that published it."),
        PrinterColumn("Source", ".spec.source.name", description="Resource that published it."),
        PrinterColumn("Phase", ".status.phase", description="Where it stands in serving."),
        PrinterColumn(
            "InferenceService",
            ".status.serving[-1].inferenceService",
            description="The InferenceService it served last (or serves).",
        ),
        _AGE,
        PrinterColumn("URI", ".spec.uri", description="Where the model is.", priority=1),
        PrinterColumn("Run", ".spec.source.run", "integer", "ModelAdaptation run.", 1),
    ),
    root_rules=(
        VERSION_IMMUTABLE,
        _short_name("ModelVersion", "versions are label values", LABEL_VALUE_NAME),
    ),
    conditions=(),
    status_note=(
        "Created by the operator only (tenants may read versions, never create or edit"
        " them); the status is written by the ModelRollout that considers the version."
        " `status.phase` is the state; no conditions are set."
    ),
)

MODEL_ROLLOUT = CrdKind(
    kind="ModelRollout",
    plural="modelrollouts",
    short_names=("mro", "mrollout"),
    spec=ModelRolloutSpec,
    status=ModelRolloutStatus,
    columns=(
        PrinterColumn("InferenceService", ".spec.inferenceService.name"),
        PrinterColumn("Phase", ".status.phase", description="Where the channel stands."),
        PrinterColumn("Serving", ".status.servingVersion", description="The default version."),
        PrinterColumn("Candidate", ".status.current.version", description="Being rolled out."),
        PrinterColumn(
            "Canary",
            ".status.applied.canaryTrafficPercent",
            "integer",
            "Percent of traffic set for the candidate.",
        ),
        _AGE,
    ),
    root_rules=(
        ISVC_IMMUTABLE,
        _short_name("ModelRollout", "it labels the evaluation Job and names the rollout"),
    ),
    conditions=(
        ConditionDoc("Ready", "True while Idle, serving its version with no candidate pending."),
        ConditionDoc(
            "SpecValid",
            "False (reason InvalidSpec) when the operator refused the spec; nothing is touched.",
        ),
        ConditionDoc(
            "GatePassed",
            "The candidate's gate: True when every rule held; False (reason GateFailed) names"
            " the metric that failed and by how much; serving is untouched.",
        ),
        ConditionDoc(
            "AwaitingApproval",
            "True while the candidate waits for `modelops.dev/approve=<version>`"
            " (spec.requireApproval); `modelops.dev/reject=<version>` rejects it.",
        ),
        ConditionDoc("Progressing", "True while a candidate is evaluated, in canary or promoted."),
        ConditionDoc(
            "Paused",
            "True when nothing is touched: reason InferenceServiceEditedByHand (its predictor"
            " differs from what the operator last set), InferenceServiceNotFound, or"
            " KServeNotInstalled (no serving.kserve.io/v1beta1 InferenceService resource).",
        ),
        ConditionDoc(
            "AnalysisHealthy",
            "The canary step's Prometheus analysis: False when the value is out of bounds"
            " (rolled back), Unknown when the query fails or returns no data (the step holds).",
        ),
        ConditionDoc(
            "RegistrySynced",
            "spec.registry: whether the MLflow registry has the version and its aliases.",
        ),
        ConditionDoc(
            "DeletionEffective",
            "UnlearnRequest versions: True once the unlearned version serves; False past"
            " spec.unlearning.maxDelay while a served version still contains deleted samples.",
        ),
        ConditionDoc(
            "PolicyViolation",
            "True (reason: the ModelOpsPolicy rule) when the policy refuses the spec, for"
            " example an analysis prometheusUrl outside allowedPrometheusEndpoints.",
        ),
        ConditionDoc(
            "Conflict",
            "True when another ModelRollout already manages the same InferenceService: this"
            " one touches nothing.",
        ),
    ),
    status_note=(
        "The status is the whole state of the rollout: a restarted operator continues from it."
    ),
)

RELEASE_KINDS: tuple[CrdKind, ...] = (MODEL_VERSION, MODEL_ROLLOUT)
