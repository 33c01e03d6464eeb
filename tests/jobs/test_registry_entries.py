"""Every registry entry imports and meets the `Algorithm` protocol at run time (mypy
checks the same statically), and the conformance check catches each way to miss it."""

import types
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelops_api import LoRATransferSpec, ModelAdaptationSpec, UnlearnRequestSpec
from modelops_jobs import registry, runner
from modelops_jobs.context import AlgorithmResult, RunContext, RunInfo
from modelops_jobs.errors import PermanentError
from modelops_jobs.registry import Method


@pytest.mark.parametrize("key", sorted(registry.METHODS), ids=str)
def test_every_entry_meets_the_protocol(key: Method) -> None:
    module = registry.get(key)
    assert registry.conformance(key, module) == []  # type: ignore[arg-type]


def _module(run: Any) -> types.ModuleType:
    module = types.ModuleType("fake_algorithm")
    if run is not None:
        module.run = run  # type: ignore[attr-defined]
    return module


def untyped(spec: Any, ctx: RunContext) -> AlgorithmResult:
    return AlgorithmResult()


def wrong_spec(spec: LoRATransferSpec, ctx: RunContext) -> AlgorithmResult:
    return AlgorithmResult()


def wrong_ctx(spec: ModelAdaptationSpec, ctx: dict) -> AlgorithmResult:
    return AlgorithmResult()


def wrong_return(spec: ModelAdaptationSpec, ctx: RunContext) -> dict:
    return {}


def three_args(spec: ModelAdaptationSpec, ctx: RunContext, extra: int) -> AlgorithmResult:
    return AlgorithmResult()


def good(spec: ModelAdaptationSpec, ctx: RunContext) -> AlgorithmResult:
    return AlgorithmResult()


CASES = [
    ("no-run", None, "no run()"),
    ("not-callable", 3, "no run()"),
    ("spec-any", untyped, "run's spec is Any, not ModelAdaptationSpec"),
    ("spec-other-kind", wrong_spec, "run's spec is LoRATransferSpec, not ModelAdaptationSpec"),
    ("ctx-dict", wrong_ctx, "run's ctx is dict, not RunContext"),
    ("returns-dict", wrong_return, "run's return is dict, not AlgorithmResult"),
    ("three-args", three_args, "must take (spec, ctx)"),
]


@pytest.mark.parametrize(("run", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_conformance_names_what_is_wrong(run: Any, problem: str) -> None:
    problems = registry.conformance(Method("ModelAdaptation", "cpt"), _module(run))
    assert any(problem in p for p in problems), problems


def test_conformance_accepts_a_well_typed_run() -> None:
    assert registry.conformance(Method("ModelAdaptation", "cpt"), _module(good)) == []


def test_a_malformed_entry_is_refused_before_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Method("UnlearnRequest", "ssd")
    monkeypatch.setitem(registry.METHODS, key, "modelops_jobs.errors")  # a module without run
    with pytest.raises(PermanentError) as err:
        registry.get(key)
    assert err.value.reason == "NotImplemented" and "no run()" in err.value.message


def test_a_missing_module_is_not_implemented(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Method("UnlearnRequest", "ssd")
    monkeypatch.setitem(registry.METHODS, key, "modelops_jobs.algorithms.not_there")
    with pytest.raises(PermanentError) as err:
        registry.get(key)
    assert err.value.reason == "NotImplemented" and "UnlearnRequest/ssd" in err.value.message


def test_the_runner_runs_the_method_the_spec_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner asks the registry by (kind, spec.method): here ssd, not s3t."""
    seen: list[tuple[Method, Any]] = []

    def fake_get(key: Method) -> Any:
        def run(spec: UnlearnRequestSpec, ctx: RunContext) -> AlgorithmResult:
            seen.append((key, ctx.run))
            return AlgorithmResult(results={"deleted_samples": 0, "seconds": 0.0})

        return _module(run)

    monkeypatch.setattr(registry, "get", fake_get)
    document = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "UnlearnRequest",
        "metadata": {"name": "forget"},
        "spec": {"method": "ssd", "model": {"uri": "file:///m"}, "sampleIds": ["a"]},
    }
    outcome = runner.execute(document)
    assert outcome.result.ok, outcome.result
    assert seen == [(Method("UnlearnRequest", "ssd"), RunInfo())]


RUNS = [
    ("absent", None, {}),
    ("full", {"number": 3, "trigger": "drift", "parent": "file:///v"}, None),
    ("number-text", {"number": "2"}, "run.number: '2'"),
    ("number-zero", {"number": 0}, "run.number: 0"),
    ("number-bool", {"number": True}, "run.number: True"),
    ("number-float", {"number": 2.0}, "run.number: 2.0"),
    ("parent-number", {"number": 1, "parent": 7}, "run.parent: 7"),
    ("trigger-list", {"trigger": ["x"]}, "run.trigger: ['x']"),
    ("not-object", ["number"], "run: expected an object"),
    ("empty-list", [], "run: expected an object"),
    ("zero", 0, "run: expected an object"),
]


@pytest.mark.parametrize(("run", "expected"), [r[1:] for r in RUNS], ids=[r[0] for r in RUNS])
def test_run_info_is_a_declared_checked_field(run: Any, expected: Any) -> None:
    document = {} if run is None else {"run": run}
    if isinstance(expected, str):
        with pytest.raises(PermanentError) as err:
            runner.run_info(document)
        assert err.value.reason == "InvalidSpec" and err.value.message.startswith(expected)
    else:
        assert runner.run_info(document) == (run if expected is None else expected)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
RUN_VALUES = st.one_of(
    JSON,
    st.dictionaries(st.sampled_from(["number", "trigger", "parent", "other"]), JSON),
    st.fixed_dictionaries(
        {"number": st.integers(min_value=-(2**70), max_value=2**70)},
        optional={"trigger": st.text(max_size=300), "parent": st.text(max_size=300)},
    ),
)


@settings(max_examples=300, deadline=None)
@given(run=RUN_VALUES)
def test_run_info_accepts_or_names_the_field_never_crashes(run: Any) -> None:
    """Any JSON for `run`: a RunInfo holding only checked values, or InvalidSpec naming it."""
    try:
        info = runner.run_info({"run": run})
    except PermanentError as exc:
        assert exc.reason == "InvalidSpec" and exc.message.startswith("run")
        return
    assert run is None or isinstance(run, dict), "a run that is no object is refused"
    assert set(info) <= {"number", "trigger", "parent"}
    assert "number" not in info or (type(info["number"]) is int and info["number"] >= 1)
    assert all(isinstance(info[k], str) for k in ("trigger", "parent") if k in info)  # type: ignore[literal-required]
