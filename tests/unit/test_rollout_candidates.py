"""The rollout's candidates, plan by plan: the gate (recorded metrics and the
evaluation Job), approval and rejection, superseding, UnlearnRequest versions taken
first and the deletion's effect in serving, the MLflow registry actions, and versions
that failed never coming back. The KServe stand-in is `tests/rollout_world.World.kserve()`."""

import json
from datetime import timedelta

import pytest
from tests.rollout_world import (
    EVAL_GATE,
    SERVED,
    T0,
    World,
    cond,
    kinds,
    promote,
    rollout_spec,
    to_canary,
    version,
    world_with,
)

from modelops_operator.build.evaluation import evaluation_job_name
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile.actions import (
    DeleteJob,
    PatchInferenceService,
    RecordEvent,
    RegisterVersion,
    SetRegistryAliases,
)


def test_gate_failure_leaves_serving_untouched_and_says_by_how_much():
    w = world_with()
    w.step()
    w.add(version("v1", T0 - timedelta(hours=1), metrics={"perplexity": 44.0}))
    actions = w.step()
    assert not any(isinstance(a, PatchInferenceService) for a in actions)
    v1 = w.versions["v1"].status
    assert v1["phase"] == "GateFailed" and v1["evaluation"]["passed"] is False
    assert "perplexity 44 > threshold 40: past the threshold by 4" in v1["rolloutMessage"]
    warning = next(a for a in actions if isinstance(a, RecordEvent) and a.reason == "GateFailed")
    assert warning.type == "Warning" and "perplexity 44" in warning.message
    assert w.status["history"][-1]["outcome"] == "GateFailed" and w.isvc_writes == []
    assert w.plan() == []


def test_evaluation_job_scores_candidate_and_serving_version():
    w = world_with("v1", gate=EVAL_GATE)
    actions = w.step()
    assert kinds(actions)[:2] == ["EnsureConfigMap", "CreateJob"]
    job = actions[1].manifest
    name = job["metadata"]["name"]
    assert len(name) <= 63 and name.startswith("ro-eval-")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
    doc = json.loads(actions[0].manifest["data"]["spec.json"])
    assert doc["kind"] == "ModelEvaluation"
    assert (
        doc["spec"]["candidate"]["version"] == "v1" and doc["spec"]["baseline"]["version"] == "v0"
    )
    assert (
        doc["spec"]["metrics"] == ["perplexity"]
        and doc["spec"]["data"]["uri"] == "pvc://d/heldout.jsonl"
    )
    assert w.status["phase"] == "Evaluating" and w.status["current"]["evaluationJob"] == name
    again = w.step()
    assert [type(a) for a in again] == []  # the Job runs: nothing to do
    w.finish_eval({"perplexity": 31.2}, {"perplexity": 30.0})
    actions = w.step()
    assert not any(isinstance(a, PatchInferenceService) for a in actions)
    assert (
        "perplexity 31.2 > limit 30.6 (serving 30 + 2%): worse by 4%"
        in w.versions["v1"].status["rolloutMessage"]
    )
    assert w.versions["v1"].status["evaluation"]["baselineVersion"] == "v0"


def test_a_failed_evaluation_job_fails_the_gate():
    w = world_with("v1", gate=EVAL_GATE)
    w.step()
    w.finish_eval({}, ok=False)
    w.step()
    assert w.version_phase("v1") == "GateFailed" and w.isvc_writes == []


def test_approval_waits_with_the_kubectl_command_then_proceeds():
    w = world_with("v1", requireApproval=True)
    w.step()
    c = cond(w, "AwaitingApproval")
    assert c["status"] == "True"
    assert (
        "kubectl annotate modelrollout ro -n ns --overwrite modelops.dev/approve=v1" in c["message"]
    )
    assert w.status["phase"] == "AwaitingApproval" and w.isvc_writes == []
    assert w.plan() == []
    w.annotations["modelops.dev/approve"] = "v0"  # another version: ignored
    assert w.plan() == []
    w.annotations["modelops.dev/approve"] = "v1"
    w.step()
    assert w.status["phase"] == "Canary" and w.isvc.percent == 10
    assert cond(w, "AwaitingApproval")["status"] == "False"


def test_reject_before_traffic_and_in_canary():
    w = world_with("v1", requireApproval=True)
    w.step()
    w.annotations["modelops.dev/reject"] = "v1"
    w.step()
    assert w.version_phase("v1") == "Rejected" and "current" not in w.status and w.isvc_writes == []
    w2 = world_with("v1")
    to_canary(w2)
    w2.annotations["modelops.dev/reject"] = "v1"
    w2.step()
    assert w2.status["phase"] == "RollingBack" and w2.isvc.uri == SERVED


def test_a_newer_candidate_supersedes_a_pending_one_but_not_a_canary():
    w = world_with("v1", requireApproval=True)
    w.step()
    w.add(version("v2", T0 - timedelta(minutes=30)))
    actions = w.step()
    assert w.version_phase("v1") == "Superseded" and w.status["current"]["version"] == "v2"
    assert any(isinstance(a, RecordEvent) and a.reason == "Superseded" for a in actions)
    w.annotations["modelops.dev/approve"] = "v2"
    w.step()
    w.kserve()
    w.step()
    w.add(version("v3", T0 - timedelta(minutes=10)))
    w.step()
    assert w.status["current"]["version"] == "v2" and w.versions["v3"].status == {}


def test_superseding_deletes_the_pending_evaluation_job():
    w = world_with("v1", gate=EVAL_GATE)
    w.step()
    job = w.status["current"]["evaluationJob"]
    w.add(version("v2", T0 - timedelta(minutes=30)))
    actions = w.step()
    assert DeleteJob(job, "ns") in actions


