"""The drift trigger state machine: hysteresis, `for`, cooldown, no-data policy, errors.

Cases marked "issue 11" reproduce what a review observed against a real Prometheus:
a run right after a re-arm, after an outage, or after NaN inside a pending window."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from modelops_api.model_adaptation import DriftStatus, DriftTrigger
from modelops_operator.drift.state import (
    QueryOutcome,
    backoff_seconds,
    evaluate,
    state_from_status,
    state_to_status,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trigger(**kw):
    base = {
        "prometheusUrl": "http://p:9090",
        "query": "x",
        "fireThreshold": 0.5,
        "clearThreshold": 0.3,
        "for": "60s",
    }
    return DriftTrigger.model_validate({**base, **kw})


def run(trig, values, allowed=True, state=None):
    """Feed (seconds, value) pairs; return the fire flags and the final state."""
    state = state or DriftStatus()
    fires = []
    for seconds, value in values:
        outcome = (
            QueryOutcome(
                T0 + timedelta(seconds=seconds), error="boom", error_reason="PrometheusUnreachable"
            )
            if value == "err"
            else QueryOutcome(T0 + timedelta(seconds=seconds), value=value)
        )
        decision = evaluate(trig, state, outcome, run_allowed=allowed)
        state = decision.state
        fires.append(decision.fire)
    return fires, state


CASES = [
    ("fires-after-for", {}, [(0, 0.9), (30, 0.9), (60, 0.9)], [False, False, True]),
    (
        "dip-resets-pending",
        {},
        [(0, 0.9), (30, 0.4), (60, 0.9), (90, 0.9), (120, 0.9)],
        [False, False, False, False, True],
    ),
    (
        "fires-once-until-rearmed",
        {},
        [(0, 0.9), (60, 0.9), (120, 0.9), (180, 0.9)],
        [False, True, False, False],
    ),
    (
        "rearms-below-clear",
        {},
        [(0, 0.9), (60, 0.9), (70, 0.2), (80, 0.9), (140, 0.9)],
        [False, True, False, False, True],
    ),
    (
        "band-does-not-rearm",
        {},
        [(0, 0.9), (60, 0.9), (70, 0.4), (80, 0.9), (140, 0.9)],
        [False, True, False, False, False],
    ),
    (
        "below-direction",
        {"direction": "below", "fireThreshold": 0.2, "clearThreshold": 0.4},
        [(0, 0.1), (60, 0.1)],
        [False, True],
    ),
    # issue 11: NaN or absent samples inside a window counted towards `for`.
    ("nodata-ignore-breaks-window", {}, [(0, 0.9), (30, None), (60, 0.9)], [False, False, False]),
    (
        "nan-breaks-window",
        {},
        [(0, 0.9), (10, math.nan), (11, 0.9), (60, 0.9), (71, 0.9)],
        [False, False, False, False, True],
    ),
    # issue 11: an outage inside a pending window started a run right after recovery.
    (
        "outage-breaks-window",
        {},
        [(0, 0.9), (30, "err"), (31, 0.9), (60, 0.9), (91, 0.9)],
        [False, False, False, False, True],
    ),
    # issue 11: after a re-arm, a run 2.4 s into a 10 s `for`.
    (
        "rearm-then-fire-respects-for",
        {},
        [(0, 0.9), (60, 0.9), (70, 0.2), (72, 0.9), (74.4, 0.9), (131, 0.9), (132, 0.9)],
        [False, True, False, False, False, False, True],
    ),
    (
        "disarmed-tracks-nothing",
        {},
        [(0, 0.9), (60, 0.9), (70, 0.9), (80, 0.2), (81, 0.9), (140, 0.9), (141, 0.9)],
        [False, True, False, False, False, False, True],
    ),
    ("inf-never-fires", {}, [(0, 0.9), (30, math.inf), (61, 0.9)], [False, False, False]),
    ("for-zero-fires-at-once", {"for": "0s"}, [(0, 0.9)], [True]),
    ("at-fire-is-not-past", {}, [(0, 0.5), (60, 0.5)], [False, False]),
    ("nodata-trigger", {"noData": "trigger"}, [(0, None), (60, None)], [False, True]),
    ("nodata-error", {"noData": "error"}, [(0, 0.9), (30, None), (60, 0.9)], [False, False, False]),
    (
        "errors-never-fire",
        {},
        [(0, 0.9), (30, "err"), (60, 0.9), (90, 0.9)],
        [False, False, False, False],
    ),
]


@pytest.mark.parametrize(
    ("kw", "values", "expected"), [(k, v, e) for _, k, v, e in CASES], ids=[c[0] for c in CASES]
)
def test_state_machine(kw, values, expected):
    fires, _ = run(trigger(**kw), values)
    assert fires == expected


def test_cooldown_holds_the_fire_until_allowed():
    trig = trigger()
    fires, state = run(trig, [(0, 0.9), (60, 0.9)], allowed=False)
    assert fires == [False, False] and state.armed and state.pending_since is not None
    fires, _ = run(trig, [(90, 0.9)], allowed=True, state=state)
    assert fires == [True]


def test_errors_count_and_back_off():
    _, state = run(trigger(), [(0, "err"), (10, "err"), (20, "err")])
    assert state.consecutive_errors == 3 and state.last_error == "boom"
    assert state.last_error_reason == "PrometheusUnreachable" and state.pending_since is None
    assert (
        backoff_seconds(60, 0) == 60
        and backoff_seconds(60, 1) == 120
        and backoff_seconds(60, 10) == 300
        and backoff_seconds(600, 3) == 600
    )
    _, recovered = run(trigger(), [(30, 0.1)], state=state)
    assert recovered.consecutive_errors == 0 and recovered.last_error is None
    assert recovered.last_error_reason is None


@pytest.mark.parametrize(
    "values",
    [
        [(0, 0.9), (60.25, 0.9)],
        [(0, 0.9), (1, math.inf)],
        [(0, -math.inf)],
        [(0, math.nan)],
        [(0, None)],
        [(0, "err")],
        [(0, 1e308), (1, -1e-308)],
    ],
    ids=["fired", "plus-inf", "minus-inf", "nan", "absent", "error", "extremes"],
)
def test_state_round_trips_through_json(values):
    """issue 11: a +Inf value broke the status write (JSON has no Infinity)."""
    _, state = run(trigger(), values)
    wire = json.loads(json.dumps(state_to_status(state), allow_nan=False))
    assert state_from_status(wire) == state


@pytest.mark.parametrize(
    ("value", "text"),
    [(math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"), (None, "no data")],
    ids=["plus-inf", "minus-inf", "nan", "absent"],
)
def test_non_finite_values_are_explicit(value, text):
    decision = evaluate(trigger(), DriftStatus(), QueryOutcome(T0, value=value), run_allowed=True)
    assert decision.state.last_value is None and decision.state.last_value_text == text
    if value is not None and math.isinf(value):
        assert decision.failed and decision.reason == "NonFiniteValue"


def test_fire_event_states_the_real_held_time():
    """issue 11: the Event said "held for 10s" whatever the real time was."""
    trig = trigger(**{"for": "10s"})
    _, state = run(trig, [(0, 0.9)])
    decision = evaluate(trig, state, QueryOutcome(T0 + timedelta(seconds=12.5), value=0.9), True)
    assert decision.fire and decision.held_seconds == 12.5
    assert "for 12.5s (for: 10s)" in decision.message


def test_an_unreadable_state_starts_disarmed():
    assert state_from_status({"armed": "perhaps"}).armed is False
    assert state_from_status(None).armed is True


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"clearThreshold": 0.5}, "clearThreshold"),
        ({"direction": "below", "fireThreshold": 0.3, "clearThreshold": 0.3}, "clearThreshold"),
        ({"interval": "0ms"}, "interval"),
        ({"interval": "500ms"}, "interval"),
        ({"interval": "25h"}, "interval"),
        ({"timeout": "0s"}, "timeout"),
        ({"timeout": "10m"}, "timeout"),
        ({"for": "169h"}, "for"),
        ({"cooldown": "721h"}, "cooldown"),
        ({"cooldown": "99999999999999999999h"}, "cooldown"),
        ({"cooldown": "2d"}, "cooldown"),
        ({"for": "1s1h"}, "for"),
        ({"fireThreshold": math.inf}, "fireThreshold"),
    ],
    ids=[
        "equal-thresholds-above",
        "equal-thresholds-below",
        "interval-zero",
        "interval-below-1s",
        "interval-above-24h",
        "timeout-zero",
        "timeout-above-5m",
        "for-above-168h",
        "cooldown-above-720h",
        "cooldown-overflow",
        "no-day-unit",
        "units-out-of-order",
        "threshold-inf",
    ],
)
def test_trigger_bounds_name_the_field(kw, field):
    with pytest.raises(ValidationError) as exc:
        trigger(**kw)
    assert field in str(exc.value)
