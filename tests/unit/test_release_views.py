"""What a ModelRollout's plan is shown (reconcile/candidate_versions.py), how an
InferenceService is read (k8s/inferenceservices.isvc_view), and what its decisions
count as metrics (release_metrics.py)."""

from datetime import UTC, datetime

import pytest

from modelops_operator import metrics
from modelops_operator.k8s.inferenceservices import isvc_view, missing_reason
from modelops_operator.reconcile.actions import PatchModelVersionStatus, PatchStatus
from modelops_operator.reconcile.candidate_versions import rollout_versions
from modelops_operator.reconcile.observed import ResourceView, RolloutObserved, VersionView
from modelops_operator.release_metrics import canary_percent, record_rollout

SPEC = {
    "inferenceService": {"name": "web"},
    "candidates": [{"kind": "ModelAdaptation", "name": "a"}],
}


def version(name, kind="ModelAdaptation", source="a", created="2026-12-02T01:00:00Z", base=None):
    parents = [{"role": "base", "uri": f"s3://m/{base}", "version": base}] if base else []
    spec = {
        "uri": f"s3://m/{name}",
        "source": {"kind": kind, "name": source},
        "createdTime": created,
        "parents": parents,
    }
    return VersionView(name, spec, {})


def names(views):
    return [v.name for v in views]


CASES = [
    ("candidate-source", {}, [version("v1"), version("x", source="other")], None, ["v1"]),
    ("wrong-kind-same-name", {}, [version("v1", kind="PruneRetrain")], None, []),
    (
        "oldest-first",
        {},
        [
            version("b", created="2026-12-02T02:00:00Z"),
            version("a2", created="2026-12-02T01:00:00Z"),
        ],
        None,
        ["a2", "b"],
    ),
    ("named-in-status", {"servingVersion": "s"}, [version("s", source="gone")], None, ["s"]),
    ("serving-uri-adopted", {}, [version("s", source="gone")], "s3://m/s", ["s"]),
    (
        "unlearning-from-serving",
        {"servingVersion": "s"},
        [version("s", source="gone"), version("u", kind="UnlearnRequest", source="f", base="s")],
        None,
        ["s", "u"],
    ),
    (
        "unlearning-from-another",
        {"servingVersion": "s"},
        [version("u", kind="UnlearnRequest", source="f", base="other")],
        None,
        [],
    ),
]


@pytest.mark.parametrize(
    ("status", "versions", "uri", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rollout_versions(status, versions, uri, expected):
    assert names(rollout_versions(SPEC, status, versions, uri)) == expected


KSERVE_STATUS = {
    "observedGeneration": 3,
    "conditions": [{"type": "Ready", "status": "True"}],
    "components": {
        "predictor": {
            "traffic": [
                {"revisionName": "web-predictor-00002", "percent": 10, "latestRevision": True},
                {"revisionName": "web-predictor-00001", "percent": 90, "latestRevision": False},
            ],
            "latestReadyRevision": "web-predictor-00002",
            "previousRolledoutRevision": "web-predictor-00001",
        }
    },
}


def test_isvc_view_reads_what_kserve_writes():
    body = {
        "metadata": {"name": "web", "generation": 3},
        "spec": {"predictor": {"model": {"storageUri": "s3://m/v2"}, "canaryTrafficPercent": 10}},
        "status": KSERVE_STATUS,
    }
    view = isvc_view(body)
    assert (view.storage_uri, view.canary_traffic_percent, view.ready) == ("s3://m/v2", 10, True)
    assert view.observed_generation == 3 and view.generation == 3
    assert view.traffic == (("web-predictor-00002", 10, True), ("web-predictor-00001", 90, False))
    assert view.previous_rolledout_revision == "web-predictor-00001"
    bare = isvc_view({"metadata": {"name": "web", "generation": 1}, "spec": {}})
    assert (bare.storage_uri, bare.canary_traffic_percent, bare.ready, bare.traffic) == (
        None,
        None,
        False,
        (),
    )


def test_missing_reason_tells_no_api_from_no_object():
    assert missing_reason(True) == "InferenceServiceNotFound"
    assert missing_reason(False) == "KServeNotInstalled"


PERCENT_CASES = [
    ("idle", {}, 0.0),
    ("evaluating", {"current": {"step": -1, "uri": "u2"}, "applied": {"storageUri": "u1"}}, 0.0),
    (
        "step",
        {
            "current": {"step": 0, "uri": "u2"},
            "applied": {"storageUri": "u2", "canaryTrafficPercent": 10},
        },
        10.0,
    ),
    ("promoting", {"current": {"step": 2, "uri": "u2"}, "applied": {"storageUri": "u2"}}, 100.0),
    (
        "rolling-back",
        {"current": {"step": 1, "uri": "u2"}, "applied": {"storageUri": "u1"}},
        0.0,
    ),
]


@pytest.mark.parametrize(
    ("status", "expected"), [c[1:] for c in PERCENT_CASES], ids=[c[0] for c in PERCENT_CASES]
)
def test_canary_percent(status, expected):
    assert canary_percent(status) == expected


def sample(name, labels):
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def test_record_rollout_counts_each_decision_once():
    res = ResourceView("ModelRollout", "rm", "ns-m", "u", 1, SPEC, {"history": []})
    labels = {"namespace": "ns-m", "name": "rm", "kind": "ModelRollout"}
    now = datetime(2026, 12, 2, 4, 0, tzinfo=UTC).isoformat()
    entry = {"version": "v1", "outcome": "RolledBack", "time": now, "message": ""}
    verdict = PatchModelVersionStatus("v2", {"evaluation": {"passed": False, "time": now}})
    actions = [PatchStatus({"history": [entry]}), verdict]
    before = [sample(f"modelops_{m}_total", labels) for m in ("rollout_rollbacks", "gate_failures")]
    observed = RolloutObserved(resource=res, versions=(VersionView("v2", {}, {}),))
    record_rollout(observed, actions)
    after = [sample(f"modelops_{m}_total", labels) for m in ("rollout_rollbacks", "gate_failures")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0, 1.0]
    # The same decisions observed again (status and version already hold them): no count.
    res2 = ResourceView("ModelRollout", "rm", "ns-m", "u", 1, SPEC, {"history": [entry]})
    seen = (VersionView("v2", {}, {"evaluation": {"passed": False}}),)
    record_rollout(RolloutObserved(resource=res2, versions=seen), actions)
    again = [sample(f"modelops_{m}_total", labels) for m in ("rollout_rollbacks", "gate_failures")]
    assert again == after
