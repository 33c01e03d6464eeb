"""`plan()` returns the exact actions for each observed state, and nothing when the
state it produced is observed again (level-based, idempotent)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from modelops_api.kinds import kind_info
from modelops_api.meta import ANNOTATION_RUN_NOW
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import CreateJob, EnsureConfigMap, PatchStatus, RecordEvent
from modelops_operator.reconcile.observed import JobView, Observed, PodTermination, ResourceView
from modelops_operator.reconcile.status_patch import apply_merge_patch

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CONFIG = OperatorConfig()
PRUNE_SPEC = {"model": {"uri": "pvc://m/a"}, "output": {"uri": "pvc://m/out"}}


def resource(kind="PruneRetrain", spec=None, status=None, annotations=None, generation=1):
    return ResourceView(
        kind,
        "r",
        "ns",
        "uid-1",
        generation,
        spec or PRUNE_SPEC,
        status or {},
        annotations or {},
        NOW - timedelta(minutes=5),
    )


def apply_status(res, actions):
    """The resource as it looks after the plan's status patch."""
    status = dict(res.status)
    for a in actions:
        if isinstance(a, PatchStatus):
            json.dumps(a.patch, allow_nan=False)
            status = apply_merge_patch(status, a.patch)
    # The writer and the schema agree: what the plan stored is a valid status document.
    kind_info(res.kind).status.model_validate(status)
    return ResourceView(
        res.kind,
        res.name,
        res.namespace,
        res.uid,
        res.generation,
        res.spec,
        status,
        res.annotations,
        res.creation_time,
    )


def result(ok=True, reason="Succeeded", **results):
    return json.dumps(
        {
            "ok": ok,
            "reason": reason,
            "message": "",
            "results": results,
            "artifact": {"uri": "pvc://m/out"},
        }
    )


def test_new_resource_creates_configmap_job_and_pending_status():
    actions = plan(Observed(resource()), CONFIG, NOW)
    kinds = [type(a) for a in actions]
    assert kinds == [EnsureConfigMap, CreateJob, PatchStatus, RecordEvent]
    assert actions[1].manifest["metadata"]["name"] == "r-prune"
    patch = actions[2].patch
    assert patch["phase"] == "Pending" and patch["jobRef"] == {"name": "r-prune", "namespace": "ns"}


def test_invalid_spec_fails_with_the_field_named_and_creates_nothing():
    res = resource(spec={"model": {"uri": "pvc://m/a"}})
    actions = plan(Observed(res), CONFIG, NOW)
    assert not any(isinstance(a, CreateJob | EnsureConfigMap) for a in actions)
    patch = actions[0].patch
    assert patch["phase"] == "Failed" and "spec.output" in patch["message"]
    assert plan(Observed(apply_status(res, actions)), CONFIG, NOW) == []


JOB = "r-prune"
CASES = [
    ("pending", JobView(JOB, uid="j", active=1), "Pending", None),
    ("running", JobView(JOB, uid="j", active=1, ready=1), "Running", None),
    ("suspended", JobView(JOB, uid="j", suspended=True), "Suspended", None),
    (
        "succeeded",
        JobView(
            JOB,
            uid="j",
            succeeded=1,
            conditions={"Complete": ("True", "", "")},
            terminations=(PodTermination("p", 0, result(sparsity=0.5, maskPreserved=True)),),
        ),
        "Succeeded",
        {"sparsity": 0.5, "maskPreserved": True},
    ),
    (
        "failed-permanent",
        JobView(
            JOB,
            uid="j",
            failed=1,
            conditions={"Failed": ("True", "PodFailurePolicy", "exit 3")},
            terminations=(PodTermination("p", 3, result(False, "NotACausalLM")),),
        ),
        "Failed",
        None,
    ),
    (
        "failed-deadline",
        JobView(
            JOB, uid="j", failed=1, conditions={"Failed": ("True", "DeadlineExceeded", "too slow")}
        ),
        "Failed",
        None,
    ),
]


@pytest.mark.parametrize(
    ("job", "phase", "results"), [(j, p, r) for _, j, p, r in CASES], ids=[c[0] for c in CASES]
)
def test_status_follows_the_job_and_is_idempotent(job, phase, results):
    created = resource(status={"phase": "Pending", "jobRef": {"name": JOB, "namespace": "ns"}})
    actions = plan(Observed(created, jobs={JOB: job}), CONFIG, NOW)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch.get("phase", "Pending") == phase
    if results is not None:
        assert patch["results"] == results
    if phase == "Failed":
        reason = next(c for c in patch["conditions"] if c["type"] == "Failed")["reason"]
        assert reason in ("NotACausalLM", "DeadlineExceeded")
    if phase != "Pending":
        assert any(isinstance(a, RecordEvent) for a in actions)
    again = plan(
        Observed(apply_status(created, actions), jobs={JOB: job}),
        CONFIG,
        NOW + timedelta(seconds=30),
    )
    assert again == [], "the same observed state gives an empty plan"


