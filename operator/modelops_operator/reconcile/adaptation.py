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
from modelops_api.model_adaptation import ModelAdaptationSpec, parse_duration
from modelops_api.status import Phase
from modelops_operator.build.jobs import build_configmap, spec_document
from modelops_operator.build.jobsets import build_workload
from modelops_operator.build.names import job_name
from modelops_operator.config import OperatorConfig
from modelops_operator.drift import state as drift_state
from modelops_operator.reconcile.actions import (
    Action,
    CreateJob,
    DeleteJob,
    EnsureConfigMap,
    PatchStatus,
    RecordEvent,
)
from modelops_operator.reconcile.conditions import (
    get_condition,
    iso,
    iso_precise,
    latest_run_conditions,
    set_condition,
)
from modelops_operator.reconcile.drift_step import plan_drift, without_drift_conditions
from modelops_operator.reconcile.job_outcome import job_outcome
from modelops_operator.reconcile.observed import Observed
from modelops_operator.reconcile.oneshot import identity, invalid_spec_plan, spec_error_message
from modelops_operator.reconcile.policy import cleared_conditions, refusal, refused_conditions
from modelops_operator.reconcile.status_patch import non_finite_as_text, status_patch


def parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def validate(spec_raw: dict[str, Any], now: datetime) -> ModelAdaptationSpec:
    """Parse the spec and check what the schema cannot (the cron expression)."""
    spec = ModelAdaptationSpec.model_validate(spec_raw)
    if spec.trigger.type == "schedule" and spec.trigger.schedule:
        next_cron_time(spec.trigger.schedule, now)
    return spec


