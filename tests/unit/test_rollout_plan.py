"""The rollout state machine, plan by plan: the exact actions for each observed state,
in the order the service carries them out (write-ahead: the status records `applied`
before the InferenceService patch), and nothing when the state it produced is
observed again. The KServe stand-in is `tests/rollout_world.World.kserve()`."""

from dataclasses import replace
from datetime import timedelta

import pytest
from tests.rollout_world import (
    SERVED,
    T0,
    World,
    cond,
    in_bounds,
    kinds,
    promote,
    to_canary,
    world_with,
)

from modelops_api.policy import ModelOpsPolicySpec
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile.actions import (
    CreateJob,
    PatchInferenceService,
    RequeueAfter,
)
from modelops_operator.reconcile.policy import Gate, PolicyView
from modelops_operator.reconcile.rollout import analysis_due, plan_rollout


def test_adopts_the_served_version_and_then_does_nothing():
    w = world_with()
    actions = w.step()
    assert kinds(actions) == ["PatchModelVersionStatus", "PatchStatus", "RecordEvent:Adopted"]
    assert w.status["servingVersion"] == "v0" and w.status["servingUri"] == SERVED
    assert w.status["applied"] == {"storageUri": SERVED} and w.status["phase"] == "Idle"
    assert w.version_phase("v0") == "Serving"
    assert w.versions["v0"].status["serving"][0]["role"] == "default"
    assert w.plan() == []


def test_an_unknown_served_uri_is_the_baseline_without_a_version():
    w = world_with()
    w.isvc.uri = "pvc://m/elsewhere"
    w.step()
    assert w.status["servingUri"] == "pvc://m/elsewhere" and "servingVersion" not in w.status


def test_candidate_passing_the_gate_goes_to_the_first_step_write_ahead():
    w = world_with("v1")
    actions = w.step()
    assert kinds(actions) == [
        "PatchModelVersionStatus",
        "PatchModelVersionStatus",
        "PatchStatus",
        "PatchInferenceService",
        "RecordEvent:Adopted",
        "RecordEvent:CandidateTaken",
        "RecordEvent:GatePassed",
        "RecordEvent:CanaryStep",
        "RequeueAfter",
    ]
    status_patch = actions[2].patch
    assert status_patch["applied"] == {"storageUri": "pvc://m/v1", "canaryTrafficPercent": 10}
    assert status_patch["current"]["step"] == 0 and status_patch["phase"] == "Canary"
    assert actions[3] == PatchInferenceService(
        "isvc",
        {
            "spec": {
                "predictor": {"model": {"storageUri": "pvc://m/v1"}, "canaryTrafficPercent": 10}
            }
        },
    )
    assert w.version_phase("v1") == "Canary"
    assert w.versions["v1"].status["evaluation"]["passed"] is True


def test_the_step_clock_starts_only_when_kserve_reports_the_step():
    w = world_with("v1")
    w.step()
    assert not analysis_due(w.resource(), w.now)
    # not reported yet: KServe has not caught up with the generation
    assert kinds(w.step()) == ["RequeueAfter"]
    w.kserve(ready=False)
    assert kinds(w.step()) == ["RequeueAfter"]
    w.kserve()
    actions = w.step()
    assert kinds(actions) == [
        "PatchModelVersionStatus",
        "PatchStatus",
        "RecordEvent:StepReached",
        "RequeueAfter",
    ]
    assert w.status["current"]["stepStartTime"] == T0.isoformat().replace("+00:00", "Z")
    assert w.versions["v1"].status["serving"][0]["role"] == "canary"
    assert analysis_due(w.resource(), w.now)


