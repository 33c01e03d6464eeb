"""The drift trigger as a pure state machine.

State lives in `status.drift` of the ModelAdaptation. Each evaluation takes the state,
the trigger settings, one query outcome and the time, and returns the new state and
whether to fire. Semantics, with `above` (mirror them for `below`):

- value > fireThreshold: pending starts (pendingSince); once it has held for `for`,
  the trigger fires if it is armed, and disarms.
- value < clearThreshold: re-arms and clears pending (real hysteresis: between the two
  thresholds nothing re-arms).
- between: pending is cleared (the value must hold continuously), arming unchanged.
- no data / NaN: per `noData` — ignore (state unchanged), trigger (counts as past the
  fire threshold), or error (clears pending, reports).
- query error: clears pending, counts consecutive errors (the handler backs off), never fires.
"""

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from modelops_api.model_adaptation import DriftTrigger, parse_duration


@dataclass(frozen=True)
class QueryOutcome:
    """One Prometheus query: a value, no data (value None), or an error."""

    time: datetime
    value: float | None = None
    error: str | None = None
    error_reason: str | None = None
    """PrometheusUnreachable, QueryFailed, NotAScalar, SecretNotFound, ..."""


@dataclass(frozen=True)
class DriftState:
    last_value: float | None = None
    last_evaluation_time: datetime | None = None
    pending_since: datetime | None = None
    armed: bool = True
    last_trigger_time: datetime | None = None
    last_error: str | None = None
    consecutive_errors: int = 0


@dataclass(frozen=True)
class DriftDecision:
    state: DriftState
    fire: bool
    reason: str
    message: str


def _past_fire(trigger: DriftTrigger, value: float) -> bool:
    return (
        value > trigger.fire_threshold
        if trigger.direction == "above"
        else value < trigger.fire_threshold
    )


def _past_clear(trigger: DriftTrigger, value: float) -> bool:
    return (
        value < trigger.clear_threshold
        if trigger.direction == "above"
        else value > trigger.clear_threshold
    )


def evaluate(
    trigger: DriftTrigger,
    state: DriftState,
    outcome: QueryOutcome,
    run_allowed: bool,
) -> DriftDecision:
    """One evaluation step. `run_allowed` is False during cooldown or while a run is active."""
    now = outcome.time
    if outcome.error is not None:
        new = replace(
            state,
            last_evaluation_time=now,
            pending_since=None,
            last_error=outcome.error,
            consecutive_errors=state.consecutive_errors + 1,
        )
        return DriftDecision(new, False, outcome.error_reason or "QueryFailed", outcome.error)
    value = outcome.value
    no_data = value is None or math.isnan(value)
    base = replace(state, last_evaluation_time=now, last_error=None, consecutive_errors=0)
    if no_data:
        if trigger.no_data == "ignore":
            return DriftDecision(base, False, "NoData", "query returned no data; ignored")
        if trigger.no_data == "error":
            new = replace(base, pending_since=None, last_error="query returned no data")
            return DriftDecision(new, False, "NoData", "query returned no data")
        past_fire, past_clear = True, False
    else:
        assert value is not None
        base = replace(base, last_value=value)
        past_fire, past_clear = _past_fire(trigger, value), _past_clear(trigger, value)
    if past_clear:
        return DriftDecision(
            replace(base, armed=True, pending_since=None),
            False,
            "BelowClear",
            "drift cleared; armed",
        )
    if not past_fire:
        return DriftDecision(
            replace(base, pending_since=None), False, "InBand", "drift between thresholds"
        )
    pending_since = base.pending_since or now
    base = replace(base, pending_since=pending_since)
    if not base.armed:
        return DriftDecision(
            base, False, "Disarmed", "drift past fire threshold; waiting to re-arm"
        )
    held = now - pending_since >= timedelta(seconds=parse_duration(trigger.for_))
    if not held:
        return DriftDecision(
            base, False, "Pending", f"drift past fire threshold since {pending_since.isoformat()}"
        )
    if not run_allowed:
        return DriftDecision(
            base, False, "CoolingDown", "drift held, but a run is active or cooling down"
        )
    fired = replace(base, armed=False, pending_since=None, last_trigger_time=now)
    value_text = "no data" if no_data else f"{value:g}"
    return DriftDecision(
        fired,
        True,
        "DriftDetected",
        f"drift {value_text} held past {trigger.fire_threshold:g} for {trigger.for_}",
    )


def state_from_status(raw: dict | None) -> DriftState:
    """Read the state back from status.drift (camelCase, ISO times)."""
    if not raw:
        return DriftState()

    def t(key: str) -> datetime | None:
        v = raw.get(key)
        return datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None

    return DriftState(
        last_value=raw.get("lastValue"),
        last_evaluation_time=t("lastEvaluationTime"),
        pending_since=t("pendingSince"),
        armed=raw.get("armed", True),
        last_trigger_time=t("lastTriggerTime"),
        last_error=raw.get("lastError"),
        consecutive_errors=int(raw.get("consecutiveErrors", 0)),
    )


def state_to_status(state: DriftState) -> dict:
    def t(v: datetime | None) -> str | None:
        return v.strftime("%Y-%m-%dT%H:%M:%SZ") if v else None

    out = {
        "lastValue": state.last_value,
        "lastEvaluationTime": t(state.last_evaluation_time),
        "pendingSince": t(state.pending_since),
        "armed": state.armed,
        "lastTriggerTime": t(state.last_trigger_time),
        "lastError": state.last_error,
        "consecutiveErrors": state.consecutive_errors,
    }
    return {k: v for k, v in out.items() if v is not None}


def backoff_seconds(interval: float, consecutive_errors: int, cap: float = 300.0) -> float:
    """Next evaluation delay after errors: doubling from the interval, capped."""
    if consecutive_errors <= 0:
        return interval
    return min(cap, interval * (2 ** min(consecutive_errors, 8)))
