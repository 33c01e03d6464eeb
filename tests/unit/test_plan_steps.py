"""The named steps of the plans, one table each (issue 16): following the active run,
deciding whether to start (run-now, manual, cron, drift), starting, trimming history
for ModelAdaptation; results and conditions for the one-shot kinds; and the status
builder that validates every write in production."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from tests.drift_cases import ADAPTATION, UNIT_DRIFT

from modelops_api.kinds import kind_info
from modelops_api.meta import ANNOTATION_RUN_NOW
from modelops_api.model_adaptation import ModelAdaptationSpec, RunRecord
from modelops_api.status import JobResult
from modelops_operator.build.jobs import ResourceIdentity
from modelops_operator.build.names import job_name
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import CreateJob, EnsureConfigMap, PatchStatus, RecordEvent
from modelops_operator.reconcile.job_outcome import job_outcome
from modelops_operator.reconcile.observed import JobView, Observed, PodTermination, ResourceView
from modelops_operator.reconcile.oneshot import outcome_conditions, result_fields
from modelops_operator.reconcile.runs import (
    Runs,
    adopt_orphan,
    follow_active_run,
    latest_artifact_uri,
    record,
    start_run,
    trim_history,
)
from modelops_operator.reconcile.status_patch import apply_merge_patch, desired_status
from modelops_operator.reconcile.triggers import (
    cron_decision,
    drift_decision,
    manual_decision,
    run_now_decision,
    timed_decision,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
KIND, NAME, NS = "ModelAdaptation", "m", "ns"
BASE = ADAPTATION
DRIFT = UNIT_DRIFT


def spec(**trigger) -> ModelAdaptationSpec:
    return ModelAdaptationSpec.model_validate({**BASE, "trigger": trigger or {"type": "manual"}})


def jname(run: int) -> str:
    return job_name(KIND, NAME, run)


def job(run: int, **kw) -> JobView:
    return JobView(jname(run), uid=f"u{run}", **kw)


def done(ok: bool = True, uri: str | None = "pvc://m/versions/run-0001", **results) -> str:
    doc = {"ok": ok, "reason": "Succeeded" if ok else "TrainingDiverged", "message": "fine"}
    doc["results"] = results
    if uri:
        doc["artifact"] = {"uri": uri}
    return json.dumps(doc)


def rec(run: int, phase: str, **kw) -> RunRecord:
    return record(run=run, phase=phase, trigger="t", **kw)


# -- follow the active run ------------------------------------------------------------

ADOPT = [
    ("no-orphan", Runs((), 0, None), {}, (0, None)),
    ("orphan-adopted", Runs((), 0, None), {jname(1): job(1)}, (1, 1)),
    ("active-run-wins", Runs((rec(1, "Running"),), 1, 1), {jname(2): job(2)}, (1, 1)),
]


@pytest.mark.parametrize(
    ("runs", "jobs", "expected"), [c[1:] for c in ADOPT], ids=[c[0] for c in ADOPT]
)
def test_adopt_orphan(runs, jobs, expected):
    adopted = adopt_orphan(runs, {n: j for n, j in jobs.items()}, KIND, NAME, NS)
    assert (adopted.count, adopted.active) == expected
    if expected[1] is not None and not runs.records:
        assert adopted.get(1).trigger == "adopted after restart"


SUCCEEDED = job(
    1,
    succeeded=1,
    conditions={"Complete": ("True", "", "")},
    terminations=(PodTermination("p", 0, done(loss=float("nan"))),),
)
FAILED = job(
    1,
    failed=2,
    conditions={"Failed": ("True", "BackoffLimitExceeded", "")},
    terminations=(PodTermination("p", 1, done(False, None)),),
)
FOLLOW = [
    # id, jobs, (phase, active, record phase, artifact?, job missing?, events)
    ("no-active-run", None, (None, None, None, False, False, 0)),
    ("job-deleted", {}, ("Failed", None, "Failed", False, True, 1)),
    (
        "running",
        {jname(1): job(1, active=1, ready=1)},
        ("Running", 1, "Running", False, False, 0),
    ),
    ("succeeded", {jname(1): SUCCEEDED}, ("Succeeded", None, "Succeeded", True, False, 1)),
    ("failed", {jname(1): FAILED}, ("Failed", None, "Failed", False, False, 1)),
]


@pytest.mark.parametrize(("jobs", "expected"), [c[1:] for c in FOLLOW], ids=[c[0] for c in FOLLOW])
def test_follow_active_run(jobs, expected):
    phase, active, record_phase, artifact, missing, events = expected
    runs = Runs((rec(1, "Pending"),), 1, None if jobs is None else 1)
    followed = follow_active_run(runs, jobs or {}, KIND, NAME, NS, NOW)
    assert (followed.phase, followed.runs.active) == (phase, active)
    assert (followed.runs.get(1).phase if record_phase else None) == record_phase
    assert (followed.artifact is not None) == artifact
    assert (followed.current_version == "run-0001") == artifact
    assert (followed.job_missing is not None) == missing
    assert len(followed.events) == events


def test_a_finished_run_keeps_its_results_as_strict_json():
    followed = follow_active_run(
        Runs((rec(1, "Running"),), 1, 1), {jname(1): SUCCEEDED}, KIND, NAME, NS, NOW
    )
    results = followed.runs.get(1).results
    assert results["loss"] == "NaN" and results["artifact"]["uri"].endswith("run-0001")
    json.dumps(results, allow_nan=False)
    assert followed.runs.get(1).completion_time == NOW


# -- decide whether to start ----------------------------------------------------------

RUN_NOW = [
    ("none", None, None, None),
    ("new-value", "a", None, "run-now annotation 'a'"),
    ("same-value-again", "a", "a", None),
    ("another-value", "b", "a", "run-now annotation 'b'"),
]


@pytest.mark.parametrize(
    ("value", "last", "reason"), [c[1:] for c in RUN_NOW], ids=[c[0] for c in RUN_NOW]
)
def test_run_now_decision(value, last, reason):
    decided = run_now_decision(value, last)
    assert (decided.reason if decided else None) == reason
    if decided:
        assert decided.fields == {"last_run_now": value}


MANUAL = [
    ("first-run-on-create", {"type": "manual"}, 0, "created"),
    ("not-on-create", {"type": "manual", "runOnCreate": False}, 0, None),
    ("already-ran", {"type": "manual"}, 1, None),
    ("not-manual", {"type": "schedule", "schedule": "0 * * * *"}, 0, None),
]


@pytest.mark.parametrize(
    ("trigger", "count", "reason"), [c[1:] for c in MANUAL], ids=[c[0] for c in MANUAL]
)
def test_manual_decision(trigger, count, reason):
    decided = manual_decision(spec(**trigger), count)
    assert (decided.reason if decided else None) == reason


HOURLY = {"type": "schedule", "schedule": "0 * * * *"}
CRON = [
    # id, stored nextScheduleTime, now, reason?, next written
    ("first-time-from-creation", None, NOW - timedelta(minutes=1), None, "2026-11-26T12:00:00Z"),
    ("not-yet", "2026-11-26T13:00:00Z", NOW, None, "2026-11-26T13:00:00Z"),
    ("due", "2026-11-26T12:00:00Z", NOW, "schedule 0 * * * *", "2026-11-26T13:00:00Z"),
    (
        "long-overdue-fires-once",
        "2026-11-20T00:00:00Z",
        NOW,
        "schedule 0 * * * *",
        "2026-11-26T13:00:00Z",
    ),
]


@pytest.mark.parametrize(
    ("stored", "now", "reason", "next_"), [c[1:] for c in CRON], ids=[c[0] for c in CRON]
)
def test_cron_decision(stored, now, reason, next_):
    decided = cron_decision(spec(**HOURLY), stored, NOW - timedelta(minutes=5), now)
    assert decided is not None
    assert decided.reason == reason
    assert decided.fields == {"next_schedule_time": next_}


def test_cron_decision_is_none_for_other_triggers():
    assert cron_decision(spec(type="manual"), None, NOW, NOW) is None


def test_timed_decision_prefers_run_now_and_then_leaves_the_schedule_alone():
    decided = timed_decision(
        spec(**HOURLY), {"nextScheduleTime": "2026-11-26T12:00:00Z"}, "x", 3, NOW, NOW
    )
    assert decided.reason == "run-now annotation 'x'"
    assert "next_schedule_time" not in decided.fields


def value(v: float | None, seconds: float = 0) -> QueryOutcome:
    return QueryOutcome(NOW + timedelta(seconds=seconds), v)


PENDING_SINCE = {"pendingSince": "2026-11-26T11:59:40Z", "armed": True}
DRIFT_CASES = [
    # id, trigger, stored drift, outcome, run allowed, (fire?, failure?, state kept?, DriftDetected)
    (
        "not-drift-clears",
        {"type": "manual"},
        PENDING_SINCE,
        value(0.9),
        True,
        (False, False, None, None),
    ),
    (
        "no-outcome-carries-state",
        {"type": "drift", "drift": DRIFT},
        PENDING_SINCE,
        None,
        True,
        (False, False, True, None),
    ),
    (
        "in-band",
        {"type": "drift", "drift": DRIFT},
        None,
        value(0.4),
        True,
        (False, False, True, "False"),
    ),
    (
        "starts-pending",
        {"type": "drift", "drift": DRIFT},
        None,
        value(0.9),
        True,
        (False, False, True, "True"),
    ),
    (
        "held-long-enough-fires",
        {"type": "drift", "drift": DRIFT},
        PENDING_SINCE,
        value(0.9),
        True,
        (True, False, True, "True"),
    ),
    (
        "held-but-cooling-down",
        {"type": "drift", "drift": DRIFT},
        PENDING_SINCE,
        value(0.9),
        False,
        (False, False, True, "True"),
    ),
    (
        "query-failed",
        {"type": "drift", "drift": DRIFT},
        PENDING_SINCE,
        QueryOutcome(NOW, error="connection refused", error_reason="PrometheusUnreachable"),
        True,
        (False, True, True, "Unknown"),
    ),
]


@pytest.mark.parametrize(
    ("trigger", "stored", "outcome", "allowed", "expected"),
    [c[1:] for c in DRIFT_CASES],
    ids=[c[0] for c in DRIFT_CASES],
)
def test_drift_decision(trigger, stored, outcome, allowed, expected):
    fire, failure, state, detected = expected
    conds = [
        {
            "type": "DriftDetected",
            "status": "False",
            "reason": "InBand",
            "lastTransitionTime": "2026-11-26T11:00:00Z",
        }
    ]
    step = drift_decision(spec(**trigger), stored, outcome, conds, allowed, NOW, 1)
    assert (step.fire_reason is not None) == fire
    assert (step.failure is not None) == failure
    assert (step.state is not None) == bool(state)
    by_type = {c["type"]: c["status"] for c in step.conditions}
    assert by_type.get("DriftDetected") == (detected or ("False" if state else None))
    if failure:
        assert any(e.reason == "PrometheusUnreachable" for e in step.events)


# -- start, trim ----------------------------------------------------------------------

IDENT = ResourceIdentity(KIND, NAME, NS, "uid-1", 1)


def test_start_run_builds_configmap_job_and_record_with_its_parent():
    earlier = rec(1, "Succeeded", results={"artifact": {"uri": "pvc://m/versions/run-0001"}})
    runs, actions = start_run(
        Runs((earlier,), 1, None), IDENT, spec(type="manual"), CONFIG, "r" * 300, NOW
    )
    assert (runs.count, runs.active) == (2, 2)
    assert [type(a) for a in actions] == [EnsureConfigMap, CreateJob]
    assert actions[1].manifest["metadata"]["name"] == jname(2)
    new = runs.get(2)
    assert (new.phase, len(new.trigger), new.job_ref.name) == ("Pending", 256, jname(2))
    document = json.loads(next(iter(actions[0].manifest["data"].values())))
    assert document["run"]["parent"] == "pvc://m/versions/run-0001"


LINEAGE = [
    ("none", (), None),
    (
        "newest-success",
        (
            rec(1, "Succeeded", results={"artifact": {"uri": "a"}}),
            rec(2, "Succeeded", results={"artifact": {"uri": "b"}}),
        ),
        "b",
    ),
    (
        "failed-is-not-a-parent",
        (
            rec(1, "Succeeded", results={"artifact": {"uri": "a"}}),
            rec(2, "Failed", results={"artifact": {"uri": "b"}}),
        ),
        "a",
    ),
]


@pytest.mark.parametrize(
    ("records", "parent"), [c[1:] for c in LINEAGE], ids=[c[0] for c in LINEAGE]
)
def test_latest_artifact_uri(records, parent):
    assert latest_artifact_uri(records) == parent


TRIM = [
    ("under-limits", ["Succeeded", "Failed", "Running"], (3, 3), [1, 2, 3], []),
    ("succeeded-over", ["Succeeded"] * 4, (2, 3), [3, 4], [1, 2]),
    ("failed-over", ["Failed", "Succeeded", "Failed", "Failed"], (3, 1), [2, 4], [1, 3]),
    ("zero-keeps-active", ["Succeeded", "Pending"], (0, 0), [2], [1]),
]


@pytest.mark.parametrize(
    ("phases", "limits", "kept", "dropped"), [c[1:] for c in TRIM], ids=[c[0] for c in TRIM]
)
def test_trim_history(phases, limits, kept, dropped):
    trigger = {"type": "manual"}
    limited = ModelAdaptationSpec.model_validate(
        {
            **BASE,
            "trigger": trigger,
            "successfulRunsHistoryLimit": limits[0],
            "failedRunsHistoryLimit": limits[1],
        }
    )
    records = tuple(rec(i + 1, p) for i, p in enumerate(phases))
    k, d = trim_history(records, limited)
    assert [r.run for r in k] == kept
    assert sorted(r.run for r in d) == dropped


# -- the drift branch of plan() -------------------------------------------------------


def adaptation(status: dict, spec_: dict | None = None) -> ResourceView:
    body = spec_ or {**BASE, "trigger": {"type": "drift", "drift": DRIFT}}
    return ResourceView(KIND, NAME, NS, "uid-1", 1, body, status, {}, NOW - timedelta(hours=1))


RUNNING_1 = {
    "runs": [{"run": 1, "phase": "Running", "trigger": "t"}],
    "runCount": 1,
    "activeRun": 1,
}
PLAN_DRIFT = [
    # id, stored status, outcome, spec override, jobs, (starts?, Ready reason, DriftDetected)
    ("fires-and-starts", {"drift": PENDING_SINCE}, value(0.9), None, {}, (True, "Pending", "True")),
    ("pending-starts-nothing", {}, value(0.9), None, {}, (False, "Idle", "True")),
    (
        "cooldown-holds-the-fire",
        {"drift": PENDING_SINCE, "nextRunAllowedTime": "2026-11-26T12:00:20Z"},
        value(0.9),
        None,
        {},
        (False, "Idle", "True"),
    ),
    (
        "suspended-starts-nothing",
        {"drift": PENDING_SINCE},
        value(0.9),
        {**BASE, "suspend": True, "trigger": {"type": "drift", "drift": DRIFT}},
        {},
        (False, "Idle", "True"),
    ),
    (
        "active-run-starts-nothing",
        {**RUNNING_1, "drift": PENDING_SINCE},
        value(0.9),
        None,
        {"r": None},
        (False, "Running", "True"),
    ),
    (
        "failing-query-is-not-ready",
        {},
        QueryOutcome(NOW, error="connection refused", error_reason="PrometheusUnreachable"),
        None,
        {},
        (False, "DriftEvaluationFailing", "Unknown"),
    ),
]


@pytest.mark.parametrize(
    ("status", "outcome", "spec_", "jobs", "expected"),
    [c[1:] for c in PLAN_DRIFT],
    ids=[c[0] for c in PLAN_DRIFT],
)
def test_plan_drift_branch(status, outcome, spec_, jobs, expected):
    starts, ready_reason, detected = expected
    jobs = {jname(1): job(1, active=1, ready=1)} if jobs else {}
    res = adaptation(status, spec_)
    actions = plan(Observed(res, jobs=jobs, drift=outcome), CONFIG, NOW)
    assert any(isinstance(a, CreateJob) for a in actions) == starts
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    stored = apply_merge_patch(status, patch)
    kind_info(KIND).status.model_validate(stored)
    conds = {c["type"]: c for c in stored["conditions"]}
    assert conds["Ready"]["reason"] == ready_reason
    assert conds["DriftDetected"]["status"] == detected
    if starts:
        assert stored["nextRunAllowedTime"] == "2026-11-26T12:00:30Z"
        assert stored["drift"]["armed"] is False
        assert any(isinstance(a, RecordEvent) and a.reason == "RunStarted" for a in actions)


# -- one-shot steps -------------------------------------------------------------------

PRUNE = kind_info("PruneRetrain")
RESULTS = [
    ("parsed-and-rounded", {"sparsity": 0.123456789}, {"results": {"sparsity": 0.12346}}),
    ("unparseable-is-the-message", {"sparsity": "lots"}, {"message": "result did not parse"}),
]


@pytest.mark.parametrize(
    ("results", "expected"), [c[1:] for c in RESULTS], ids=[c[0] for c in RESULTS]
)
def test_result_fields(results, expected):
    fields = result_fields(
        "PruneRetrain", PRUNE, JobResult(ok=True, reason="Succeeded", results=results)
    )
    for key, want in expected.items():
        got = fields[key]
        assert got.startswith(want) if isinstance(want, str) else got == want


def oneshot(kind: str, conditions: list[dict]) -> ResourceView:
    return ResourceView(kind, "r", NS, "u", 1, {}, {"conditions": conditions}, {}, NOW)


SUSPENDED_COND = {
    "type": "Suspended",
    "status": "True",
    "reason": "Suspended",
    "lastTransitionTime": "2026-11-26T11:00:00Z",
}
OUTCOME_CONDS = [
    ("suspended", "PruneRetrain", JobView("j", suspended=True), [], {}, {"Suspended": "True"}),
    (
        "resumed",
        "PruneRetrain",
        JobView("j", active=1, ready=1),
        [SUSPENDED_COND],
        {},
        {"Suspended": "False"},
    ),
    (
        "unfiltered-transfer",
        "LoRATransfer",
        JobView("j", succeeded=1, conditions={"Complete": ("True", "", "")}),
        [],
        {"filtered": False},
        {"Unfiltered": "True", "Succeeded": "True"},
    ),
    (
        "unlearn-no-shard-serves",
        "UnlearnRequest",
        JobView("j", succeeded=1, conditions={"Complete": ("True", "", "")}),
        [],
        {"shards": 2, "shardsInService": 0, "shardsOutOfService": [0, 1]},
        {"Serving": "False"},
    ),
]


@pytest.mark.parametrize(
    ("kind", "job_", "conds", "results", "expected"),
    [c[1:] for c in OUTCOME_CONDS],
    ids=[c[0] for c in OUTCOME_CONDS],
)
def test_outcome_conditions(kind, job_, conds, results, expected):
    got, not_serving, _ = outcome_conditions(oneshot(kind, conds), job_outcome(job_), results, NOW)
    by_type = {c["type"]: c["status"] for c in got}
    assert {"Ready", "Running", "Succeeded", "Failed"} <= set(by_type)
    for type_, status in expected.items():
        assert by_type[type_] == status
    assert (not_serving is not None) == (expected.get("Serving") == "False")


# -- every status write goes through the model ----------------------------------------

BAD_STATUS = [
    ("phase-not-a-phase", {"phase": "Exploded"}, "phase"),
    ("message-too-long", {"message": "x" * 3000}, "message"),
    ("negative-retries", {"retries": -1}, "retries"),
    ("job-name-too-long", {"job_ref": {"name": "j" * 64, "namespace": "n"}}, "job_ref"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [c[1:] for c in BAD_STATUS], ids=[c[0] for c in BAD_STATUS]
)
def test_a_status_the_model_refuses_is_never_written(fields, field):
    with pytest.raises(ValidationError) as err:
        desired_status(PRUNE.status, **fields)
    assert err.value.errors()[0]["loc"][0] == field


def test_the_status_builder_keeps_explicit_nulls_and_writes_the_wire_form():
    wire = desired_status(
        PRUNE.status,
        phase="Pending",
        retries=None,
        start_time=NOW,
        job_ref={"name": "j", "namespace": "n"},
    )
    assert wire == {
        "phase": "Pending",
        "retries": None,
        "startTime": "2026-11-26T12:00:00Z",
        "jobRef": {"name": "j", "namespace": "n"},
    }


def test_a_hostile_job_reason_cannot_break_the_status_write():
    """A Job's termination message is the tenant's text: a reason that is no CamelCase
    word (the Condition model and the CRD refuse it) is reported as JobFailed, with the
    text kept in the message, instead of failing every reconcile."""
    hostile = json.dumps({"ok": False, "reason": "no such thing!", "message": "boom"})
    failed = JobView(
        "r-prune",
        uid="j",
        failed=1,
        conditions={"Failed": ("True", "PodFailurePolicy", "exit 3")},
        terminations=(PodTermination("p", 3, hostile),),
    )
    res = ResourceView(
        "PruneRetrain",
        "r",
        NS,
        "u",
        1,
        {"model": {"uri": "pvc://m/a"}, "output": {"uri": "pvc://m/out"}},
        {"phase": "Running", "jobRef": {"name": "r-prune", "namespace": NS}},
        {},
        NOW,
    )
    actions = plan(Observed(res, jobs={"r-prune": failed}), CONFIG, NOW)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    kind_info("PruneRetrain").status.model_validate(apply_merge_patch(res.status, patch))
    failed_cond = next(c for c in patch["conditions"] if c["type"] == "Failed")
    assert failed_cond["reason"] == "JobFailed"
    assert "no such thing!" in failed_cond["message"]
    assert all(e.reason == "JobFailed" for e in actions if isinstance(e, RecordEvent))


def test_a_run_now_value_longer_than_the_status_field_starts_one_run_only():
    """The run-now annotation is the user's text (up to 256 KiB); status.lastRunNow holds
    256 characters. A long value is remembered by its digest: it starts one run, the
    status write validates, and the next reconcile starts nothing."""
    annotation = "x" * 5000
    spec_ = {**BASE, "trigger": {"type": "manual", "runOnCreate": False}}
    res = ResourceView(KIND, NAME, NS, "uid-1", 1, spec_, {}, {ANNOTATION_RUN_NOW: annotation}, NOW)
    first = plan(Observed(res), CONFIG, NOW)
    assert sum(isinstance(a, CreateJob) for a in first) == 1
    patch = next(a for a in first if isinstance(a, PatchStatus)).patch
    stored = apply_merge_patch({}, patch)
    kind_info(KIND).status.model_validate(stored)
    assert len(stored["lastRunNow"]) <= 256 and len(stored["message"]) <= 2048
    again = ResourceView(**{**res.__dict__, "status": stored})
    jobs = {jname(1): job(1, active=1)}
    assert not any(isinstance(a, CreateJob) for a in plan(Observed(again, jobs=jobs), CONFIG, NOW))
