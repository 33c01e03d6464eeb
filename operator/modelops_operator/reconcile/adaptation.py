"""Plans for ModelAdaptation: a long-lived resource whose runs are Jobs.

At most one run at a time. A run starts on creation (manual trigger), on a new value
of the run-now annotation, at a cron time, or when the drift state machine fires.
Run N's Job and ConfigMap have deterministic names, and a Job for run `runCount + 1`
found without a status record is adopted, so a restart never starts a run twice.
Finished runs are kept up to the history limits; older runs' Jobs are deleted.
"""

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from modelops_api.cron import next_cron_time
from modelops_api.kinds import KindInfo
from modelops_api.meta import ANNOTATION_RUN_NOW
from modelops_api.model_adaptation import ModelAdaptationSpec, RunRecord, parse_duration
from modelops_api.status import Phase
from modelops_api.times import iso_precise, parse_time
from modelops_api.validation import spec_error_message
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile.actions import Action, DeleteJob, PatchStatus, RecordEvent
from modelops_operator.reconcile.conditions import (
    get_condition,
    latest_run_conditions,
    set_condition,
)
from modelops_operator.reconcile.observed import Observed, ResourceView
from modelops_operator.reconcile.oneshot import identity, invalid_spec_plan
from modelops_operator.reconcile.policy import (
    Refusal,
    cleared_conditions,
    refusal,
    refused_conditions,
)
from modelops_operator.reconcile.runs import (
    Runs,
    adopt_orphan,
    follow_active_run,
    start_run,
    trim_history,
)
from modelops_operator.reconcile.status_patch import typed_status_patch
from modelops_operator.reconcile.triggers import drift_decision, timed_decision

MESSAGE_MAX = 2048
"""status.message's length: a message made of a Job's or a user's text is cut to it."""


def validate(spec_raw: dict[str, Any], now: datetime) -> ModelAdaptationSpec:
    """Parse the spec and check what the schema cannot (the cron expression)."""
    spec = ModelAdaptationSpec.model_validate(spec_raw)
    if spec.trigger.type == "schedule" and spec.trigger.schedule:
        next_cron_time(spec.trigger.schedule, now)
    return spec


def stored_runs(status: dict[str, Any]) -> Runs:
    """The run records and counters as stored, parsed with the API's `RunRecord`; a
    record that lost its trigger (written by hand) reads as trigger "unknown"."""
    records = tuple(
        RunRecord.model_validate({"trigger": "unknown", **r}) for r in status.get("runs", [])
    )
    return Runs(records, int(status.get("runCount", 0)), status.get("activeRun"))


def policy_step(
    res: ResourceView, refused: Refusal | None, conds: list[dict[str, Any]], now: datetime
) -> tuple[list[dict[str, Any]], list[RecordEvent]]:
    """PolicyViolation set (with a Warning when it changes) or cleared."""
    if refused is None:
        return cleared_conditions(conds, now, res.generation), []
    conds = refused_conditions(conds, refused, now, res.generation)
    before = get_condition(res.status.get("conditions", []), "PolicyViolation") or {}
    if (before.get("status"), before.get("message")) == ("True", refused.message):
        return conds, []
    return conds, [RecordEvent("Warning", refused.reason, refused.message)]


def summary_conditions(
    conds: list[dict[str, Any]],
    kept: list[RunRecord],
    phase: str,
    active: int | None,
    message: str | None,
    drift_failure: str | None,
    now: datetime,
    gen: int,
) -> list[dict[str, Any]]:
    """Running, Succeeded/Failed (of the latest run) and Ready."""
    conds = set_condition(
        conds,
        "Running",
        "True" if active is not None else "False",
        "RunActive" if active is not None else "NoActiveRun",
        f"run {active} active" if active is not None else "no run active",
        now,
        gen,
    )
    conds = latest_run_conditions(conds, kept, now, gen)
    ready = phase in (Phase.SUCCEEDED.value, Phase.IDLE.value) and drift_failure is None
    failing = drift_failure is not None and active is None
    return set_condition(
        conds,
        "Ready",
        "True" if ready else "False",
        "DriftEvaluationFailing" if failing else phase,
        (drift_failure if failing else None) or message or phase,
        now,
        gen,
    )


