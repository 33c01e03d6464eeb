"""The evaluation gate: limits with tolerance (negative baselines too), absolute
thresholds, never a pass on missing or non-finite data, messages naming the metric and
the margin."""

import math
from datetime import UTC, datetime

import pytest

from modelops_api.model_rollout import Gate, GateEvaluation, GateRule
from modelops_operator.reconcile.gate import NO_BASELINE, evaluate_gate, failure_summary, rule_limit

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)

HELD_OUT = GateEvaluation.model_validate({"data": {"uri": "pvc://d/eval"}})


def rule(metric="perplexity", comparison="LessOrEqual", tolerance=0.0, threshold=None):
    baseline = "Absolute" if threshold is not None else "Serving"
    return GateRule(
        metric=metric,
        comparison=comparison,
        baseline=baseline,
        tolerance=tolerance,
        threshold=threshold,
    )


@pytest.mark.parametrize(
    ("comparison", "baseline", "tolerance", "limit"),
    [
        ("LessOrEqual", 30.0, 0.02, 30.6),
        ("GreaterOrEqual", 0.8, 0.1, 0.72),
        ("LessOrEqual", -2.0, 0.1, -1.8),
        ("GreaterOrEqual", -2.0, 0.1, -2.2),
        ("LessOrEqual", 0.0, 0.5, 0.0),
        ("LessOrEqual", 30.0, 0.0, 30.0),
    ],
    ids=["le", "ge", "le-negative", "ge-negative", "zero-baseline", "no-tolerance"],
)
def test_serving_limits(comparison, baseline, tolerance, limit):
    assert rule_limit(rule(comparison=comparison, tolerance=tolerance), baseline) == pytest.approx(
        limit
    )


CASES = [
    # (rules, candidate, baseline, passed, message fragments)
    (
        [rule(tolerance=0.02)],
        {"perplexity": 31.2},
        {"perplexity": 30.0},
        False,
        ["perplexity 31.2 > limit 30.6 (serving 30 + 2%): worse by 4%"],
    ),
    (
        [rule(tolerance=0.02)],
        {"perplexity": 30.5},
        {"perplexity": 30.0},
        True,
        ["30.5 <= limit 30.6"],
    ),
    (
        [rule("taskScore", "GreaterOrEqual", 0.05)],
        {"taskScore": 0.7},
        {"taskScore": 0.8},
        False,
        ["taskScore 0.7 < limit 0.76 (serving 0.8 - 5%): worse by 12.5%"],
    ),
    (
        [rule("forgetAccuracy", threshold=0.2)],
        {"forgetAccuracy": 0.3},
        None,
        False,
        ["forgetAccuracy 0.3 > threshold 0.2: past the threshold by 0.1"],
    ),
    (
        [rule("forgetAccuracy", threshold=0.2)],
        {"forgetAccuracy": 0.2},
        None,
        True,
        ["<= threshold 0.2"],
    ),
    ([rule()], {"perplexity": 99.0}, None, True, [NO_BASELINE]),
    ([rule()], {}, {"perplexity": 30.0}, False, ["the candidate reported no value"]),
    ([rule()], {"perplexity": 30.0}, {}, False, ["the serving version reported no value"]),
    ([rule()], {"perplexity": math.nan}, {"perplexity": 30.0}, False, ["not a finite number"]),
    ([rule()], {"perplexity": 30.0}, {"perplexity": math.inf}, False, ["not a finite number"]),
    ([rule(threshold=40.0)], {"perplexity": -math.inf}, None, False, ["not a finite number"]),
    ([rule()], {"perplexity": 0.5}, {"perplexity": 0.0}, False, ["worse by 0.5"]),
    ([], {}, None, True, []),
]


@pytest.mark.parametrize(
    ("rules", "candidate", "baseline", "passed", "fragments"),
    CASES,
    ids=[
        "worse-than-tolerance",
        "within-tolerance",
        "greater-or-equal-worse",
        "absolute-fails",
        "absolute-at-threshold",
        "no-baseline-passes",
        "candidate-missing",
        "baseline-missing",
        "candidate-nan",
        "baseline-inf",
        "candidate-minus-inf",
        "zero-baseline-absolute-margin",
        "no-rules",
    ],
)
def test_evaluate_gate(rules, candidate, baseline, passed, fragments):
    ev = evaluate_gate(
        Gate(rules=rules, evaluation=HELD_OUT), candidate, baseline, NOW, "v1", "pvc://d/eval"
    )
    assert ev.passed is passed
    assert ev.baseline_version == "v1" and ev.data_uri == "pvc://d/eval" and ev.time == NOW
    messages = " | ".join(c.message for c in ev.checks)
    for fragment in fragments:
        assert fragment in messages
    if not passed:
        assert rules[0].metric in failure_summary(ev)
    # the verdict is storable: finite numbers only
    ev.model_validate(ev.model_dump())


def test_overflowing_limit_is_not_stored_but_still_compared():
    ev = evaluate_gate(
        Gate(rules=[rule(tolerance=10.0)], evaluation=HELD_OUT),
        {"perplexity": 1e308},
        {"perplexity": 1e308},
        NOW,
    )
    assert ev.passed and ev.checks[0].limit is None