def test_a_step_advances_after_its_interval_with_the_analysis_in_bounds_throughout():
    w = world_with("v1")
    to_canary(w)
    w.tick(1)
    w.step(in_bounds(w))
    assert w.status["current"]["step"] == 0
    w.tick(5)
    w.step(in_bounds(w))
    w.tick(4)  # 10s since the step started, but the last query was 5s after the first
    assert w.status["current"]["step"] == 0
    actions = w.step(None)
    assert not any(isinstance(a, PatchInferenceService) for a in actions)
    w.tick(1)
    actions = w.step(in_bounds(w))
    assert w.status["current"]["step"] == 1
    assert w.isvc.percent == 50 and kinds(actions)[-2:] == [
        "RecordEvent:CanaryStep",
        "RequeueAfter",
    ]


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (
            QueryOutcome(T0, error="connection refused", error_reason="PrometheusUnreachable"),
            "PrometheusUnreachable",
        ),
        (QueryOutcome(T0, None), "NoData"),
        (QueryOutcome(T0, float("nan")), "NoData"),
        (QueryOutcome(T0, error="not allowed", error_reason="PolicyViolation"), "PolicyViolation"),
    ],
    ids=["prometheus-down", "no-data", "nan", "policy"],
)
def test_missing_analysis_holds_the_step_and_never_advances(outcome, reason):
    w = world_with("v1")
    to_canary(w)
    for _ in range(6):
        w.tick(5)
        w.step(QueryOutcome(w.now, outcome.value, outcome.error, outcome.error_reason))
        assert w.status["current"]["step"] == 0 and w.isvc.percent == 10
    c = cond(w, "AnalysisHealthy")
    assert c["status"] == "Unknown" and c["reason"] == reason
    assert w.status["current"]["analysis"]["lastErrorReason"] == reason
    # once the analysis is back it must hold a whole interval again
    w.tick(5)
    w.step(in_bounds(w))
    assert w.status["current"]["step"] == 0
    w.tick(10)
    w.step(in_bounds(w))
    assert w.status["current"]["step"] == 1


@pytest.mark.parametrize("value", [0.5, float("inf")], ids=["above-max", "plus-inf"])
def test_out_of_bounds_rolls_back_to_the_serving_uri(value):
    w = world_with("v1")
    to_canary(w)
    w.tick(5)
    actions = w.step(QueryOutcome(w.now, value))
    assert kinds(actions)[:4] == [
        "PatchModelVersionStatus",
        "PatchStatus",
        "PatchInferenceService",
        "RecordEvent:RolledBack",
    ]
    assert w.status["applied"] == {"storageUri": SERVED} and w.status["phase"] == "RollingBack"
    assert actions[2].patch == {
        "spec": {"predictor": {"model": {"storageUri": SERVED}, "canaryTrafficPercent": None}}
    }
    v1 = w.versions["v1"].status
    assert (
        v1["phase"] == "RolledBack" and v1["rolledBackTime"] and "> max 0.1" in v1["rolloutMessage"]
    )
    assert w.status["history"][-1]["outcome"] == "RolledBack"
    w.kserve()
    w.step()
    assert w.status["phase"] == "Idle" and "current" not in w.status
    assert w.status["servingVersion"] == "v0"
    assert w.plan() == []


def test_promotion_makes_the_candidate_the_default():
    w = world_with("v1")
    promote(w)
    assert w.status["phase"] == "Promoting"
    assert w.isvc_writes[-1] == {
        "spec": {"predictor": {"model": {"storageUri": "pvc://m/v1"}, "canaryTrafficPercent": None}}
    }
    actions = w.step()
    assert kinds(actions) == [
        "PatchModelVersionStatus",
        "PatchModelVersionStatus",
        "PatchStatus",
        "RecordEvent:Promoted",
    ]
    assert w.status["servingVersion"] == "v1" and w.status["previousVersion"] == "v0"
    assert w.version_phase("v1") == "Serving" and w.version_phase("v0") == "Retired"
    assert w.versions["v0"].status["serving"][0]["until"]
    roles = [r["role"] for r in w.versions["v1"].status["serving"]]
    assert roles == ["canary", "default"]
    assert w.status["history"][-1]["outcome"] == "Promoted"
    assert w.plan() == []


def test_crash_between_status_and_isvc_patch_remakes_the_patch_once():
    w = world_with("v1")
    actions = w.plan()
    cut = next(i for i, a in enumerate(actions) if isinstance(a, PatchInferenceService))
    w.apply(actions[:cut])  # the status recorded step 1; the ISVC was not patched
    assert w.isvc.uri == SERVED and w.status["applied"]["canaryTrafficPercent"] == 10
    actions = w.step()
    assert [type(a) for a in actions] == [PatchInferenceService, RequeueAfter]
    assert w.isvc.percent == 10 and w.status["current"]["step"] == 0


