"""The release kinds' models (ModelRollout, ModelVersion) accept what they should and
refuse the rest with a message naming the field: the pydantic side of every CEL rule
(tests/integration/test_release_kinds.py shows the API server agrees), at the limits."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from modelops_api.model_rollout import ModelRolloutSpec
from modelops_api.model_version import ModelVersionSpec, ModelVersionStatus
from modelops_api.rollout_status import ModelRolloutStatus
from modelops_api.validation import spec_error_message

EVAL = {"data": {"uri": "pvc://data/heldout.jsonl"}}
RULE = {"metric": "perplexity", "comparison": "LessOrEqual", "tolerance": 0.02}
BASE: dict[str, Any] = {
    "inferenceService": {"name": "bot"},
    "candidates": [{"kind": "ModelAdaptation", "name": "bot-adapt"}],
    "gate": {"rules": [RULE], "evaluation": EVAL},
    "canary": {
        "steps": [10, 50, 100],
        "interval": "5m",
        "analysis": {"prometheusUrl": "http://p:9090", "query": "max(x)", "max": 0.01},
    },
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with the dotted `path` set to `value` (None deletes it)."""
    spec = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


def absolute(threshold: float) -> dict[str, Any]:
    return {
        "metric": "perplexity",
        "comparison": "LessOrEqual",
        "baseline": "Absolute",
        "threshold": threshold,
    }


ACCEPTED = [
    ("base", BASE),
    ("defaults-only", {"inferenceService": {"name": "b"}, "candidates": BASE["candidates"]}),
    ("one-step-100", with_("canary.steps", [100])),
    ("ten-steps", with_("canary.steps", [1, 2, 3, 4, 5, 6, 7, 8, 9, 100])),
    ("interval-zero", with_("canary.interval", "0s")),
    ("interval-max", with_("canary.interval", "168h")),
    ("absolute-rule-no-evaluation", with_("gate", {"rules": [absolute(12.5)]})),
    ("sixteen-rules", with_("gate.rules", [RULE] * 16)),
    ("min-equals-max", with_("canary.analysis", {**BASE["canary"]["analysis"], "min": 0.01})),
    ("name-63", with_("inferenceService.name", "a" * 63)),
]
REFUSED = [
    ("steps-10-10-100", with_("canary.steps", [10, 10, 100]), "strictly increasing"),
    ("steps-50-10-100", with_("canary.steps", [50, 10, 100]), "strictly increasing"),
    ("steps-10-50-no-100", with_("canary.steps", [10, 50]), "the last step must be 100"),
    ("steps-empty", with_("canary.steps", []), "canary.steps"),
    ("steps-zero", with_("canary.steps", [0, 100]), "canary.steps.0"),
    ("steps-over-100", with_("canary.steps", [10, 101]), "canary.steps.1"),
    (
        "eleven-steps",
        with_("canary.steps", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100]),
        "canary.steps",
    ),
    ("seventeen-rules", with_("gate.rules", [RULE] * 17), "gate.rules"),
    ("ten-thousand-rules", with_("gate.rules", [RULE] * 10_000), "gate.rules"),
    ("serving-rule-no-evaluation", with_("gate.evaluation", None), "evaluation is required"),
    ("absolute-no-threshold", with_("gate.rules", [{**RULE, "baseline": "Absolute"}]), "threshold"),
    ("serving-with-threshold", with_("gate.rules", [{**RULE, "threshold": 3.0}]), "threshold"),
    ("threshold-nan", with_("gate", {"rules": [absolute(math.nan)]}), "threshold"),
    ("threshold-inf", with_("gate", {"rules": [absolute(math.inf)]}), "threshold"),
    ("threshold-minus-inf", with_("gate", {"rules": [absolute(-math.inf)]}), "threshold"),
    ("tolerance-nan", with_("gate.rules", [{**RULE, "tolerance": math.nan}]), "tolerance"),
    ("tolerance-negative", with_("gate.rules", [{**RULE, "tolerance": -0.1}]), "tolerance"),
    ("interval-overflow", with_("canary.interval", "169h"), "interval"),
    ("interval-huge-digits", with_("canary.interval", "9999999h"), "interval"),
    ("interval-not-a-duration", with_("canary.interval", "5 minutes"), "interval"),
    (
        "analysis-interval-zero",
        with_("canary.analysis", {**BASE["canary"]["analysis"], "interval": "0s"}),
        "interval",
    ),
    (
        "analysis-no-bounds",
        with_("canary.analysis", {"prometheusUrl": "http://p:9090", "query": "x"}),
        "set min, max or both",
    ),
    (
        "analysis-min-over-max",
        with_("canary.analysis", {**BASE["canary"]["analysis"], "min": 0.5}),
        "min must not exceed max",
    ),
    (
        "analysis-max-nan",
        with_("canary.analysis", {**BASE["canary"]["analysis"], "max": math.nan}),
        "canary.analysis.max",
    ),
    (
        "analysis-two-auths",
        with_(
            "canary.analysis",
            {
                **BASE["canary"]["analysis"],
                "bearerTokenSecretRef": {"name": "t", "key": "k"},
                "basicAuth": {
                    "username": {"name": "u", "key": "k"},
                    "password": {"name": "u", "key": "p"},
                },
            },
        ),
        "at most one",
    ),
    (
        "analysis-url-not-http",
        with_("canary.analysis", {**BASE["canary"]["analysis"], "prometheusUrl": "file:///x"}),
        "prometheusUrl",
    ),
    ("isvc-name-64", with_("inferenceService.name", "a" * 64), "inferenceService.name"),
    ("isvc-name-253", with_("inferenceService.name", "a" * 253), "inferenceService.name"),
    ("isvc-name-dots", with_("inferenceService.name", "a.b"), "inferenceService.name"),
    ("no-candidates", with_("candidates", []), "candidates"),
    ("duplicate-candidates", with_("candidates", BASE["candidates"] * 2), "twice"),
    ("seventeen-candidates", with_("candidates", BASE["candidates"] * 17), "candidates"),
    ("candidate-not-a-kind", with_("candidates", [{"kind": "Job", "name": "x"}]), "kind"),
    ("unknown-field", with_("canary.weight", 3), "canary.weight"),
    ("max-delay-overflow", with_("unlearning", {"maxDelay": "721h"}), "maxDelay"),
    ("registry-name-space", with_("registry", {"modelName": "a b"}), "registry.modelName"),
    (
        "eval-job-processes-ne-gpus",
        with_(
            "evaluationJob",
            {"resources": {"gpu": {"count": 2}}, "distribution": {"processesPerNode": 3}},
        ),
        "processesPerNode",
    ),
]