def test_deleted_job_is_reported_and_not_recreated():
    res = resource(status={"phase": "Running", "jobRef": {"name": JOB, "namespace": "ns"}})
    actions = plan(Observed(res), CONFIG, NOW)
    assert not any(isinstance(a, CreateJob) for a in actions)
    patch = actions[0].patch
    assert patch["phase"] == "Failed"
    assert any(
        c["type"] == "JobMissing" and c["reason"] == "JobDeleted" for c in patch["conditions"]
    )
    assert plan(Observed(apply_status(res, actions)), CONFIG, NOW) == []


def test_finished_resource_whose_job_expired_stays_quiet():
    res = resource(status={"phase": "Succeeded", "jobRef": {"name": JOB, "namespace": "ns"}})
    assert plan(Observed(res), CONFIG, NOW) == []


MA_SPEC = {
    "model": {"uri": "pvc://m/a"},
    "data": {"uri": "pvc://d/x"},
    "output": {"uri": "pvc://m/v"},
}


def test_adaptation_first_run_on_create_then_nothing_while_it_runs():
    res = resource("ModelAdaptation", MA_SPEC)
    actions = plan(Observed(res), CONFIG, NOW)
    create = next(a for a in actions if isinstance(a, CreateJob))
    assert create.manifest["metadata"]["name"] == "r-adapt-1"
    after = apply_status(res, actions)
    assert after.status["activeRun"] == 1 and after.status["runCount"] == 1
    job = JobView("r-adapt-1", uid="j", active=1)
    second = plan(Observed(after, jobs={"r-adapt-1": job}), CONFIG, NOW)
    assert not any(isinstance(a, CreateJob) for a in second)


def test_adaptation_adopts_a_job_created_before_a_crash():
    res = resource("ModelAdaptation", MA_SPEC)
    job = JobView("r-adapt-1", uid="j", active=1)
    actions = plan(Observed(res, jobs={"r-adapt-1": job}), CONFIG, NOW)
    assert not any(isinstance(a, CreateJob) for a in actions)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["activeRun"] == 1 and patch["runCount"] == 1


def test_adaptation_run_now_annotation_starts_one_more_run_once():
    done = {
        "phase": "Succeeded",
        "runCount": 1,
        "runs": [
            {
                "run": 1,
                "phase": "Succeeded",
                "trigger": "created",
                "results": {"artifact": {"uri": "pvc://m/v/run-0001"}},
            }
        ],
    }
    res = resource("ModelAdaptation", MA_SPEC, status=done, annotations={ANNOTATION_RUN_NOW: "x1"})
    actions = plan(Observed(res), CONFIG, NOW)
    create = next(a for a in actions if isinstance(a, CreateJob))
    doc = json.loads(
        next(a for a in actions if isinstance(a, EnsureConfigMap)).manifest["data"]["spec.json"]
    )
    assert create.manifest["metadata"]["name"] == "r-adapt-2"
    assert doc["run"]["parent"] == "pvc://m/v/run-0001"
    after = apply_status(res, actions)
    finished = JobView("r-adapt-2", uid="j", succeeded=1, conditions={"Complete": ("True", "", "")})
    later = plan(Observed(after, jobs={"r-adapt-2": finished}), CONFIG, NOW)
    assert not any(isinstance(a, CreateJob) for a in later), "the same annotation value runs once"


def test_adaptation_schedule_fires_at_the_cron_time():
    spec = {**MA_SPEC, "trigger": {"type": "schedule", "schedule": "0 * * * *"}}
    res = resource(
        "ModelAdaptation", spec, status={"runCount": 0, "nextScheduleTime": "2026-11-26T12:00:00Z"}
    )
    actions = plan(Observed(res), CONFIG, NOW)
    assert any(isinstance(a, CreateJob) for a in actions)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["nextScheduleTime"] == "2026-11-26T13:00:00Z"


def test_adaptation_invalid_cron_is_a_failed_condition():
    spec = {**MA_SPEC, "trigger": {"type": "schedule", "schedule": "99 * * * *"}}
    actions = plan(Observed(resource("ModelAdaptation", spec)), CONFIG, NOW)
    assert not any(isinstance(a, CreateJob) for a in actions)
    patch = actions[0].patch
    assert patch["phase"] == "Failed" and "spec.trigger.schedule" in patch["message"]