def test_an_unlearning_version_of_the_serving_one_is_taken_first_and_required():
    w = world_with()
    w.step()
    parent = [{"role": "base", "uri": SERVED, "version": "v0"}]
    w.add(
        version("u1", T0 - timedelta(hours=1), source=("UnlearnRequest", "forget"), parents=parent)
    )
    w.add(version("v9", T0 - timedelta(minutes=1)))
    w.step()
    assert w.status["current"]["version"] == "u1" and w.status["current"]["unlearning"] is True
    d = cond(w, "DeletionEffective")
    assert d["status"] == "False" and d["reason"] == "DeletionPending"
    promote(w)
    w.step()
    assert w.status["servingVersion"] == "u1"
    d = cond(w, "DeletionEffective")
    assert d["status"] == "True" and "effective in serving since" in d["message"]


def test_deletion_not_effective_past_the_deadline_warns_once():
    w = world_with(unlearning={"maxDelay": "1h"})
    w.step()
    parent = [{"role": "base", "uri": SERVED, "version": "v0"}]
    w.add(
        version(
            "u1",
            T0 - timedelta(hours=2),
            source=("UnlearnRequest", "forget"),
            parents=parent,
            metrics={"perplexity": 99.0},
        )
    )
    actions = w.step()  # its gate fails: the deletion never reaches serving
    assert w.version_phase("u1") == "GateFailed"
    assert any(isinstance(a, RecordEvent) and a.reason == "DeletionOverdue" for a in actions)
    assert cond(w, "DeletionEffective")["reason"] == "DeletionOverdue"
    assert not any(isinstance(a, RecordEvent) for a in w.step())


def test_registry_registers_versions_and_aliases_follow_the_rollout():
    w = world_with("v1", registry={"modelName": "llm"})
    w.registry_configured = True
    actions = w.step()
    registered = [a.version for a in actions if isinstance(a, RegisterVersion)]
    assert registered == ["v0", "v1"]
    tags = next(a for a in actions if isinstance(a, RegisterVersion) and a.version == "v1").tags
    assert tags["modelops.metric.perplexity"] == "30.0"
    assert tags["modelops.namespace"] == "ns"
    assert {a.model_name for a in actions if isinstance(a, RegisterVersion)} == {"ns.llm"}
    actions = w.step()
    assert SetRegistryAliases("ns.llm", "v0", "v1") in actions
    promote(w)
    w.step()
    w.step()
    assert w.status["registryAliases"] == {"champion": "v1"}


def test_no_registry_actions_without_an_installation_url():
    w = world_with("v1", registry={"modelName": "llm"})
    assert not any(isinstance(a, (RegisterVersion, SetRegistryAliases)) for a in w.step())


def test_versions_that_failed_never_come_back():
    w = world_with("v1")
    to_canary(w)
    w.tick(5)
    w.step(QueryOutcome(w.now, 9.0))
    w.kserve()
    w.step()
    w.status["history"] = []  # aged out of the bounded history
    w.step()
    assert "current" not in w.status


def test_first_candidate_against_no_baseline_passes_serving_rules_saying_so():
    w = World(spec=rollout_spec(gate=EVAL_GATE))
    w.isvc.uri = "pvc://m/unrecorded"
    w.add(version("v1", T0))
    doc = json.loads(w.step()[0].manifest["data"]["spec.json"])
    assert "baseline" not in doc["spec"]
    w.finish_eval({"perplexity": 99.0})
    w.step()
    ev = w.versions["v1"].status["evaluation"]
    assert ev["passed"] and "nothing to compare with" in ev["checks"][0]["message"]
    assert w.status["phase"] == "Canary"


def test_the_evaluation_job_is_named_within_63_and_mounts_every_claim_read_only():
    long = "r" * 63
    name = evaluation_job_name(long, "sha256:" + "ab" * 32)
    assert len(name) <= 63 and name.startswith("r" * 10) and "-eval-" in name
    assert name != evaluation_job_name(long, "sha256:" + "cd" * 32)
    w = world_with("v1", gate=EVAL_GATE, evaluationJob={"image": "registry.local/jobs:eval"})
    cm, job = w.step()[:2]
    pod = job.manifest["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.local/jobs:eval"
    claims = [m for m in pod["containers"][0]["volumeMounts"] if m["name"].startswith("pvc-")]
    assert claims and all(m.get("readOnly") for m in claims)
    assert cm.manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-ro"


def test_a_version_at_the_served_uri_is_not_rolled_out():
    w = world_with()
    w.step()
    w.add(version("v1", T0 - timedelta(hours=1), uri=SERVED))
    assert w.step() == [] and "current" not in w.status


@pytest.mark.parametrize(
    "candidate",
    [{"perplexity": True}, {"perplexity": "31.0"}, {"perplexity": None}, {}, "not-an-object"],
    ids=["bool", "text", "null", "missing", "not-an-object"],
)
def test_an_evaluation_result_without_a_number_fails_the_gate(candidate):
    w = world_with("v1", gate=EVAL_GATE)
    w.step()
    w.finish_eval(candidate, {"perplexity": 30.0})
    w.step()
    assert w.version_phase("v1") == "GateFailed" and w.isvc_writes == []
    assert "reported no value" in w.versions["v1"].status["rolloutMessage"]


def test_history_keeps_the_last_20_outcomes():
    w = world_with()
    w.step()
    for i in range(1, 26):
        w.tick(1)
        w.add(version(f"b{i}", w.now, metrics={"perplexity": 99.0}))
        w.step()
    history = w.status["history"]
    assert len(history) == 20 and history[0]["version"] == "b6" and history[-1]["version"] == "b25"
    assert all(w.version_phase(f"b{i}") == "GateFailed" for i in range(1, 26))
    assert w.plan() == []  # the versions that aged out of the history are not taken again