@pytest.mark.parametrize(("spec",), [(c[1],) for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_rollout_spec_accepted(spec):
    parsed = ModelRolloutSpec.model_validate(spec)
    assert ModelRolloutSpec.model_validate(parsed.to_wire()) == parsed


@pytest.mark.parametrize(("spec", "needle"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_rollout_spec_refused_naming_the_field(spec, needle):
    with pytest.raises(ValidationError) as err:
        ModelRolloutSpec.model_validate(spec)
    message = spec_error_message(err.value)
    assert needle in message or needle in str(err.value), message


def test_rollout_defaults():
    spec = ModelRolloutSpec.model_validate(
        {"inferenceService": {"name": "b"}, "candidates": BASE["candidates"]}
    )
    assert spec.canary.steps == [10, 50, 100] and spec.canary.interval == "5m"
    assert spec.gate.rules == [] and spec.require_approval is False
    assert spec.unlearning.max_delay == "24h" and spec.registry is None


VERSION: dict[str, Any] = {
    "uri": "s3://models/bot/run-0003",
    "manifestDigest": "sha256:" + "a" * 64,
    "source": {"kind": "ModelAdaptation", "name": "bot-adapt", "uid": "u-1", "run": 3},
    "parents": [{"role": "base", "uri": "s3://models/base", "digest": "sha256:" + "b" * 64}],
    "datasets": [{"role": "train", "uri": "s3://data/new.jsonl"}],
    "metrics": {"perplexity": 12.5},
    "createdTime": "2026-12-02T04:00:00Z",
}


def version_with(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(VERSION), **changes}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (version_with(metrics={"perplexity": math.nan}), "metrics"),
        (version_with(metrics={"perplexity": math.inf}), "metrics"),
        (version_with(metrics={"1bad": 1.0}), "metrics"),
        (version_with(metrics={f"m{i}": 1.0 for i in range(65)}), "metrics"),
        (version_with(parents=VERSION["parents"] * 9), "parents"),
        (version_with(uri="x" * 1025), "uri"),
        (version_with(source={**VERSION["source"], "kind": "ModelRollout"}), "source.kind"),
        (version_with(source={**VERSION["source"], "run": 0}), "source.run"),
        (version_with(createdTime="yesterday"), "createdTime"),
    ],
    ids=[
        "metric-nan",
        "metric-inf",
        "metric-name",
        "65-metrics",
        "9-parents",
        "uri-1025",
        "source-not-a-job-kind",
        "run-zero",
        "time-not-rfc3339",
    ],
)
def test_version_spec_refused(spec, needle):
    with pytest.raises(ValidationError) as err:
        ModelVersionSpec.model_validate(spec)
    assert needle in spec_error_message(err.value)


def test_version_spec_and_status_round_trip():
    spec = ModelVersionSpec.model_validate(VERSION)
    assert ModelVersionSpec.model_validate(spec.to_wire()) == spec
    status = ModelVersionStatus.model_validate({})
    assert status.phase == "Recorded"
    assert ModelRolloutStatus.model_validate({}).phase == "Idle"


def steps_valid(steps: list[int]) -> bool:
    """The reference: 1 to 10 steps, each 1..100, strictly increasing, ending at 100."""
    return (
        1 <= len(steps) <= 10
        and all(1 <= s <= 100 for s in steps)
        and all(a < b for a, b in itertools.pairwise(steps))
        and steps[-1] == 100
    )


STEP_LISTS = st.one_of(
    st.lists(st.integers(-2, 102), max_size=12),
    # Near-valid lists: sorted samples of 1..100, then 100 (repeats make some invalid).
    st.lists(st.integers(1, 100), min_size=1, max_size=11).map(lambda x: [*sorted(x), 100]),
)


@settings(max_examples=400, deadline=None)
@given(steps=STEP_LISTS)
def test_canary_steps_match_the_reference(steps):
    """The pydantic twin of the steps' schema bounds and CEL rules accepts exactly the
    lists the reference does (tests/integration/test_release_kinds.py: the API server)."""
    try:
        ModelRolloutSpec.model_validate(with_("canary.steps", steps))
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == steps_valid(steps), steps