def test_history_limits_delete_old_jobs():
    spec = {
        **MA_SPEC,
        "successfulRunsHistoryLimit": 1,
        "trigger": {"type": "manual", "runOnCreate": False},
    }
    runs = [
        {
            "run": i,
            "phase": "Succeeded",
            "trigger": "t",
            "jobRef": {"name": f"r-adapt-{i}", "namespace": "ns"},
        }
        for i in (1, 2, 3)
    ]
    res = resource(
        "ModelAdaptation", spec, status={"runCount": 3, "runs": runs, "phase": "Succeeded"}
    )
    jobs = {
        f"r-adapt-{i}": JobView(
            f"r-adapt-{i}", succeeded=1, conditions={"Complete": ("True", "", "")}
        )
        for i in (1, 2, 3)
    }
    actions = plan(Observed(res, jobs=jobs), CONFIG, NOW)
    deleted = sorted(a.name for a in actions if type(a).__name__ == "DeleteJob")
    assert deleted == ["r-adapt-1", "r-adapt-2"]
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert [r["run"] for r in patch["runs"]] == [3]


UNLEARN_SPEC = {"model": {"uri": "pvc://m/a"}, "sampleIds": ["a1", "a2"]}
SUCCEEDED_UNLEARN = dict(
    succeeded=1,
    conditions={"Complete": ("True", "", "")},
    terminations=(PodTermination("p", 0, result(deletedSamples=1)),),
)
SPEC_CHANGED = [
    ("prune-running", "PruneRetrain", PRUNE_SPEC, "r-prune", {"active": 1, "ready": 1}),
    ("unlearn-succeeded", "UnlearnRequest", UNLEARN_SPEC, "r-unlearn", SUCCEEDED_UNLEARN),
]


@pytest.mark.parametrize(
    ("kind", "spec", "job_name", "job_state"),
    [c[1:] for c in SPEC_CHANGED],
    ids=[c[0] for c in SPEC_CHANGED],
)
def test_a_job_built_from_an_older_generation_fails_the_request(kind, spec, job_name, job_state):
    """Issue 12: the spec changed between the Job's creation and the status write. The
    status must never claim the new generation nor report Succeeded for the new spec."""
    res = resource(
        kind,
        spec=spec,
        generation=2,
        status={"phase": "Pending", "jobRef": {"name": job_name, "namespace": "ns"}},
    )
    job = JobView(job_name, uid="j", generation=1, **job_state)
    actions = plan(Observed(res, jobs={job_name: job}), CONFIG, NOW)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["phase"] == "Failed"
    assert patch["observedGeneration"] == 1
    assert "results" not in patch and "receipt" not in patch
    cond = next(c for c in patch["conditions"] if c["type"] == "SpecChanged")
    assert cond["status"] == "True" and "generation 1" in cond["message"]
    assert "generation 2" in patch["message"]
    assert any(isinstance(a, RecordEvent) and a.type == "Warning" for a in actions)
    again = Observed(apply_status(res, actions), jobs={job_name: job})
    assert plan(again, CONFIG, NOW) == []


def test_a_job_of_the_current_generation_reports_normally():
    res = resource(
        generation=3, status={"phase": "Pending", "jobRef": {"name": JOB, "namespace": "ns"}}
    )
    job = JobView(JOB, uid="j", active=1, ready=1, generation=3)
    patch = plan(Observed(res, jobs={JOB: job}), CONFIG, NOW)[0].patch
    assert patch["phase"] == "Running" and patch["observedGeneration"] == 3


def unlearn_succeeded(**results):
    return JobView(
        "r-unlearn",
        uid="j",
        succeeded=1,
        generation=1,
        conditions={"Complete": ("True", "", "")},
        terminations=(PodTermination("p", 0, result(**results)),),
    )


SERVING = [
    ("all", {"shards": 2, "shardsInService": 2, "shardsOutOfService": []}, "True", None),
    (
        "some-out",
        {"shards": 3, "shardsInService": 1, "shardsOutOfService": [0, 2]},
        "True",
        "ShardsOutOfService",
    ),
    (
        "none",
        {"shards": 3, "shardsInService": 0, "shardsOutOfService": [0, 1, 2]},
        "False",
        "NoShardInService",
    ),
]