def plan_adaptation(
    obs: Observed, info: KindInfo, config: OperatorConfig, now: datetime
) -> list[Action]:
    res = obs.resource
    status = res.status
    if res.deleting:
        return []
    try:
        spec = validate(res.spec, now)
    except ValidationError as exc:
        return invalid_spec_plan(res, spec_error_message(exc), now)
    except ValueError as exc:
        return invalid_spec_plan(res, str(exc), now)

    gen = res.generation
    fields: dict[str, Any] = {"observed_generation": gen}
    conds = set_condition(
        status.get("conditions", []), "SpecValid", "True", "Valid", "spec is valid", now, gen
    )
    actions: list[Action] = []
    events: list[RecordEvent] = []

    # Follow the active run (adopting a Job started just before a restart).
    runs = adopt_orphan(stored_runs(status), obs.jobs, res.kind, res.name, res.namespace)
    followed = follow_active_run(runs, obs.jobs, res.kind, res.name, res.namespace, now)
    runs = followed.runs
    phase = followed.phase or status.get("phase") or Phase.IDLE.value
    if followed.job_missing:
        conds = set_condition(
            conds, "JobMissing", "True", "JobDeleted", followed.job_missing, now, gen
        )
    if followed.message:
        fields["message"] = followed.message
    if followed.artifact is not None:
        fields["artifact"] = followed.artifact
        fields["current_version"] = followed.current_version
    events.extend(followed.events)

    # Decide whether to start: run-now, manual, cron; then drift.
    allowed_at = parse_time(status.get("nextRunAllowedTime"))
    cooling = allowed_at is not None and now < allowed_at
    timed = timed_decision(
        spec, status, res.annotations.get(ANNOTATION_RUN_NOW), runs.count, res.creation_time, now
    )
    fields.update(timed.fields)
    run_allowed = runs.active is None and not cooling and not spec.suspend
    drift = drift_decision(spec, status.get("drift"), obs.drift, conds, run_allowed, now, gen)
    conds = drift.conditions
    events.extend(drift.events)
    fields["drift"] = drift.state
    if spec.trigger.type != "schedule":
        fields["next_schedule_time"] = None
    if not cooling:
        fields["next_run_allowed_time"] = None
    reason = timed.reason or drift.fire_reason
    if runs.active is not None or spec.suspend:
        reason = None  # one run at a time; suspended resources start nothing
    refused = refusal(res.kind, spec, obs.gate)
    conds, policy_events = policy_step(res, refused, conds, now)
    events.extend(policy_events)
    if refused is not None:
        reason = None  # the policy or a Secret's opt-in forbids acting on it
        if runs.active is None:
            fields["message"] = refused.message

    # Start.
    if reason is not None:
        runs, started = start_run(runs, identity(res), spec, config, reason, now)
        actions.extend(started)
        if spec.trigger.type == "drift" and spec.trigger.drift is not None:
            cooldown = timedelta(seconds=parse_duration(spec.trigger.drift.cooldown))
            fields["next_run_allowed_time"] = iso_precise(now + cooldown)
        phase = Phase.PENDING.value
        fields["message"] = f"run {runs.active} started: {reason}"
        if any(c.get("type") == "JobMissing" and c.get("status") == "True" for c in conds):
            message = f"run {runs.active} has its Job"
            conds = set_condition(conds, "JobMissing", "False", "NewRun", message, now, gen)
        events.append(RecordEvent("Normal", "RunStarted", f"run {runs.active}: {reason}"))

    # Trim the history; summarise.
    kept, dropped = trim_history(runs.records, spec)
    for old in dropped:
        if old.job_ref is not None and old.job_ref.name in obs.jobs:
            actions.append(DeleteJob(old.job_ref.name, res.namespace))
    if runs.count == 0 and runs.active is None:
        phase = Phase.IDLE.value
    if refused is not None and runs.active is None:
        phase = Phase.FAILED.value
    if fields.get("message"):
        fields["message"] = fields["message"][:MESSAGE_MAX]
    fields.update(runs=kept, run_count=runs.count, phase=phase, active_run=runs.active)
    fields["conditions"] = summary_conditions(
        conds, kept, phase, runs.active, fields.get("message"), drift.failure, now, gen
    )
    patch = typed_status_patch(info.status, status, **fields)
    if patch:
        actions.append(PatchStatus(patch))
    actions.extend(events)
    return actions
