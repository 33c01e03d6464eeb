"""The drift part of a ModelAdaptation plan: one evaluation of the trigger turned into
status (the whole `status.drift` object), conditions and Events.

Every evaluation sets two conditions: PrometheusReachable (True once Prometheus gave
a usable answer, else False with the failure's reason) and DriftDetected (True while
pending or when firing, Unknown when the evaluation failed, else False). A failed
evaluation also makes a Warning Event the first time its reason appears, so a
failing trigger is never silent and never floods the Event log.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelops_api.model_adaptation import DriftStatus, DriftTrigger
from modelops_operator.drift import state as drift_state
from modelops_operator.reconcile.actions import RecordEvent
from modelops_operator.reconcile.conditions import set_condition

DRIFT_CONDITIONS = ("PrometheusReachable", "DriftDetected")


@dataclass(frozen=True)
class DriftStep:
    state: DriftStatus
    conditions: list[dict[str, Any]]
    fire_reason: str | None = None
    events: list[RecordEvent] = field(default_factory=list)


def plan_drift(
    trigger: DriftTrigger,
    raw_state: Any,
    outcome: drift_state.QueryOutcome | None,
    conditions: list[dict[str, Any]],
    run_allowed: bool,
    now: datetime,
    generation: int,
) -> DriftStep:
    """Evaluate once when a query outcome is at hand; otherwise carry the state over."""
    state = drift_state.state_from_status(raw_state)
    if outcome is None:
        return DriftStep(state, conditions)
    decision = drift_state.evaluate(trigger, state, outcome, run_allowed)
    conds = conditions
    events: list[RecordEvent] = []
    if decision.failed:
        conds = set_condition(
            conds,
            "PrometheusReachable",
            "False",
            decision.reason,
            decision.message,
            now,
            generation,
        )
        conds = set_condition(
            conds,
            "DriftDetected",
            "Unknown",
            decision.reason,
            f"evaluation failed, nothing pending: {decision.message}",
            now,
            generation,
        )
        if state.last_error_reason != decision.reason or state.consecutive_errors == 0:
            events.append(RecordEvent("Warning", decision.reason, decision.message))
    else:
        conds = set_condition(
            conds,
            "PrometheusReachable",
            "True",
            "QueryOK",
            "the drift query succeeded",
            now,
            generation,
        )
        detected = decision.fire or decision.state.pending_since is not None
        conds = set_condition(
            conds,
            "DriftDetected",
            "True" if detected else "False",
            decision.reason,
            decision.message,
            now,
            generation,
        )
        if state.consecutive_errors:
            events.append(
                RecordEvent(
                    "Normal", "DriftRecovered", f"drift query works again: {decision.message}"
                )
            )
    return DriftStep(decision.state, conds, decision.message if decision.fire else None, events)


def without_drift_conditions(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conditions of a resource whose trigger is no longer drift."""
    return [c for c in conditions if c.get("type") not in DRIFT_CONDITIONS]
