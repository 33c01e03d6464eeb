"""The runs of a ModelAdaptation, step by step: adopt a Job started just before a
restart, follow the active run to its end, start a new run, trim the history.

Each step takes the run records (`RunRecord`, the API's one definition) and what is
observed, and returns new records: no step writes status or talks to the API server.
`reconcile/adaptation.py` strings them together.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelops_api.model_adaptation import ModelAdaptationSpec, RunRecord
from modelops_api.status import Artifact, Phase
from modelops_operator.build.jobs import (
    ResourceIdentity,
    build_configmap,
    spec_document,
)
from modelops_operator.build.jobsets import build_workload
from modelops_operator.build.names import job_name
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile.actions import Action, CreateJob, EnsureConfigMap, RecordEvent
from modelops_operator.reconcile.job_outcome import JobOutcome, job_outcome
from modelops_operator.reconcile.observed import JobView
from modelops_operator.reconcile.status_patch import non_finite_as_text


def to_second(t: datetime) -> datetime:
    """Run records keep times to the second, as conditions do."""
    return t.replace(microsecond=0)


def record(base: RunRecord | None = None, **changes: Any) -> RunRecord:
    """A run record built (and validated) through the model, from `base` with `changes`."""
    fields = base.model_dump(exclude_none=True) if base is not None else {}
    fields.update(changes)
    return RunRecord.model_validate({k: v for k, v in fields.items() if v is not None})


def job_ref(name: str, namespace: str, uid: str | None = None) -> dict[str, str]:
    return {"name": name, "namespace": namespace, **({"uid": uid} if uid else {})}


@dataclass(frozen=True)
class Runs:
    """The run records and counters a step hands to the next."""

    records: tuple[RunRecord, ...]
    count: int
    active: int | None

    def get(self, run: int) -> RunRecord | None:
        return next((r for r in self.records if r.run == run), None)

    def put(self, new: RunRecord) -> tuple[RunRecord, ...]:
        """The records with `new` replacing the record of its run (or appended)."""
        if self.get(new.run) is None:
            return (*self.records, new)
        return tuple(new if r.run == new.run else r for r in self.records)


def adopt_orphan(runs: Runs, jobs: dict[str, JobView], kind: str, name: str, ns: str) -> Runs:
    """A Job for run `count + 1` with no record was created just before a restart:
    adopt it as the active run, so no run is ever started twice."""
    orphan = job_name(kind, name, runs.count + 1)
    if runs.active is not None or orphan not in jobs:
        return runs
    active = runs.count + 1
    new = record(
        run=active, phase="Pending", trigger="adopted after restart", job_ref=job_ref(orphan, ns)
    )
    return Runs(runs.put(new), active, active)


@dataclass(frozen=True)
class Followed:
    """What following the active run found."""

    runs: Runs
    phase: str | None = None
    """The resource's phase after this step (None: unchanged)."""
    message: str | None = None
    artifact: Artifact | None = None
    current_version: str | None = None
    job_missing: str | None = None
    """Set when the active run's Job is gone (the JobMissing condition's message)."""
    events: tuple[RecordEvent, ...] = field(default=())


def _finished_results(outcome: JobOutcome) -> tuple[dict[str, Any] | None, Artifact | None]:
    """A finished run's results (non-finite numbers as text, the artifact inside)."""
    if outcome.result is None:
        return None, None
    results = non_finite_as_text(dict(outcome.result.results))
    artifact = outcome.result.artifact
    if artifact is not None:
        results["artifact"] = artifact.to_wire()
    return results, artifact