@pytest.mark.parametrize(
    ("results", "status", "warning"), [c[1:] for c in SERVING], ids=[c[0] for c in SERVING]
)
def test_an_unlearn_request_says_whether_the_model_still_serves(results, status, warning):
    """Issue 12: after deletions took every shard out of service, requests still
    reported Succeeded with Normal Events only."""
    res = resource(
        "UnlearnRequest",
        spec=UNLEARN_SPEC,
        status={"phase": "Running", "jobRef": {"name": "r-unlearn", "namespace": "ns"}},
    )
    job = unlearn_succeeded(deletedSamples=1, **results)
    actions = plan(Observed(res, jobs={"r-unlearn": job}), CONFIG, NOW)
    patch = actions[0].patch
    assert patch["phase"] == "Succeeded"
    serving = next(c for c in patch["conditions"] if c["type"] == "Serving")
    assert serving["status"] == status
    warnings = [a for a in actions if isinstance(a, RecordEvent) and a.type == "Warning"]
    if warning is None:
        assert warnings == []
    else:
        assert serving["reason"] == warning and "retrainAffected" in serving["message"]
        assert any(a.reason == "ShardsOutOfService" for a in warnings)
        assert "retrainAffected" in patch["message"]
    if status == "False":
        assert "no longer serves" in patch["message"]
    again = Observed(apply_status(res, actions), jobs={"r-unlearn": job})
    assert plan(again, CONFIG, NOW) == [], "no flip-flop, no repeated Warning"


ADAPT_SPEC = {
    "model": {"uri": "pvc://m/a"},
    "data": {"uri": "pvc://d/new"},
    "output": {"uri": "pvc://m/out"},
}
RUN_STATES = [
    ("no-run", [], "False", "False", "NoRun"),
    ("active", [{"run": 1, "phase": "Running"}], "False", "False", "RunActive"),
    ("succeeded", [{"run": 1, "phase": "Succeeded"}], "True", "False", "RunSucceeded"),
    (
        "failed-after-success",
        [{"run": 1, "phase": "Succeeded"}, {"run": 2, "phase": "Failed"}],
        "False",
        "True",
        "RunFailed",
    ),
]


@pytest.mark.parametrize(
    ("runs", "succeeded", "failed", "reason"),
    [c[1:] for c in RUN_STATES],
    ids=[c[0] for c in RUN_STATES],
)
def test_model_adaptation_has_succeeded_and_failed_for_its_latest_run(
    runs, succeeded, failed, reason
):
    """Issue 12: `kubectl wait --for=condition=Succeeded` hung on ModelAdaptation, which
    had only Ready. Every kind now carries Ready, Running, Succeeded and Failed."""
    status = {"runs": runs, "runCount": len(runs), "phase": "Idle"}
    spec = {**ADAPT_SPEC, "trigger": {"type": "manual", "runOnCreate": False}}
    res = resource("ModelAdaptation", spec=spec, status=status)
    actions = plan(Observed(res), CONFIG, NOW)
    conds = {c["type"]: c for c in actions[0].patch["conditions"]}
    assert {"Ready", "Running", "Succeeded", "Failed"} <= set(conds)
    assert (conds["Succeeded"]["status"], conds["Failed"]["status"]) == (succeeded, failed)
    assert conds["Succeeded"]["reason"] == reason


@pytest.mark.parametrize("kind", ["PruneRetrain", "UnlearnRequest", "LoRATransfer"])
def test_one_shot_kinds_carry_all_four_conditions_from_the_start(kind):
    from modelops_api.kinds import kind_info

    spec = {"PruneRetrain": PRUNE_SPEC, "UnlearnRequest": UNLEARN_SPEC}.get(kind)
    if spec is None:
        spec = {
            "sourceModel": {"uri": "pvc://m/a"},
            "sourceAdapter": {"uri": "pvc://a/b"},
            "targetModel": {"uri": "pvc://m/b"},
            "output": {"uri": "pvc://m/out"},
        }
    actions = plan(Observed(resource(kind, spec=spec)), CONFIG, NOW)
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    types = {c["type"] for c in patch["conditions"]}
    assert {"Ready", "Running", "Succeeded", "Failed"} <= types
    documented = {c.type for c in kind_info(kind).conditions}
    assert types <= documented, "every condition set is documented in docs/api.md"


def test_results_are_rounded_for_the_printer_columns():
    """Issue 12: the PPL column printed 54.39131537753751."""
    res = resource(status={"phase": "Running", "jobRef": {"name": JOB, "namespace": "ns"}})
    job = JobView(
        JOB,
        uid="j",
        succeeded=1,
        conditions={"Complete": ("True", "", "")},
        terminations=(
            PodTermination("p", 0, result(retrainedPerplexity=54.39131537753751, sparsity=0.5)),
        ),
    )
    patch = plan(Observed(res, jobs={JOB: job}), CONFIG, NOW)[0].patch
    assert patch["results"] == {"retrainedPerplexity": 54.391, "sparsity": 0.5}
