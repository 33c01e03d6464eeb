"""A JobSet's state as the planner's JobView, and what plan() does with it: Succeeded
from Completed with global rank 0's result, Failed from Failed (a permanent-failure message
first), restarts as retries, Suspended from the JobSet's suspension; and, when the
JobSet CRD is not installed, a condition and nothing created."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelops_api.kinds import kind_info
from modelops_operator.build.jobsets import is_jobset
from modelops_operator.build.names import job_name, jobset_name
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import (
    CreateJob,
    DeleteJob,
    EnsureConfigMap,
    PatchStatus,
    RecordEvent,
)
from modelops_operator.reconcile.job_outcome import job_outcome
from modelops_operator.reconcile.jobset_outcome import (
    JOBSET_FORBIDDEN,
    JOBSET_NOT_INSTALLED,
    jobset_view,
    order_terminations,
)
from modelops_operator.reconcile.observed import Observed, PodTermination, ResourceView
from modelops_operator.reconcile.status_patch import apply_merge_patch

NOW = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
SPEC = {
    "model": {"uri": "pvc://m/a"},
    "output": {"uri": "pvc://m/out"},
    "resources": {"nodes": 2, "gpu": {"count": 0}},
    "distribution": {"processesPerNode": 2},
}
OK = json.dumps(
    {"ok": True, "reason": "Succeeded", "message": "done", "results": {"sparsity": 0.5}}
)
PERMANENT = json.dumps({"ok": False, "reason": "BadModel", "message": "rank 3 cannot load"})
RETRY = json.dumps({"ok": False, "reason": "PeerLost", "message": "a peer went away"})


def jobset(conditions=(), restarts=0, ready=0, active=1, suspend=False):
    return {
        "metadata": {
            "name": "r-prune",
            "uid": "js-uid",
            "creationTimestamp": "2026-12-02T00:55:00Z",
            "annotations": {"modelops.dev/generation": "1", "modelops.dev/spec-digest": "sha256:x"},
        },
        "spec": {"suspend": suspend, "replicatedJobs": [{"name": "node", "replicas": 1}]},
        "status": {
            "restarts": restarts,
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": "2026-12-02T00:59:00Z",
                }
                for t, r, m in conditions
            ],
            "replicatedJobsStatus": [
                {"name": "node", "ready": ready, "active": active, "succeeded": 0, "failed": 0}
            ],
        },
    }


def term(pod, code, message, minute):
    return PodTermination(pod, code, message, NOW - timedelta(minutes=60 - minute))


CASES = [
    ("created", jobset(active=0), (), "Pending", None, 0),
    ("pods-not-all-ready", jobset(ready=0, active=1), (), "Pending", None, 0),
    ("all-nodes-ready", jobset(ready=1), (), "Running", None, 0),
    ("suspended-by-kueue", jobset(active=0, suspend=True), (), "Suspended", None, 0),
    (
        "completed-node0-result",
        jobset([("Completed", "AllJobsCompleted", "jobset completed successfully")], active=0),
        (term("r-prune-node-0-0-a", 0, OK, 50), term("r-prune-node-0-1-b", 0, "", 51)),
        "Succeeded",
        "Succeeded",
        0,
    ),
    (
        "restarted-twice-then-completed",
        jobset([("Completed", "AllJobsCompleted", "ok")], restarts=2, active=0),
        (term("p0", 0, OK, 50),),
        "Succeeded",
        "Succeeded",
        2,
    ),
    (
        "restarting-after-a-killed-rank",
        jobset(restarts=1, active=1),
        (term("p1", 2, RETRY, 40),),
        "Pending",
        None,
        1,
    ),
    (
        "failed-permanent-exit-3",
        jobset([("Failed", "FailedJobs", "jobset failed due to FailJobSet rule")], active=0),
        (term("p1", 3, PERMANENT, 41), term("p0", 2, RETRY, 42)),
        "Failed",
        "BadModel",
        0,
    ),
    (
        "failed-after-the-retry-budget",
        jobset(
            [
                (
                    "Failed",
                    "ReachedMaxRestarts",
                    "jobset failed due to reaching max number of restarts",
                )
            ],
            restarts=3,
            active=0,
        ),
        (),
        "Failed",
        "ReachedMaxRestarts",
        3,
    ),
]


@pytest.mark.parametrize(
    ("js", "terms", "phase", "reason", "retries"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_jobset_state_as_an_outcome(js, terms, phase, reason, retries):
    view = jobset_view(js, order_terminations((), terms))
    outcome = job_outcome(view)
    assert outcome.phase.value == phase
    if reason:
        assert outcome.reason == reason
    assert outcome.retries == retries
    assert view.spec_digest == "sha256:x" and view.generation == 1
    if phase == "Succeeded" and terms:
        assert outcome.result is not None and outcome.result.results == {"sparsity": 0.5}


def test_permanent_failure_message_comes_first_then_node_0():
    node0 = (term("p0-new", 2, RETRY, 50), term("p0-old", 0, "", 10))
    others = (term("p1", 3, PERMANENT, 45), term("p2", 1, "", 46))
    assert [t.pod for t in order_terminations(node0, others)] == ["p1", "p0-new", "p0-old", "p2"]


def resource(status=None, spec=None):
    return ResourceView("PruneRetrain", "r", "ns", "uid-1", 1, spec or SPEC, status or {}, {}, NOW)


def then(res, actions):
    status = dict(res.status)
    for a in actions:
        if isinstance(a, PatchStatus):
            status = apply_merge_patch(status, a.patch)
    kind_info(res.kind).status.model_validate(status)
    return resource(status, res.spec)


def test_two_nodes_create_a_jobset_and_follow_it_to_success():
    res = resource()
    actions = plan(Observed(res), OperatorConfig(), NOW)
    creates = [a for a in actions if isinstance(a, CreateJob)]
    assert len(creates) == 1 and is_jobset(creates[0].manifest)
    assert any(isinstance(a, EnsureConfigMap) for a in actions)
    res = then(res, actions)
    assert res.status["jobRef"]["name"] == "r-prune"
    done = jobset([("Completed", "AllJobsCompleted", "ok")], restarts=1, active=0)
    view = jobset_view(done, (term("p0", 0, OK, 50),))
    actions = plan(Observed(res, jobs={"r-prune": view}), OperatorConfig(), NOW)
    res = then(res, actions)
    assert res.status["phase"] == "Succeeded" and res.status["retries"] == 1
    assert res.status["results"]["sparsity"] == 0.5
    assert plan(Observed(res, jobs={"r-prune": view}), OperatorConfig(), NOW) == []


@pytest.mark.parametrize("problem", [JOBSET_NOT_INSTALLED, JOBSET_FORBIDDEN])
def test_no_jobset_api_gives_a_condition_and_creates_nothing(problem):
    res = resource()
    actions = plan(Observed(res, jobset_api=problem), OperatorConfig(), NOW)
    assert not any(isinstance(a, CreateJob | EnsureConfigMap) for a in actions)
    events = [a for a in actions if isinstance(a, RecordEvent)]
    assert [(e.type, e.reason) for e in events] == [("Warning", problem)]
    res = then(res, actions)
    conds = {c["type"]: c for c in res.status["conditions"]}
    assert conds["JobCreated"]["status"] == "False" and conds["JobCreated"]["reason"] == problem
    assert res.status["phase"] == "Pending" and "jobRef" not in res.status
    assert plan(Observed(res, jobset_api=problem), OperatorConfig(), NOW) == [], "written once"
    # Installed later: the next reconcile creates the JobSet (level-based).
    later = plan(Observed(res), OperatorConfig(), NOW)
    assert any(isinstance(a, CreateJob) and is_jobset(a.manifest) for a in later)


def test_one_node_ignores_the_jobset_api():
    spec = {**SPEC, "resources": {"nodes": 1}, "distribution": {}}
    actions = plan(
        Observed(resource(spec=spec), jobset_api=JOBSET_NOT_INSTALLED), OperatorConfig(), NOW
    )
    creates = [a for a in actions if isinstance(a, CreateJob)]
    assert len(creates) == 1 and creates[0].manifest["kind"] == "Job"


def test_result_is_rank_0s_even_when_rank_0_ran_on_node_1():
    """c10d hands out ranks in arrival order (seen in tests/e2e/test_jobset.py): node 0's
    pod may hold ranks 2-3 and write no message; rank 0's message on node 1 is read."""
    done = jobset([("Completed", "AllJobsCompleted", "ok")], active=0)
    view = jobset_view(
        done, order_terminations((term("node0", 0, "", 55),), (term("node1", 0, OK, 50),))
    )
    outcome = job_outcome(view)
    assert outcome.phase.value == "Succeeded"
    assert outcome.result is not None and outcome.result.results == {"sparsity": 0.5}


