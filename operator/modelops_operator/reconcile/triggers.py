"""Whether a ModelAdaptation starts a run now, and why: the run-now annotation, a
manual trigger's run on create, a cron time, or the drift state machine firing.

Each decision is a small pure function of the spec, the stored status and the time;
`reconcile/adaptation.py` asks them in order and the first reason wins. The status
fields each decision manages (`lastRunNow`, `nextScheduleTime`, `drift`) come back
with it, typed, to be written through the status model.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelops_api.cron import next_cron_time
from modelops_api.model_adaptation import DriftStatus, ModelAdaptationSpec
from modelops_api.times import iso, parse_time
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile.actions import RecordEvent
from modelops_operator.reconcile.drift_step import plan_drift, without_drift_conditions


@dataclass(frozen=True)
class StartDecision:
    """A reason to start a run (None: none), and the status fields the decision sets."""

    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


RUN_NOW_KEPT = 256
"""status.lastRunNow's length; a longer annotation value is remembered by its digest."""
RUN_NOW_SHOWN = 64


def remembered_run_now(annotation: str) -> str:
    """The annotation value as status.lastRunNow holds it: itself, or when longer than
    the field its sha256 (so a long value still starts exactly one run)."""
    if len(annotation) <= RUN_NOW_KEPT:
        return annotation
    return "sha256:" + hashlib.sha256(annotation.encode()).hexdigest()


def run_now_decision(annotation: str | None, last_run_now: str | None) -> StartDecision | None:
    """A new value of the run-now annotation starts one run (and is remembered)."""
    if not annotation:
        return None
    remembered = remembered_run_now(annotation)
    if remembered == last_run_now:
        return None
    shown = annotation if len(annotation) <= RUN_NOW_SHOWN else annotation[:RUN_NOW_SHOWN] + "..."
    return StartDecision(f"run-now annotation {shown!r}", {"last_run_now": remembered})


def manual_decision(spec: ModelAdaptationSpec, run_count: int) -> StartDecision | None:
    """A manual trigger with runOnCreate starts the first run."""
    trigger = spec.trigger
    if trigger.type == "manual" and trigger.run_on_create and run_count == 0:
        return StartDecision("created")
    return None


def cron_decision(
    spec: ModelAdaptationSpec,
    next_schedule: str | None,
    created: datetime | None,
    now: datetime,
) -> StartDecision | None:
    """A schedule trigger starts a run once `now` reaches the next cron time, and
    keeps `nextScheduleTime` (the first one counted from creation)."""
    trigger = spec.trigger
    if trigger.type != "schedule" or not trigger.schedule:
        return None
    base = parse_time(next_schedule) or next_cron_time(trigger.schedule, created or now)
    reason = None
    if now >= base:
        reason = f"schedule {trigger.schedule}"
        base = next_cron_time(trigger.schedule, now)
    return StartDecision(reason, {"next_schedule_time": iso(base)})


def timed_decision(
    spec: ModelAdaptationSpec,
    status: dict[str, Any],
    annotation: str | None,
    run_count: int,
    created: datetime | None,
    now: datetime,
) -> StartDecision:
    """Run-now, else manual on create, else cron: the first that applies."""
    return (
        run_now_decision(annotation, status.get("lastRunNow"))
        or manual_decision(spec, run_count)
        or cron_decision(spec, status.get("nextScheduleTime"), created, now)
        or StartDecision()
    )


@dataclass(frozen=True)
class DriftDecisionStep:
    """What the drift trigger decided this time."""

    conditions: list[dict[str, Any]]
    state: DriftStatus | None
    """The whole status.drift object (None clears it: the trigger is not drift)."""
    fire_reason: str | None = None
    failure: str | None = None
    """Why drift evaluation is failing (makes Ready False while no run is active)."""
    events: tuple[RecordEvent, ...] = ()


def drift_decision(
    spec: ModelAdaptationSpec,
    stored: Any,
    outcome: QueryOutcome | None,
    conditions: list[dict[str, Any]],
    run_allowed: bool,
    now: datetime,
    generation: int,
) -> DriftDecisionStep:
    """The drift trigger's evaluation of this query outcome; a resource whose trigger
    is not drift has its drift state and conditions cleared."""
    drift = spec.trigger.drift
    if spec.trigger.type != "drift" or drift is None:
        return DriftDecisionStep(without_drift_conditions(conditions), None)
    step = plan_drift(drift, stored, outcome, conditions, run_allowed, now, generation)
    failure = None
    if step.state.consecutive_errors:
        failure = f"drift evaluation failing: {step.state.last_error}"
    return DriftDecisionStep(
        step.conditions, step.state, step.fire_reason, failure, tuple(step.events)
    )