def _trim_history(
    runs: list[dict[str, Any]], spec: ModelAdaptationSpec
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped) by the successful / failed history limits; active runs are kept."""
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    succeeded = failed = 0
    for record in sorted(runs, key=lambda r: r["run"], reverse=True):
        phase = record.get("phase")
        if phase == Phase.SUCCEEDED.value:
            succeeded += 1
            (kept if succeeded <= spec.successful_runs_history_limit else dropped).append(record)
        elif phase == Phase.FAILED.value:
            failed += 1
            (kept if failed <= spec.failed_runs_history_limit else dropped).append(record)
        else:
            kept.append(record)
    return sorted(kept, key=lambda r: r["run"]), dropped


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

    ident = identity(res)
    gen = res.generation
    desired: dict[str, Any] = {"observedGeneration": gen}
    conds = set_condition(
        status.get("conditions", []), "SpecValid", "True", "Valid", "spec is valid", now, gen
    )
    runs: list[dict[str, Any]] = [dict(r) for r in status.get("runs", [])]
    run_count = int(status.get("runCount", 0))
    active = status.get("activeRun")
    actions: list[Action] = []
    events: list[RecordEvent] = []
    phase = status.get("phase") or Phase.IDLE.value

    # Adopt a Job created just before a restart, before its run was recorded.
    orphan = job_name(res.kind, res.name, run_count + 1)
    if active is None and orphan in obs.jobs:
        run_count += 1
        active = run_count
        runs.append(
            {
                "run": active,
                "phase": "Pending",
                "trigger": "adopted after restart",
                "jobRef": {"name": orphan, "namespace": res.namespace},
            }
        )

    # Follow the active run.
    if active is not None:
        name = job_name(res.kind, res.name, active)
        job = obs.jobs.get(name)
        record = next((r for r in runs if r["run"] == active), None)
        if record is None:
            record = {"run": active, "phase": "Pending", "trigger": "unknown"}
            runs.append(record)
        if job is None:
            record.update(phase="Failed", message=f"Job {name} was deleted before the run finished")
            record["completionTime"] = iso(now)
            conds = set_condition(
                conds, "JobMissing", "True", "JobDeleted", record["message"], now, gen
            )
            events.append(RecordEvent("Warning", "JobDeleted", record["message"]))
            phase, active = Phase.FAILED.value, None
        else:
            outcome = job_outcome(job)
            record["phase"] = outcome.phase.value
            record["message"] = outcome.message[:1024]
            record["jobRef"] = {
                "name": name,
                "namespace": res.namespace,
                **({"uid": job.uid} if job.uid else {}),
            }
            if job.start_time:
                record["startTime"] = iso(job.start_time)
            phase = outcome.phase.value
            if outcome.phase.terminal:
                record["completionTime"] = record.get("completionTime") or iso(
                    job.completion_time or now
                )
                if outcome.result is not None:
                    results = non_finite_as_text(dict(outcome.result.results))
                    if outcome.result.artifact is not None:
                        results["artifact"] = outcome.result.artifact.to_wire()
                        if outcome.phase == Phase.SUCCEEDED:
                            desired["artifact"] = outcome.result.artifact.to_wire()
                            desired["currentVersion"] = f"run-{active:04d}"
                    record["results"] = results
                event_type = "Normal" if outcome.phase == Phase.SUCCEEDED else "Warning"
                events.append(
                    RecordEvent(
                        event_type, f"Run{outcome.phase.value}", f"run {active}: {outcome.message}"
                    )
                )
                active = None
            desired["message"] = f"run {record['run']}: {outcome.message}"

    # Decide whether to start a run.
    start_reason: str | None = None
    trigger = spec.trigger
    run_now = res.annotations.get(ANNOTATION_RUN_NOW)
    allowed_at = parse_time(status.get("nextRunAllowedTime"))
    cooling = allowed_at is not None and now < allowed_at
    if run_now and run_now != status.get("lastRunNow"):
        desired["lastRunNow"] = run_now
        start_reason = f"run-now annotation {run_now!r}"
    elif trigger.type == "manual" and trigger.run_on_create and run_count == 0:
        start_reason = "created"
    elif trigger.type == "schedule" and trigger.schedule:
        base = parse_time(status.get("nextScheduleTime"))
        if base is None:
            base = next_cron_time(trigger.schedule, res.creation_time or now)
        if now >= base:
            start_reason = f"schedule {trigger.schedule}"
            base = next_cron_time(trigger.schedule, now)
        desired["nextScheduleTime"] = iso(base)
    drift_failure: str | None = None
    if trigger.type == "drift" and trigger.drift is not None:
        step = plan_drift(
            trigger.drift,
            status.get("drift"),
            obs.drift,
            conds,
            active is None and not cooling and not spec.suspend,
            now,
            gen,
        )
        conds = step.conditions
        events.extend(step.events)
        if step.fire_reason is not None and start_reason is None:
            start_reason = step.fire_reason
        if step.state.consecutive_errors:
            drift_failure = f"drift evaluation failing: {step.state.last_error}"
        desired["drift"] = drift_state.state_to_status(step.state)
    else:
        desired["drift"] = None
        conds = without_drift_conditions(conds)
    if trigger.type != "schedule":
        desired["nextScheduleTime"] = None
    if not cooling:
        desired["nextRunAllowedTime"] = None

    if start_reason is not None and (active is not None or spec.suspend):
        start_reason = None  # one run at a time; suspended resources start nothing
    refused = refusal(res.kind, spec, obs.gate)
    if refused is not None:
        start_reason = None  # the policy or a Secret's opt-in forbids acting on it
        conds = refused_conditions(conds, refused, now, gen)
        if active is None:
            desired["message"] = refused.message
        before = get_condition(status.get("conditions", []), "PolicyViolation") or {}
        if (before.get("status"), before.get("message")) != ("True", refused.message):
            events.append(RecordEvent("Warning", refused.reason, refused.message))
    else:
        conds = cleared_conditions(conds, now, gen)
    if start_reason is not None:
        run_count += 1
        active = run_count
        parent = next(
            (
                r.get("results", {}).get("artifact", {}).get("uri")
                for r in sorted(runs, key=lambda r: -r["run"])
                if r.get("phase") == Phase.SUCCEEDED.value and r.get("results", {}).get("artifact")
            ),
            None,
        )
        run_info: dict[str, Any] = {"number": active, "trigger": start_reason}
        if parent:
            run_info["parent"] = parent
        document = spec_document(ident, spec, run_info)
        indexed = spec.s3t.shards if spec.strategy == "s3t" else None
        actions.append(EnsureConfigMap(build_configmap(ident, document, active)))
        actions.append(
            CreateJob(
                build_workload(
                    ident, spec, config, document, active, indexed, spec.s3t.parallelism or None
                )
            )
        )
        name = job_name(res.kind, res.name, active)
        runs.append(
            {
                "run": active,
                "phase": "Pending",
                "trigger": start_reason[:256],
                "jobRef": {"name": name, "namespace": res.namespace},
                "startTime": iso(now),
            }
        )
        if trigger.type == "drift" and trigger.drift is not None:
            desired["nextRunAllowedTime"] = iso_precise(
                now + timedelta(seconds=parse_duration(trigger.drift.cooldown))
            )
        phase = Phase.PENDING.value
        desired["message"] = f"run {active} started: {start_reason}"
        if any(c.get("type") == "JobMissing" and c.get("status") == "True" for c in conds):
            conds = set_condition(
                conds, "JobMissing", "False", "NewRun", f"run {active} has its Job", now, gen
            )
        events.append(RecordEvent("Normal", "RunStarted", f"run {active}: {start_reason}"))

    kept, dropped = _trim_history(runs, spec)
    for record in dropped:
        ref = record.get("jobRef") or {}
        if ref.get("name") in obs.jobs:
            view = obs.jobs[ref["name"]]  # a JobSet's view carries the JobSet's own name
            actions.append(DeleteJob(view.name, res.namespace, spec.resources.nodes > 1))
    if run_count == 0 and active is None:
        phase = Phase.IDLE.value
    if refused is not None and active is None:
        phase = Phase.FAILED.value
    desired.update(runs=kept, runCount=run_count, phase=phase)
    desired["activeRun"] = active
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
    conds = set_condition(
        conds,
        "Ready",
        "True" if ready else "False",
        "DriftEvaluationFailing" if failing else phase,
        (drift_failure if failing else None) or desired.get("message", phase) or phase,
        now,
        gen,
    )
    desired["conditions"] = conds
    patch = status_patch(status, desired)
    if patch:
        actions.append(PatchStatus(patch))
    actions.extend(events)
    return actions