def test_hand_edit_pauses_and_matching_again_resumes():
    w = world_with("v1")
    to_canary(w)
    w.isvc.uri = "pvc://m/hand"
    actions = w.step()
    assert not any(isinstance(a, PatchInferenceService) for a in actions)
    assert w.status["phase"] == "Paused"
    c = cond(w, "Paused")
    assert c["status"] == "True" and c["reason"] == "InferenceServiceEditedByHand"
    assert w.plan() == []
    w.isvc.uri = "pvc://m/v1"
    w.step()
    assert w.status["phase"] == "Canary" and cond(w, "Paused")["status"] == "False"


def test_rejecting_while_paused_rolls_back_over_the_hand_edit():
    w = world_with("v1")
    to_canary(w)
    w.isvc.uri = "pvc://m/hand"
    w.step()
    w.annotations["modelops.dev/reject"] = "v1"
    w.step()
    assert w.status["phase"] == "RollingBack" and w.isvc.uri == SERVED and w.isvc.percent is None


@pytest.mark.parametrize("reason", ["InferenceServiceNotFound", "KServeNotInstalled"])
def test_missing_inference_service_pauses(reason):
    w = world_with("v1")
    w.isvc = None
    obs = replace(w.observed(), isvc_missing_reason=reason)
    actions = plan_rollout(obs, OperatorConfig(), w.now)
    w.apply(actions)
    assert w.status["phase"] == "Paused" and cond(w, "Paused")["reason"] == reason
    assert not any(isinstance(a, (PatchInferenceService, CreateJob)) for a in actions)


def test_invalid_spec_is_reported_naming_the_field():
    w = World(spec={"inferenceService": {"name": "isvc"}, "candidates": []})
    actions = w.step()
    assert kinds(actions) == ["PatchStatus", "RecordEvent:InvalidSpec"]
    assert "candidates" in cond(w, "SpecValid")["message"]
    assert w.plan() == []


def test_a_single_100_step_promotes_without_canary():
    w = world_with("v1", canary={"steps": [100], "interval": "0s"})
    w.step()
    assert (
        w.status["phase"] == "Promoting" and w.isvc.percent is None and w.isvc.uri == "pvc://m/v1"
    )
    w.kserve()
    w.step()
    assert w.status["servingVersion"] == "v1"


def test_analysis_due_follows_the_analysis_interval():
    w = world_with("v1")
    to_canary(w)
    assert analysis_due(w.resource(), w.now)
    w.step(in_bounds(w))
    assert not analysis_due(w.resource(), w.now + timedelta(seconds=4))
    assert analysis_due(w.resource(), w.now + timedelta(seconds=5))


def test_requeue_is_the_next_step_or_query_time():
    w = world_with("v1")
    to_canary(w)
    actions = w.step(in_bounds(w))
    assert actions[-1] == RequeueAfter(5.0)


def test_first_rollout_onto_an_isvc_without_a_model_survives_a_crash():
    w = world_with("v1")
    w.isvc.uri = None
    actions = w.plan()
    cut = next(i for i, a in enumerate(actions) if isinstance(a, PatchInferenceService))
    w.apply(actions[:cut])
    assert [type(a) for a in w.step()] == [PatchInferenceService, RequeueAfter]
    assert w.status["phase"] == "Canary" and w.isvc.uri == "pvc://m/v1"


def test_rolling_back_with_nothing_served_before_leaves_no_candidate():
    w = world_with("v1")
    w.isvc.uri = None
    to_canary(w)
    w.tick(5)
    w.step(QueryOutcome(w.now, 0.9))
    assert w.status["phase"] == "Idle" and "current" not in w.status
    assert w.version_phase("v1") == "RolledBack"


def test_resuming_before_kserve_reports_the_step_is_canary_again():
    w = world_with("v1")
    w.step()  # step 1 applied, not yet reported
    w.isvc.uri = "pvc://m/hand"
    w.step()
    assert w.status["phase"] == "Paused"
    w.isvc.uri = "pvc://m/v1"
    w.step()
    assert w.status["phase"] == "Canary" and "stepStartTime" not in w.status["current"]


