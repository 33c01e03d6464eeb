"""The drift trigger state machine: hysteresis, `for`, cooldown, no-data policy, errors."""

from datetime import UTC, datetime, timedelta

import pytest

from modelops_api.model_adaptation import DriftTrigger
from modelops_operator.drift.state import (
    DriftState,
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
    state = state or DriftState()
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
    ("nodata-ignore", {}, [(0, 0.9), (30, None), (60, 0.9)], [False, False, True]),
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
    assert (
        backoff_seconds(60, 0) == 60
        and backoff_seconds(60, 1) == 120
        and backoff_seconds(60, 10) == 300
    )
    _, recovered = run(trigger(), [(30, 0.1)], state=state)
    assert recovered.consecutive_errors == 0 and recovered.last_error is None


def test_state_round_trips_through_status():
    _, state = run(trigger(), [(0, 0.9), (60, 0.9)])
    assert state_from_status(state_to_status(state)) == state
