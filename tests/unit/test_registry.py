"""The method registry against the API: every method the API accepts has exactly one
entry point, the method is read from the spec, and an unknown one is a clear error.

The registry module must not import torch (the unit tier and `--help` stay light), so
these tests run without it; tests/jobs/test_registry_entries.py imports every entry.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelops_api import KINDS, kind_info
from modelops_api.model_rollout import EVALUATION_KIND, EvaluationJobSpec
from modelops_jobs import registry
from modelops_jobs.errors import PermanentError
from modelops_jobs.registry import Method

# What the API's literals say today, written out so that a vacuous methods() fails here.
API_METHODS = [
    ("PruneRetrain", ("perp",)),
    ("UnlearnRequest", ("s3t", "ssd")),
    ("LoRATransfer", ("translora",)),
    ("ModelAdaptation", ("cpt", "s3t", "lora")),
]


def test_registry_keys_equal_the_api_methods_exactly() -> None:
    assert set(registry.METHODS) == registry.api_methods()


def test_the_evaluation_is_a_document_not_a_crd_kind() -> None:
    """The gate's evaluation Job runs like a kind (registry key, spec model) but is no
    custom resource: the CRDs and docs iterate KINDS, which does not hold it."""
    assert registry.DOCUMENTS == (registry.EVALUATION,)
    assert EVALUATION_KIND not in {k.kind for k in KINDS}
    assert registry.api_methods(KINDS) | {Method(EVALUATION_KIND, "evaluate")} == set(
        registry.METHODS
    )
    info = registry.document_info(EVALUATION_KIND)
    assert info.spec is EvaluationJobSpec and info.methods() == ("evaluate",)
    assert registry.document_info("PruneRetrain") is kind_info("PruneRetrain")


def test_an_unknown_document_kind_names_every_choice() -> None:
    with pytest.raises(KeyError) as err:
        registry.document_info("ModelEval")
    assert "'ModelEval'" in str(err.value) and "'ModelEvaluation'" in str(err.value)
    assert "'PruneRetrain'" in str(err.value)


@pytest.mark.parametrize(("kind", "methods"), API_METHODS, ids=[k for k, _ in API_METHODS])
def test_methods_are_read_from_the_spec_models(kind: str, methods: tuple[str, ...]) -> None:
    assert kind_info(kind).methods() == methods


def test_every_kind_is_covered() -> None:
    assert {k.kind for k in KINDS} == {kind for kind, _ in API_METHODS}


@pytest.mark.parametrize(
    ("kind", "fields", "expected"),
    [
        ("UnlearnRequest", {"method": "ssd"}, "ssd"),
        ("UnlearnRequest", {"method": "s3t"}, "s3t"),
        ("ModelAdaptation", {"strategy": "s3t"}, "s3t"),
        ("ModelAdaptation", {"strategy": "lora"}, "lora"),
        ("PruneRetrain", {}, "perp"),
        ("LoRATransfer", {}, "translora"),
    ],
    ids=["unlearn-ssd", "unlearn-s3t", "adapt-s3t", "adapt-lora", "perp", "translora"],
)
def test_method_of_reads_the_method_field(kind: str, fields: dict, expected: str) -> None:
    info = kind_info(kind)
    key = registry.method_of(info, info.spec.model_construct(**fields))
    assert key == Method(kind, expected) and key in registry.METHODS


def test_same_method_name_in_two_kinds_runs_different_modules() -> None:
    """s3t unlearning deactivates slices; s3t adaptation trains shards."""
    unlearn = registry.METHODS[Method("UnlearnRequest", "s3t")]
    adapt = registry.METHODS[Method("ModelAdaptation", "s3t")]
    assert unlearn != adapt


@pytest.mark.parametrize(
    ("key", "choices"),
    [
        (Method("UnlearnRequest", "sisa"), "['s3t', 'ssd']"),
        (Method("ModelAdaptation", "full"), "['cpt', 'lora', 's3t']"),
        (Method("Nope", "perp"), "[]"),
        (Method("PruneRetrain", ""), "['perp']"),
        (Method("ModelEvaluation", "score"), "['evaluate']"),
    ],
    ids=["unlearn-sisa", "adapt-full", "unknown-kind", "empty-method", "evaluation-score"],
)
def test_unknown_method_is_a_permanent_error_naming_the_choices(key: Method, choices: str) -> None:
    with pytest.raises(PermanentError) as err:
        registry.get(key)
    assert err.value.reason == "UnknownMethod"
    assert repr(key.method) in err.value.message and key.kind in err.value.message
    assert err.value.message.endswith(f"expected one of {choices}")


def test_nothing_but_the_registry_reads_a_method_field() -> None:
    """Dispatch happens once, by key: no `if spec.method == ...` / `spec.strategy` in the jobs."""
    fields = {k.method_field for k in KINDS if k.method_field}
    assert fields == {"method", "strategy"}
    jobs = Path(registry.__file__).parent
    reads = [
        f"{path.relative_to(jobs)}:{node.lineno}"
        for path in sorted(jobs.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr in fields
        and isinstance(node.value, ast.Name)
        and node.value.id == "spec"
    ]
    assert reads == []


def test_registry_imports_no_torch() -> None:
    code = (
        "import sys, modelops_jobs.registry as r; r.api_methods();"
        " print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