def test_history_limit_deletes_old_runs_jobsets_by_their_own_names():
    """A trimmed run's JobSet is deleted as a JobSet, under the JobSet's name (which is
    shortened more than a Job's for long resource names)."""
    name = "a" * 50
    spec = {
        "strategy": "cpt",
        "model": {"uri": "pvc://m/a"},
        "data": {"uri": "pvc://d/x"},
        "output": {"uri": "pvc://m/v"},
        "resources": {"nodes": 2, "gpu": {"count": 0}},
        "successfulRunsHistoryLimit": 1,
        "trigger": {"type": "manual", "runOnCreate": False},
    }
    runs = [
        {
            "run": i,
            "phase": "Succeeded",
            "trigger": "t",
            "jobRef": {"name": job_name("ModelAdaptation", name, i), "namespace": "ns"},
        }
        for i in (1, 2)
    ]
    res = ResourceView(
        "ModelAdaptation",
        name,
        "ns",
        "u",
        1,
        spec,
        {"runCount": 2, "runs": runs, "phase": "Succeeded"},
        {},
        NOW,
    )
    done = jobset([("Completed", "AllJobsCompleted", "ok")], active=0)
    jobs = {}
    for i in (1, 2):
        js = {
            **done,
            "metadata": {**done["metadata"], "name": jobset_name("ModelAdaptation", name, i)},
        }
        jobs[job_name("ModelAdaptation", name, i)] = jobset_view(js, (term("p", 0, OK, 50),))
    actions = plan(Observed(res, jobs=jobs), OperatorConfig(), NOW)
    deletes = [a for a in actions if isinstance(a, DeleteJob)]
    assert deletes == [DeleteJob(jobset_name("ModelAdaptation", name, 1), "ns", jobset=True)]
    assert deletes[0].name != job_name("ModelAdaptation", name, 1)