def refusing_gate() -> Gate:
    """A policy that allows no Prometheus endpoint: the rollout's analysis is refused."""
    policy = ModelOpsPolicySpec.model_validate({})
    return Gate(policy=PolicyView(policies=(policy,), source="ModelOpsPolicy ns/p"))


def test_a_rollout_the_policy_refuses_touches_nothing_and_says_why():
    """A defect found in review: only the analysis query checked the policy, so a rollout
    admitted before the policy was tightened still got its evaluation Job and patched the
    InferenceService. Now nothing is touched until it is allowed again."""
    url = "http://prometheus.example:9090"
    w = world_with(
        "v1",
        canary={
            "steps": [10, 100],
            "interval": "1s",
            "analysis": {"prometheusUrl": url, "query": "max(err)", "max": 0.01},
        },
    )
    actions = plan_rollout(replace(w.observed(), gate=refusing_gate()), OperatorConfig(), w.now)
    assert kinds(actions) == ["PatchStatus", "RecordEvent:" + actions[1].reason]
    w.apply(actions)
    violation = cond(w, "PolicyViolation")
    assert violation["status"] == "True" and "allowedPrometheusEndpoints" in violation["message"]
    assert cond(w, "Ready")["status"] == "False"
    again = plan_rollout(replace(w.observed(), gate=refusing_gate()), OperatorConfig(), w.now)
    assert again == []  # said once
    w.step()  # the policy relaxed: the rollout proceeds and the condition clears
    assert cond(w, "PolicyViolation")["status"] == "False"
    assert w.status["current"]["version"] == "v1"


def test_gate_and_progress_conditions_follow_the_candidate():
    w = world_with("v1")
    to_canary(w)
    assert cond(w, "GatePassed")["status"] == "True"
    assert cond(w, "Progressing")["status"] == "True"
    assert cond(w, "Progressing")["reason"] == "Canary"
    w = world_with("v1")
    promote(w)
    w.kserve()
    w.step()
    assert w.status["phase"] == "Idle"
    assert cond(w, "Progressing")["status"] == "False"
    assert cond(w, "Progressing")["reason"] == "NoCandidate"


def test_a_failed_gate_is_a_false_gatepassed_condition_naming_the_metric():
    w = world_with("v1")
    w.versions["v1"] = replace(
        w.versions["v1"], spec={**w.versions["v1"].spec, "metrics": {"perplexity": 1e6}}
    )
    w.step()
    gate = cond(w, "GatePassed")
    assert gate["status"] == "False" and gate["reason"] == "MetricFailed"
    assert "perplexity" in gate["message"]


def test_no_canary_before_kserve_served_the_inference_service():
    """A defect the e2e tier found (test_release_faults.py): a rollout adopted an
    InferenceService KServe had not reported yet and patched it at once; KServe's first
    revision was then the canary's, with all of the traffic, and the step waited
    forever for its 10% split."""
    w = world_with("v1")
    w.isvc.observed_generation = None
    w.isvc.ready = False
    actions = w.step()
    assert not [a for a in actions if isinstance(a, PatchInferenceService)]
    assert "waiting for KServe" in w.status["message"]
    assert any(isinstance(a, RequeueAfter) for a in actions)
    w.kserve()
    actions = w.step()
    assert [a for a in actions if isinstance(a, PatchInferenceService)]
    assert w.status["applied"]["canaryTrafficPercent"] == 10


def test_waiting_for_kserve_after_an_undone_hand_edit_is_not_paused():
    """Found by test_rollout_machine after the wait for KServe was added: a hand edit
    undone while KServe was not Ready left the phase Paused (with Paused=False,
    Resumed), because the wait set no phase of its own."""
    w = world_with("v1")
    w.isvc.ready = False
    w.step()
    assert w.status["phase"] == "Canary" and "waiting for KServe" in w.status["message"]
    w.isvc.uri = "pvc://m/by-hand"
    w.step()
    assert w.status["phase"] == "Paused"
    w.isvc.uri = SERVED
    w.step()
    assert w.status["phase"] == "Canary" and "waiting for KServe" in w.status["message"]
    assert cond(w, "Paused")["status"] == "False"
