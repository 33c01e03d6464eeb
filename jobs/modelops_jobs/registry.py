"""Which module runs each method the API accepts, and the entry point each one meets.

Keyed by (kind, method), with the method spelled as the API spells it: the literal of
the kind's method field (UnlearnRequest `method`, ModelAdaptation `strategy`) or, for a
kind with one method, its algorithm (`perp`, `translora`); `KindInfo.methods()` reads
them from the spec models, and tests/unit/test_registry.py holds the two sets equal, so
a literal added to the API without an entry here fails there. The method is chosen
here, once, and nowhere else (no `if spec.method == ...` in the algorithms).

Besides the four kinds, the runner runs documents that are no custom resource: the
gate's evaluation (`kind: ModelEvaluation`, spec `EvaluationJobSpec`, method
`evaluate`), which a ModelRollout's Job reads. `DOCUMENTS` describes them with the same
`KindInfo` as a kind, and `document_info` finds either; `api_methods()` covers both.

Modules are imported lazily: `python -m modelops_jobs --help` stays fast and the
image needs only what the requested method imports. `get` refuses a module whose
`run` is missing or not annotated with the kind's spec model, RunContext and
AlgorithmResult (the `Algorithm` protocol; mypy checks the same statically below).
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast, get_type_hints

from modelops_api import KINDS, KindInfo, kind_info
from modelops_api.base import ApiModel
from modelops_api.model_rollout import EVALUATION_KIND, EvaluationJobSpec
from modelops_api.status import JobResult
from modelops_jobs.errors import PermanentError

if TYPE_CHECKING:
    from modelops_jobs.context import AlgorithmResult, RunContext

SpecT_contra = TypeVar("SpecT_contra", bound=ApiModel, contravariant=True)


class Algorithm(Protocol[SpecT_contra]):
    """An algorithm's entry point: a module with this `run` (see modelops_jobs.context)."""

    def run(self, spec: SpecT_contra, ctx: RunContext) -> AlgorithmResult: ...


class Method(NamedTuple):
    kind: str
    method: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.method}"


_ALGORITHMS = "modelops_jobs.algorithms"

EVALUATION = KindInfo(
    kind=EVALUATION_KIND,
    plural="modelevaluations",
    short_names=(),
    spec=EvaluationJobSpec,
    status=JobResult,
    results=None,
    algorithm="evaluate",
    conditions=(),
)
"""The gate's evaluation Job document: not a CRD kind (no status of its own; the
ModelRollout reads its JobResult)."""

DOCUMENTS: tuple[KindInfo, ...] = (EVALUATION,)
"""Documents the runner runs that are not custom resources."""

METHODS: dict[Method, str] = {
    Method("PruneRetrain", "perp"): f"{_ALGORITHMS}.perp_job",
    Method("UnlearnRequest", "s3t"): f"{_ALGORITHMS}.unlearn_s3t",
    Method("UnlearnRequest", "ssd"): f"{_ALGORITHMS}.unlearn_ssd",
    Method("LoRATransfer", "translora"): f"{_ALGORITHMS}.translora_job",
    Method("ModelAdaptation", "cpt"): f"{_ALGORITHMS}.cpt_job",
    Method("ModelAdaptation", "s3t"): f"{_ALGORITHMS}.s3t_job",
    Method("ModelAdaptation", "lora"): f"{_ALGORITHMS}.lora_finetune",
    Method(EVALUATION_KIND, "evaluate"): f"{_ALGORITHMS}.evaluate",
}


def api_methods(kinds: tuple[KindInfo, ...] = KINDS + DOCUMENTS) -> set[Method]:
    """Every (kind, method) the API accepts, and the documents' methods."""
    return {Method(info.kind, m) for info in kinds for m in info.methods()}


def document_info(name: str) -> KindInfo:
    """The KindInfo of a kind or of a document kind; KeyError naming every choice."""
    for info in DOCUMENTS:
        if name == info.kind:
            return info
    try:
        return kind_info(name)
    except KeyError:
        choices = sorted([k.kind for k in KINDS] + [d.kind for d in DOCUMENTS])
        raise KeyError(f"unknown kind {name!r}; expected one of {choices}") from None


def method_of(info: KindInfo, spec: ApiModel) -> Method:
    """The registry key a validated spec asks for."""
    return Method(info.kind, info.method_of(spec))


def get(key: Method) -> Algorithm[Any]:
    """The entry point of a method; PermanentError when it is unknown, missing or malformed."""
    if key not in METHODS:
        known = sorted(m.method for m in METHODS if m.kind == key.kind)
        raise PermanentError(
            f"unknown method {key.method!r} for kind {key.kind}; expected one of {known}",
            "UnknownMethod",
        )
    module_name = METHODS[key]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise PermanentError(
                f"method {key} is not implemented in this jobs image", "NotImplemented"
            ) from exc
        raise
    problems = conformance(key, module)
    if problems:
        raise PermanentError(f"{module_name}: {'; '.join(problems)}", "NotImplemented")
    return cast("Algorithm[Any]", module)


def conformance(key: Method, module: ModuleType) -> list[str]:
    """What keeps `module.run` from being the `Algorithm` of `key` (empty: nothing)."""
    from modelops_jobs.context import AlgorithmResult, RunContext

    run = getattr(module, "run", None)
    if not callable(run):
        return ["no run()"]
    params = list(inspect.signature(run).parameters)
    if params != ["spec", "ctx"]:
        return [f"run{tuple(params)} must take (spec, ctx)"]
    hints = get_type_hints(run)
    expected = {"spec": document_info(key.kind).spec, "ctx": RunContext, "return": AlgorithmResult}
    return [
        f"run's {name} is {getattr(hints.get(name), '__name__', hints.get(name))},"
        f" not {want.__name__}"
        for name, want in expected.items()
        if hints.get(name) is not want
    ]


if TYPE_CHECKING:  # the same conformance, checked by mypy without importing torch at runtime
    from modelops_api import (
        LoRATransferSpec,
        ModelAdaptationSpec,
        PruneRetrainSpec,
        UnlearnRequestSpec,
    )
    from modelops_jobs.algorithms import (
        cpt_job,
        evaluate,
        lora_finetune,
        perp_job,
        s3t_job,
        translora_job,
        unlearn_s3t,
        unlearn_ssd,
    )

    _perp: Algorithm[PruneRetrainSpec] = perp_job
    _unlearn_s3t: Algorithm[UnlearnRequestSpec] = unlearn_s3t
    _unlearn_ssd: Algorithm[UnlearnRequestSpec] = unlearn_ssd
    _translora: Algorithm[LoRATransferSpec] = translora_job
    _cpt: Algorithm[ModelAdaptationSpec] = cpt_job
    _s3t: Algorithm[ModelAdaptationSpec] = s3t_job
    _lora: Algorithm[ModelAdaptationSpec] = lora_finetune
    _evaluate: Algorithm[EvaluationJobSpec] = evaluate
