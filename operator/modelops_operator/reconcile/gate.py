"""The evaluation gate: a candidate's metrics against the declarative rules.

Pure: (rules, candidate metrics, baseline metrics, now) -> `Evaluation`. A rule never
passes on missing data: a metric the candidate (or, for a Serving rule, the baseline)
did not report, or reported as NaN/±Inf, fails the rule with a message saying so.

Limits, for a Serving rule with tolerance t against the serving version's value b:
LessOrEqual (lower is better) allows b + |b|·t, GreaterOrEqual allows b − |b|·t. For
b ≥ 0 these are b·(1+t) and b·(1−t); with |b| the tolerance always widens the bound
in the allowed direction, for a negative baseline too (a log-likelihood of −2.0 with 10%
allows −2.2 under GreaterOrEqual, where b·(1−t) would demand −1.8, a stricter bound).
An Absolute rule's limit is its threshold.

With nothing in service (no baseline version), a Serving rule passes with the message
"no version in service: nothing to compare with": the first version of a channel has
nothing it could be worse than; Absolute rules still apply to it.
"""

import math
from collections.abc import Mapping
from datetime import datetime

from modelops_api.model_rollout import Gate, GateRule
from modelops_api.model_version import Evaluation, MetricCheck

NO_BASELINE = "no version in service: nothing to compare with"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _finite(value: float | None) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _missing(values: Mapping[str, float], metric: str, whose: str) -> str | None:
    """Why `metric` cannot be checked for `whose` (None: it can)."""
    if metric not in values or values[metric] is None:
        return f"{metric}: the {whose} reported no value (a rule never passes on missing data)"
    if _finite(values[metric]) is None:
        return f"{metric}: the {whose}'s value is {values[metric]} (not a finite number)"
    return None


def rule_limit(rule: GateRule, baseline: float | None) -> float:
    """The bound the candidate must meet (see the module docstring)."""
    if rule.baseline == "Absolute":
        assert rule.threshold is not None  # the model (and the CRD) require it
        return rule.threshold
    assert baseline is not None
    slack = abs(baseline) * rule.tolerance
    return baseline + slack if rule.comparison == "LessOrEqual" else baseline - slack


def _margin(rule: GateRule, value: float, baseline: float | None, limit: float) -> str:
    """How much worse than the baseline (relative) or past the threshold (absolute)."""
    worse = value - (baseline if baseline is not None else limit)
    if rule.comparison == "GreaterOrEqual":
        worse = -worse
    if baseline is not None and baseline != 0:
        return f"worse by {_fmt(100 * worse / abs(baseline))}%"
    return f"{'worse' if baseline is not None else 'past the threshold'} by {_fmt(worse)}"


def _describe(rule: GateRule, baseline: float | None, limit: float) -> str:
    if rule.baseline == "Absolute":
        return f"threshold {_fmt(limit)}"
    sign = "+" if rule.comparison == "LessOrEqual" else "-"
    return f"limit {_fmt(limit)} (serving {_fmt(baseline or 0.0)} {sign} {_fmt(100 * rule.tolerance)}%)"


def check_rule(
    rule: GateRule, candidate: Mapping[str, float], baseline: Mapping[str, float] | None
) -> MetricCheck:
    """One rule's verdict, with a message naming the metric and the margin."""
    base = {"metric": rule.metric, "comparison": rule.comparison}
    why = _missing(candidate, rule.metric, "candidate")
    serving = rule.baseline == "Serving"
    if why is None and serving and baseline is not None:
        why = _missing(baseline, rule.metric, "serving version")
    b = _finite(baseline.get(rule.metric)) if serving and baseline is not None else None
    c = _finite(candidate.get(rule.metric))
    if why is not None:
        return MetricCheck(**base, candidate=c, baseline=b, passed=False, message=why)
    assert c is not None
    if serving and baseline is None:
        return MetricCheck(**base, candidate=c, passed=True, message=NO_BASELINE)
    limit = rule_limit(rule, b)
    ok = c <= limit if rule.comparison == "LessOrEqual" else c >= limit
    op = ("<=" if ok else ">") if rule.comparison == "LessOrEqual" else (">=" if ok else "<")
    message = f"{rule.metric} {_fmt(c)} {op} {_describe(rule, b, limit)}"
    if not ok:
        message += f": {_margin(rule, c, b, limit)}"
    return MetricCheck(
        **base, candidate=c, baseline=b, limit=_finite(limit), passed=ok, message=message[:512]
    )


def evaluate_gate(
    gate: Gate,
    candidate: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    now: datetime,
    baseline_version: str | None = None,
    data_uri: str | None = None,
) -> Evaluation:
    """Every rule's verdict; the gate passes when all hold (no rules: it passes)."""
    checks = [check_rule(rule, candidate, baseline) for rule in gate.rules]
    return Evaluation(
        passed=all(c.passed for c in checks),
        checks=checks,
        baseline_version=baseline_version,
        data_uri=data_uri,
        time=now,
    )


def failure_summary(evaluation: Evaluation) -> str:
    """The failed rules' messages, for conditions, Events and the version's status."""
    failed = [c.message for c in evaluation.checks if not c.passed]
    return "; ".join(failed) if failed else "every rule held"
