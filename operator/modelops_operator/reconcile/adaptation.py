"""Plans for ModelAdaptation: a long-lived resource whose runs are Jobs.

At most one run at a time. A run starts on creation (manual trigger), on a new value
of the run-now annotation, at a cron time, or when the drift state machine fires.
Run N's Job and ConfigMap have deterministic names, and a Job for run `runCount + 1`
found without a status record is adopted, so a restart never starts a run twice.
Finished runs are kept up to the history limits; older runs' Jobs are deleted.
"""

from dataclasses import dataclass, field
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
from modelops_operator.reconcile.actions import (
    Action,
    DeleteJob,
    EnsureModelVersion,
    PatchStatus,
    RecordEvent,
)
from modelops_operator.reconcile.conditions import (
    get_condition,
    latest_run_conditions,
    set_condition,
)
from modelops_operator.reconcile.observed import JobView, Observed, ResourceView
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
    record,
    start_run,
    trim_history,
)
from modelops_operator.reconcile.status_patch import typed_status_patch
from modelops_operator.reconcile.triggers import DriftDecisionStep, drift_decision, timed_decision
from modelops_operator.reconcile.versions import UnrecordableVersion, run_version

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


@dataclass
class Draft:
    """The plan being drawn up for one reconcile: the status fields (by the model's
    Python names), conditions, actions and Events so far. Local to one `plan()` call."""

    res: ResourceView
    now: datetime
    runs: Runs
    phase: str
    conds: list[dict[str, Any]]
    fields: dict[str, Any] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    events: list[RecordEvent] = field(default_factory=list)

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conds = set_condition(
            self.conds, type_, status, reason, message, self.now, self.res.generation
        )


def follow_step(d: Draft, jobs: dict[str, JobView]) -> None:
    """Follow the active run (adopting a Job started just before a restart)."""
    res = d.res
    runs = adopt_orphan(d.runs, jobs, res.kind, res.name, res.namespace)
    followed = follow_active_run(runs, jobs, res.kind, res.name, res.namespace, d.now)
    d.runs = followed.runs
    d.phase = followed.phase or d.phase
    if followed.job_missing:
        d.condition("JobMissing", "True", "JobDeleted", followed.job_missing)
    if followed.message:
        d.fields["message"] = followed.message
    if followed.artifact is not None:
        d.fields["artifact"] = followed.artifact
        d.fields["current_version"] = followed.current_version
    d.events.extend(followed.events)


def version_step(d: Draft, known: dict[str, str]) -> None:
    """Each succeeded run that published an artifact gets its ModelVersion and the
    name in its record (and the newest in status.modelVersion). Level-based: re-emitted
    until the record shows it (creation tolerates AlreadyExists)."""
    for rec in d.runs.records:
        if rec.model_version is not None:
            continue
        try:
            version = run_version(d.res, rec, d.runs.records, known)
        except UnrecordableVersion as exc:
            d.events.append(RecordEvent("Warning", "VersionNotRecorded", str(exc)[:1024]))
            continue
        if version is None:
            continue
        name = version["metadata"]["name"]
        d.actions.append(EnsureModelVersion(version))
        d.runs = Runs(d.runs.put(record(rec, model_version=name)), d.runs.count, d.runs.active)
        d.events.append(RecordEvent("Normal", "VersionRecorded", f"run {rec.run}: {name}"))
    newest = [r for r in d.runs.records if r.model_version is not None]
    if newest:
        d.fields["model_version"] = max(newest, key=lambda r: r.run).model_version


