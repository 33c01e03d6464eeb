"""The drift trigger as a pure state machine.

State lives in `status.drift` of the ModelAdaptation as the API model `DriftStatus`
(one definition: what is read back is what was written). Each evaluation takes the
state, the trigger settings, one query outcome and whether a run may start now
(no active run, no cooldown, not suspended), and returns the new state and whether
to fire. Semantics, with `above` (mirror them for `below`):

- The trigger is armed or disarmed. Firing disarms it; only a value strictly below
  clearThreshold re-arms it. While disarmed nothing is pending and nothing fires.
- Armed, value > fireThreshold: pending starts (pendingSince = this evaluation's time)
  unless already pending. It fires once now - pendingSince >= `for` and a run may
  start; until a run may start it stays pending (CoolingDown).
- Armed, any other sample breaks the window: pendingSince is cleared. That includes a
  value at or below fireThreshold, a failed query, a non-finite value, and no data
  (empty result or NaN) under noData `ignore` or `error`. The value must hold
  continuously; a gap in what was seen is not "holding".
- No data under noData `trigger` counts as a value past fireThreshold.
- Errors (query failure, +Inf/-Inf, noData `error`) never fire, count consecutive
  failures (the service backs off on them) and are reported with a reason.
"""

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelops_api.model_adaptation import DriftStatus, DriftTrigger, parse_duration

MAX_ERROR_TEXT = 1024


@dataclass(frozen=True)
class QueryOutcome:
    """One Prometheus query: a value (possibly NaN or ±Inf), no data (value None), or
    an error with a CamelCase reason."""

    time: datetime
    value: float | None = None
    error: str | None = None
    error_reason: str | None = None
    """PrometheusUnreachable, QueryFailed, NotAScalar, SecretNotFound, ..."""


@dataclass(frozen=True)
class DriftDecision:
    state: DriftStatus
    fire: bool
    reason: str
    message: str
    failed: bool = False
    """The evaluation failed (a Warning, a counted error, backoff)."""
    held_seconds: float | None = None
    """When firing: how long the value really held past fireThreshold."""


def value_text(value: float | None) -> str:
    """A sample as text that JSON can carry: the number, NaN, +Inf, -Inf or 'no data'."""
    if value is None:
        return "no data"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def _past(trigger: DriftTrigger, value: float, threshold: float, toward_fire: bool) -> bool:
    above = (trigger.direction == "above") == toward_fire
    return value > threshold if above else value < threshold


def _update(state: DriftStatus, **changes: Any) -> DriftStatus:
    return state.model_copy(update=changes)


def _failed(state: DriftStatus, reason: str, message: str) -> DriftDecision:
    message = message[:MAX_ERROR_TEXT]
    new = _update(
        state,
        pending_since=None,
        last_error=message,
        last_error_reason=reason[:64],
        consecutive_errors=min(state.consecutive_errors + 1, 1_000_000),
    )
    return DriftDecision(new, False, reason, message, failed=True)


def _ok(state: DriftStatus) -> DriftStatus:
    return _update(state, last_error=None, last_error_reason=None, consecutive_errors=0)


def evaluate(
    trigger: DriftTrigger,
    state: DriftStatus,
    outcome: QueryOutcome,
    run_allowed: bool,
) -> DriftDecision:
    """One evaluation step. `run_allowed` is False during cooldown, while a run is
    active, or while the resource is suspended."""
    now = outcome.time
    base = _update(state, last_evaluation_time=now)
    if outcome.error is not None:
        return _failed(base, outcome.error_reason or "QueryFailed", outcome.error)
    value = outcome.value
    text = value_text(value)
    if value is not None and math.isinf(value):
        base = _update(base, last_value=None, last_value_text=text)
        return _failed(
            base,
            "NonFiniteValue",
            f"query returned {text}; a drift value must be a finite number "
            "(guard divisions, e.g. `x / (y > 0)`)",
        )
    if value is None or math.isnan(value):
        base = _update(base, last_value=None, last_value_text=text)
        if trigger.no_data == "error":
            return _failed(base, "NoData", f"query returned {text} (noData: error)")
        if trigger.no_data == "ignore":
            window = "the pending window restarts" if base.pending_since else "nothing pending"
            return DriftDecision(
                _update(_ok(base), pending_since=None),
                False,
                "NoData",
                f"query returned {text}; ignored ({window})",
            )
        past_fire, past_clear = True, False
    else:
        base = _update(_ok(base), last_value=value, last_value_text=text)
        past_fire = _past(trigger, value, trigger.fire_threshold, toward_fire=True)
        past_clear = _past(trigger, value, trigger.clear_threshold, toward_fire=False)
    base = _ok(base)
    if not base.armed:
        if past_clear:
            return DriftDecision(
                _update(base, armed=True, pending_since=None),
                False,
                "Rearmed",
                f"drift {text} past clearThreshold {trigger.clear_threshold:g}; armed again",
            )
        return DriftDecision(
            _update(base, pending_since=None),
            False,
            "Disarmed",
            f"drift {text}; disarmed until past clearThreshold {trigger.clear_threshold:g}",
        )
    if not past_fire:
        reason = "BelowClear" if past_clear else "InBand"
        return DriftDecision(
            _update(base, pending_since=None), False, reason, f"drift {text}; nothing pending"
        )
    pending = base.pending_since or now
    base = _update(base, pending_since=pending)
    held = (now - pending).total_seconds()
    need = parse_duration(trigger.for_)
    if held < need:
        return DriftDecision(
            base,
            False,
            "Pending",
            f"drift {text} past fireThreshold {trigger.fire_threshold:g} for {held:.1f}s "
            f"of {trigger.for_}",
        )
    if not run_allowed:
        return DriftDecision(
            base,
            False,
            "CoolingDown",
            f"drift {text} held {held:.1f}s, but a run is active, cooling down or suspended",
        )
    fired = _update(base, armed=False, pending_since=None, last_trigger_time=now)
    return DriftDecision(
        fired,
        True,
        "DriftDetected",
        f"drift {text} held past {trigger.fire_threshold:g} for {held:.1f}s (for: {trigger.for_})",
        held_seconds=held,
    )


def state_from_status(raw: Any) -> DriftStatus:
    """The state read back from status.drift. A missing one starts fresh (armed, nothing
    pending); an unreadable one starts disarmed, so it can delay a run but never start
    one that the lost state would have refused."""
    if not isinstance(raw, dict) or not raw:
        return DriftStatus()
    try:
        return DriftStatus.model_validate(raw)
    except ValueError:
        return DriftStatus(armed=False)


def state_to_status(state: DriftStatus) -> dict[str, Any]:
    """The whole status.drift object (the writer replaces it, so absent = cleared)."""
    return state.to_wire()


def backoff_seconds(interval: float, consecutive_errors: int, cap: float = 300.0) -> float:
    """Next evaluation delay after errors: doubling from the interval, capped (never
    shorter than the interval)."""
    if consecutive_errors <= 0:
        return interval
    return max(interval, min(cap, interval * (2 ** min(consecutive_errors, 16))))
