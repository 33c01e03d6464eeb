"""Status writes say what they mean (issue 11): a cleared field is sent as an explicit
null in the JSON merge patch, so it is removed; a sub-object is replaced whole; the
result always serialises as strict JSON and validates against the kind's status model.

The merge patch is applied with RFC 7386 semantics (`apply_merge_patch`), the API
server's own rule for status patches."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from tests.drift_cases import UNIT_DRIFT, drift_adaptation

from modelops_api.kinds import kind_info
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import CreateJob, PatchStatus, RecordEvent
from modelops_operator.reconcile.observed import JobView, Observed, ResourceView
from modelops_operator.reconcile.status_patch import apply_merge_patch, status_patch

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
DRIFT = UNIT_DRIFT
SPEC = drift_adaptation(DRIFT)

# RFC 7386 appendix A, as (target, patch, result).
RFC_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC_CASES, ids=range(len(RFC_CASES)))
def test_apply_merge_patch_follows_rfc_7386(target, patch, expected):
    assert apply_merge_patch(target, patch) == expected


STATUS_PATCH_CASES = [
    ("unchanged", {"a": 1}, {"a": 1}, {}),
    ("cleared-top-level", {"a": 1, "b": 2}, {"a": None}, {"a": None}),
    ("clear-absent-is-noop", {"b": 2}, {"a": None}, {}),
    ("unmanaged-kept", {"a": 1, "b": 2}, {"a": 3}, {"a": 3}),
    (
        "sub-object-replaced-whole",
        {"drift": {"pendingSince": "t", "lastError": "e", "armed": True}},
        {"drift": {"armed": True}},
        {"drift": {"pendingSince": None, "lastError": None}},
    ),
    ("sub-object-removed", {"drift": {"armed": True}}, {"drift": None}, {"drift": None}),
    ("list-replaced-without-nulls", {"l": [1]}, {"l": [{"x": 1, "y": None}]}, {"l": [{"x": 1}]}),
    ("new-sub-object-without-nulls", {}, {"d": {"x": 1, "y": None}}, {"d": {"x": 1}}),
]


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [c[1:] for c in STATUS_PATCH_CASES],
    ids=[c[0] for c in STATUS_PATCH_CASES],
)
def test_status_patch_sends_explicit_nulls(current, desired, expected):
    patch = status_patch(current, desired)
    assert patch == expected
    merged = apply_merge_patch(current, patch)
    for key, value in desired.items():
        if value is None:
            assert key not in merged
        elif isinstance(value, dict):
            assert merged[key] == {k: v for k, v in value.items() if v is not None}


def resource(status, spec=None, generation=1):
    return ResourceView(
        "ModelAdaptation",
        "r",
        "ns",
        "uid-1",
        generation,
        spec or SPEC,
        status,
        {},
        NOW - timedelta(minutes=5),
    )


def step(status, outcome=None, jobs=None, spec=None, now=NOW):
    """Plan once and return (actions, the stored status after the patch)."""
    actions = plan(Observed(resource(status, spec), jobs=jobs or {}, drift=outcome), CONFIG, now)
    for action in actions:
        if isinstance(action, PatchStatus):
            json.dumps(action.patch, allow_nan=False)
            status = apply_merge_patch(status, action.patch)
    kind_info("ModelAdaptation").status.model_validate(status)
    return actions, status


def value(seconds, v):
    return QueryOutcome(NOW + timedelta(seconds=seconds), value=v)


def test_outage_in_a_pending_window_leaves_no_stale_fields_and_starts_nothing():
    """issue 11: pendingSince, lastError and DriftDetected=Pending survived an outage;
    the first good query after it started a run with 0 s of `for` elapsed."""
    _, status = step({}, value(0, 0.9))
    assert status["drift"]["pendingSince"]
    error = QueryOutcome(NOW + timedelta(seconds=5), error="down", error_reason="Unreachable")
    _, status = step(status, error, now=NOW + timedelta(seconds=5))
    assert "pendingSince" not in status["drift"] and status["drift"]["lastError"] == "down"
    actions, status = step(status, value(11, 0.9), now=NOW + timedelta(seconds=11))
    assert not any(isinstance(a, CreateJob) for a in actions), "0 s of `for` had elapsed"
    assert "lastError" not in status["drift"] and "lastErrorReason" not in status["drift"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["DriftDetected"]["reason"] == "Pending"
    assert status["drift"]["pendingSince"] == "2026-11-26T12:00:11Z"


def test_rearm_then_fire_respects_for_through_the_status_round_trip():
    """issue 11: a run 2.4 s after the re-arm with `for: 10s` (stale pendingSince)."""
    status: dict = {}
    fired = []
    timeline = [(0, 0.9), (10, 0.9), (11, 0.9), (12, 0.2), (60, 0.9), (62.4, 0.9), (70, 0.9)]
    jobs: dict = {}
    for seconds, v in timeline:
        actions, status = step(
            status, value(seconds, v), jobs, now=NOW + timedelta(seconds=seconds)
        )
        if any(isinstance(a, CreateJob) for a in actions):
            fired.append(seconds)
            name = f"r-adapt-{status['runCount']}"
            jobs = {name: JobView(name, conditions={"Complete": ("True", "", "")})}
    assert fired == [10, 70]


def test_nonfinite_value_is_reported_and_the_write_is_strict_json():
    """issue 11: a +Inf value made the status patch invalid JSON, and evaluation stopped."""
    actions, status = step({}, value(0, math.inf))
    assert status["drift"]["lastValueText"] == "+Inf" and "lastValue" not in status["drift"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["PrometheusReachable"]["reason"] == "NonFiniteValue"
    assert conditions["DriftDetected"]["status"] == "Unknown"
    assert conditions["Ready"]["status"] == "False"
    assert [a.reason for a in actions if isinstance(a, RecordEvent)] == ["NonFiniteValue"]
    again, status = step(status, value(1, math.inf), now=NOW + timedelta(seconds=1))
    assert not [a for a in again if isinstance(a, RecordEvent)], "one Event per failure class"
    assert status["drift"]["consecutiveErrors"] == 2
    _, status = step(status, value(2, 0.1), now=NOW + timedelta(seconds=2))
    assert status["drift"]["lastValue"] == 0.1 and "consecutiveErrors" in status["drift"]
    assert {c["type"]: c for c in status["conditions"]}["Ready"]["status"] == "True"


def test_switching_trigger_type_clears_drift_state_and_conditions():
    _, status = step({}, value(0, 0.9))
    manual = {**SPEC, "trigger": {"type": "manual", "runOnCreate": False}}
    _, status = step(status, spec=manual)
    assert "drift" not in status
    assert not {"DriftDetected", "PrometheusReachable"} & {c["type"] for c in status["conditions"]}


def test_schedule_time_cleared_when_trigger_is_no_longer_a_schedule():
    schedule = {**SPEC, "trigger": {"type": "schedule", "schedule": "0 * * * *"}}
    _, status = step({"runCount": 1}, spec=schedule)
    assert status["nextScheduleTime"]
    manual = {**SPEC, "trigger": {"type": "manual", "runOnCreate": False}}
    _, status = step(status, spec=manual)
    assert "nextScheduleTime" not in status


def test_cooldown_end_cleared_once_passed_and_active_run_cleared_when_done():
    _, status = step({}, value(0, 0.9))
    _, status = step(status, value(10, 0.9), now=NOW + timedelta(seconds=10))
    assert status["activeRun"] == 1 and status["nextRunAllowedTime"]
    done = {"r-adapt-1": JobView("r-adapt-1", conditions={"Complete": ("True", "", "")})}
    _, status = step(status, jobs=done, now=NOW + timedelta(seconds=20))
    assert "activeRun" not in status and status["nextRunAllowedTime"]
    _, status = step(status, jobs=done, now=NOW + timedelta(seconds=41))
    assert "nextRunAllowedTime" not in status


@pytest.mark.parametrize(
    "schedule",
    ["0 0 30 2 *", "0 0 31 4 *"],
    ids=["february-30", "april-31"],
)
def test_a_schedule_that_never_fires_is_invalid_spec_naming_the_field(schedule):
    """issue 12: `0 0 30 2 *` was admitted and failed later naming no field."""
    spec = {**SPEC, "trigger": {"type": "schedule", "schedule": schedule}}
    actions, status = step({}, spec=spec)
    assert status["phase"] == "Failed" and "spec.trigger.schedule" in status["message"]
    assert "never fires" in status["message"]
    assert any(isinstance(a, RecordEvent) and a.reason == "InvalidSpec" for a in actions)


ONESHOT = {"model": {"uri": "pvc://m/a"}, "output": {"uri": "pvc://m/out"}}


def test_oneshot_clears_retries_and_completion_it_no_longer_claims():
    res = ResourceView(
        "PruneRetrain",
        "r",
        "ns",
        "u",
        1,
        ONESHOT,
        {
            "phase": "Pending",
            "jobRef": {"name": "r-prune", "namespace": "ns"},
            "retries": 2,
            "completionTime": "2026-11-26T11:00:00Z",
            "results": {"stale": 1},
        },
    )
    job = JobView("r-prune", ready=1, active=1)
    actions = plan(Observed(res, jobs={"r-prune": job}), CONFIG, NOW)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["retries"] is None and patch["completionTime"] is None
    assert patch["results"] is None
    merged = apply_merge_patch(res.status, patch)
    assert merged["phase"] == "Running" and "retries" not in merged


@pytest.mark.parametrize(
    ("error", "reason"),
    [("x" * 5000, "QueryFailed"), ("é" * 3000, "PrometheusUnreachable"), ("", "QueryFailed")],
    ids=["5000-chars", "multibyte", "empty"],
)
def test_an_error_longer_than_the_status_field_allows_is_bounded(error, reason):
    """issue 11: an error text longer than the status field allows made the write fail."""
    outcome = QueryOutcome(NOW, error=error, error_reason=reason)
    actions, status = step({}, outcome)  # step() validates against the status model
    assert len(status["drift"]["lastError"]) <= 1024
    assert all(len(c["message"]) <= 2048 for c in status["conditions"])
    assert all(len(a.message) <= 1024 for a in actions if isinstance(a, RecordEvent))


NAN_RESULT = (
    '{"ok": true, "reason": "Succeeded", "message": "", "artifact": {"uri": "pvc://m/out"},'
    ' "results": {"retrainedPerplexity": Infinity, "densePerplexity": NaN, "newLoss": NaN}}'
)


def finished(name):
    from modelops_operator.reconcile.observed import PodTermination

    return JobView(
        name,
        conditions={"Complete": ("True", "", "")},
        terminations=(PodTermination("p", 0, NAN_RESULT),),
    )


def test_a_job_result_with_nan_never_breaks_the_one_shot_status_write():
    """A Job may report NaN or Infinity (Python's json writes them); the status must
    still be strict JSON, or the resource is stuck."""
    res = ResourceView(
        "PruneRetrain",
        "r",
        "ns",
        "u",
        1,
        ONESHOT,
        {"jobRef": {"name": "r-prune", "namespace": "ns"}},
    )
    actions = plan(Observed(res, jobs={"r-prune": finished("r-prune")}), CONFIG, NOW)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    json.dumps(patch, allow_nan=False)
    merged = apply_merge_patch(res.status, patch)
    assert merged["phase"] == "Succeeded"
    kind_info("PruneRetrain").status.model_validate(merged)


def test_a_run_result_with_nan_is_written_as_text():
    spec = {**SPEC, "trigger": {"type": "manual"}}
    _, status = step({}, spec=spec)
    assert status["activeRun"] == 1
    _, status = step(status, jobs={"r-adapt-1": finished("r-adapt-1")}, spec=spec)
    results = status["runs"][0]["results"]
    assert results["newLoss"] == "NaN" and results["retrainedPerplexity"] == "+Inf"