# -- any JobSet state: the outcome agrees with the JobSet (property-based) ------------

CONDITION = st.sampled_from(["Completed", "Failed", "Suspended", "StartupPolicyCompleted"])


@given(
    conditions=st.dictionaries(CONDITION, st.sampled_from(["True", "False"]), max_size=4),
    restarts=st.integers(0, 20),
    ready=st.integers(0, 2),
    active=st.integers(0, 2),
    suspend=st.booleans(),
    codes=st.lists(st.sampled_from([0, 1, 3, 75, 137]), max_size=4),
)
def test_any_jobset_state_maps_consistently(conditions, restarts, ready, active, suspend, codes):
    js = jobset(restarts=restarts, ready=ready, active=active, suspend=suspend)
    js["status"]["conditions"] = [
        {"type": t, "status": s, "reason": "R", "message": "m"} for t, s in conditions.items()
    ]
    terms = tuple(term(f"p{i}", c, OK if c == 0 else PERMANENT, i) for i, c in enumerate(codes))
    outcome = job_outcome(jobset_view(js, order_terminations((), terms)))
    completed = conditions.get("Completed") == "True"
    failed = conditions.get("Failed") == "True"
    if completed:
        assert outcome.phase.value == "Succeeded"
    elif failed:
        assert outcome.phase.value == "Failed"
        assert outcome.retries == restarts, "a failed JobSet's retries are its restarts"
    else:
        assert not outcome.phase.terminal, "no terminal phase without a terminal condition"
        assert outcome.retries == restarts
        if outcome.phase.value == "Running":
            assert ready >= 1, "Running only when every node's pod is ready"
    if failed and not completed and 3 in codes:
        assert outcome.reason == "BadModel", "the permanent failure's reason is reported"