def decide_step(
    d: Draft, spec: ModelAdaptationSpec, obs: Observed
) -> tuple[str | None, DriftDecisionStep, Refusal | None]:
    """Whether to start a run (run-now, manual, cron, then drift; none while a run is
    active, while suspended or refused by policy), the drift decision and the refusal."""
    status, now = d.res.status, d.now
    allowed_at = parse_time(status.get("nextRunAllowedTime"))
    cooling = allowed_at is not None and now < allowed_at
    run_now = d.res.annotations.get(ANNOTATION_RUN_NOW)
    timed = timed_decision(spec, status, run_now, d.runs.count, d.res.creation_time, now)
    d.fields.update(timed.fields)
    run_allowed = d.runs.active is None and not cooling and not spec.suspend
    gen = d.res.generation
    drift = drift_decision(spec, status.get("drift"), obs.drift, d.conds, run_allowed, now, gen)
    d.conds = drift.conditions
    d.events.extend(drift.events)
    d.fields["drift"] = drift.state
    if spec.trigger.type != "schedule":
        d.fields["next_schedule_time"] = None
    if not cooling:
        d.fields["next_run_allowed_time"] = None
    reason = timed.reason or drift.fire_reason
    if d.runs.active is not None or spec.suspend:
        reason = None  # one run at a time; suspended resources start nothing
    refused = refusal(d.res.kind, spec, obs.gate)
    d.conds, policy_events = policy_step(d.res, refused, d.conds, now)
    d.events.extend(policy_events)
    if refused is not None:
        reason = None  # the policy or a Secret's opt-in forbids acting on it
        if d.runs.active is None:
            d.fields["message"] = refused.message
    return reason, drift, refused


def start_step(d: Draft, spec: ModelAdaptationSpec, config: OperatorConfig, reason: str) -> None:
    """Start run `runCount + 1`: its ConfigMap and Job, its record, the cooldown."""
    d.runs, started = start_run(d.runs, identity(d.res), spec, config, reason, d.now)
    d.actions.extend(started)
    if spec.trigger.type == "drift" and spec.trigger.drift is not None:
        cooldown = timedelta(seconds=parse_duration(spec.trigger.drift.cooldown))
        d.fields["next_run_allowed_time"] = iso_precise(d.now + cooldown)
    d.phase = Phase.PENDING.value
    d.fields["message"] = f"run {d.runs.active} started: {reason}"
    if any(c.get("type") == "JobMissing" and c.get("status") == "True" for c in d.conds):
        d.condition("JobMissing", "False", "NewRun", f"run {d.runs.active} has its Job")
    d.events.append(RecordEvent("Normal", "RunStarted", f"run {d.runs.active}: {reason}"))


def finish_step(
    d: Draft,
    spec: ModelAdaptationSpec,
    jobs: dict[str, JobView],
    drift_failure: str | None,
    refused: bool,
) -> None:
    """Trim the history (deleting old runs' Jobs) and summarise phase and conditions."""
    kept, dropped = trim_history(d.runs.records, spec)
    for old in dropped:
        if old.job_ref is not None and old.job_ref.name in jobs:
            view = jobs[old.job_ref.name]  # a JobSet's view carries the JobSet's own name
            d.actions.append(DeleteJob(view.name, d.res.namespace, spec.resources.nodes > 1))
    active = d.runs.active
    if d.runs.count == 0 and active is None:
        d.phase = Phase.IDLE.value
    if refused and active is None:
        d.phase = Phase.FAILED.value
    if d.fields.get("message"):
        d.fields["message"] = d.fields["message"][:MESSAGE_MAX]
    d.fields.update(runs=kept, run_count=d.runs.count, phase=d.phase, active_run=active)
    d.fields["conditions"] = summary_conditions(
        d.conds,
        kept,
        d.phase,
        active,
        d.fields.get("message"),
        drift_failure,
        d.now,
        d.res.generation,
    )


def plan_adaptation(
    obs: Observed, info: KindInfo, config: OperatorConfig, now: datetime
) -> list[Action]:
    """Validate; follow the active run; decide whether to start; start; trim; write."""
    res = obs.resource
    if res.deleting:
        return []
    try:
        spec = validate(res.spec, now)
    except ValidationError as exc:
        return invalid_spec_plan(res, spec_error_message(exc), now)
    except ValueError as exc:
        return invalid_spec_plan(res, str(exc), now)
    status = res.status
    d = Draft(res, now, stored_runs(status), status.get("phase") or Phase.IDLE.value, [])
    d.fields["observed_generation"] = res.generation
    d.conds = status.get("conditions", [])
    d.condition("SpecValid", "True", "Valid", "spec is valid")
    follow_step(d, obs.jobs)
    version_step(d, obs.known_versions)
    reason, drift, refused = decide_step(d, spec, obs)
    if reason is not None:
        start_step(d, spec, config, reason)
    finish_step(d, spec, obs.jobs, drift.failure, refused is not None)
    patch = typed_status_patch(info.status, status, **d.fields)
    if patch:
        d.actions.append(PatchStatus(patch))
    return [*d.actions, *d.events]