def follow_active_run(
    runs: Runs, jobs: dict[str, JobView], kind: str, name: str, ns: str, now: datetime
) -> Followed:
    """The active run's record follows its Job; a finished run is no longer active."""
    if runs.active is None:
        return Followed(runs)
    active = runs.active
    jname = job_name(kind, name, active)
    job = jobs.get(jname)
    current = runs.get(active) or record(run=active, phase="Pending", trigger="unknown")
    if job is None:
        message = f"Job {jname} was deleted before the run finished"
        new = record(current, phase="Failed", message=message, completion_time=to_second(now))
        event = RecordEvent("Warning", "JobDeleted", message)
        return Followed(
            Runs(runs.put(new), runs.count, None),
            Phase.FAILED,
            job_missing=message,
            events=(event,),
        )
    outcome = job_outcome(job)
    changes: dict[str, Any] = {
        "phase": outcome.phase.value,
        "message": outcome.message[:1024],
        "job_ref": job_ref(jname, ns, job.uid),
    }
    if job.start_time:
        changes["start_time"] = to_second(job.start_time)
    message = f"run {active}: {outcome.message}"
    if not outcome.phase.terminal:
        still = Runs(runs.put(record(current, **changes)), runs.count, active)
        return Followed(still, outcome.phase.value, message)
    changes["completion_time"] = current.completion_time or to_second(job.completion_time or now)
    results, artifact = _finished_results(outcome)
    if results is not None:
        changes["results"] = results
    succeeded = outcome.phase == Phase.SUCCEEDED
    event_type = "Normal" if succeeded else "Warning"
    event = RecordEvent(event_type, f"Run{outcome.phase.value}", f"run {active}: {outcome.message}")
    return Followed(
        Runs(runs.put(record(current, **changes)), runs.count, None),
        outcome.phase.value,
        message,
        artifact if succeeded else None,
        f"run-{active:04d}" if succeeded and artifact is not None else None,
        events=(event,),
    )


def latest_artifact_uri(records: tuple[RunRecord, ...]) -> str | None:
    """The output of the newest successful run: the next run's parent (lineage)."""
    for r in sorted(records, key=lambda r: -r.run):
        artifact = (r.results or {}).get("artifact")
        if r.phase == Phase.SUCCEEDED.value and artifact:
            return artifact.get("uri")  # type: ignore[no-any-return]
    return None


def start_run(
    runs: Runs,
    ident: ResourceIdentity,
    spec: ModelAdaptationSpec,
    config: OperatorConfig,
    reason: str,
    now: datetime,
) -> tuple[Runs, list[Action]]:
    """Run `count + 1`: its ConfigMap and Job (deterministic names), and its record."""
    active = runs.count + 1
    run_info: dict[str, Any] = {"number": active, "trigger": reason}
    parent = latest_artifact_uri(runs.records)
    if parent:
        run_info["parent"] = parent
    document = spec_document(ident, spec, run_info)
    indexed = spec.s3t.shards if spec.strategy == "s3t" else None
    parallelism = spec.s3t.parallelism or None
    actions: list[Action] = [
        EnsureConfigMap(build_configmap(ident, document, active)),
        CreateJob(build_workload(ident, spec, config, document, active, indexed, parallelism)),
    ]
    new = record(
        run=active,
        phase="Pending",
        trigger=reason[:256],
        job_ref=job_ref(job_name(ident.kind, ident.name, active), ident.namespace),
        start_time=to_second(now),
    )
    return Runs(runs.put(new), active, active), actions


def trim_history(
    records: tuple[RunRecord, ...], spec: ModelAdaptationSpec
) -> tuple[list[RunRecord], list[RunRecord]]:
    """(kept, dropped) by the successful / failed history limits; active runs are kept."""
    kept: list[RunRecord] = []
    dropped: list[RunRecord] = []
    succeeded = failed = 0
    for r in sorted(records, key=lambda r: r.run, reverse=True):
        if r.phase == Phase.SUCCEEDED.value:
            succeeded += 1
            (kept if succeeded <= spec.successful_runs_history_limit else dropped).append(r)
        elif r.phase == Phase.FAILED.value:
            failed += 1
            (kept if failed <= spec.failed_runs_history_limit else dropped).append(r)
        else:
            kept.append(r)
    return sorted(kept, key=lambda r: r.run), dropped
