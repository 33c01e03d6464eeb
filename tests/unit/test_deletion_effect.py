"""When an UnlearnRequest's deletion is effective in serving (reconcile/deletion_effect.py):
pending while a rollout serves the model it unlearned from, overdue past maxDelay,
effective once its version (or one made from it) is the default."""

from datetime import UTC, datetime, timedelta

import pytest

from modelops_operator.reconcile.actions import MetricUpdate, PatchStatus, RecordEvent
from modelops_operator.reconcile.deletion_effect import (
    ancestors,
    deletion_effect,
    deletion_plan,
)
from modelops_operator.reconcile.observed import ResourceView, VersionView
from modelops_operator.reconcile.status_patch import apply_merge_patch

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
DONE = NOW - timedelta(minutes=10)


def version(name, parent=None, parent_uri=None, kind="PruneRetrain"):
    parents = []
    if parent or parent_uri:
        parents = [{"role": "base", "uri": parent_uri or f"s3://m/{parent}", "version": parent}]
    spec = {"uri": f"s3://m/{name}", "parents": parents, "source": {"kind": kind, "name": name}}
    return VersionView(name, spec, {})


P, V, W, Q = version("p"), version("v", "p", kind="UnlearnRequest"), version("w", "v"), version("q")
VERSIONS = [P, V, W, Q]


def request(status=None, phase="Succeeded"):
    st = {"phase": phase, "modelVersion": "v", "completionTime": "2026-12-02T03:50:00Z"}
    return ResourceView("UnlearnRequest", "forget", "ns", "uid", 1, {}, {**st, **(status or {})})


def rollout(serving, max_delay=None, name="ro", since="2026-12-02T03:55:00Z"):
    spec = {"inferenceService": {"name": f"isvc-{name}"}}
    if max_delay:
        spec["unlearning"] = {"maxDelay": max_delay}
    status = {"servingVersion": serving, "servingSince": since} if serving else {}
    return ResourceView("ModelRollout", name, "ns", "u", 1, spec, status)


CASES = [
    ("not-succeeded", request(phase="Running"), [rollout("p")], None),
    ("parent-never-served", request(), [rollout("q")], None),
    ("nothing-serves", request(), [rollout(None)], None),
    ("parent-serves", request(), [rollout("p")], ("False", "DeletionPending")),
    ("parent-serves-overdue", request(), [rollout("p", "5m")], ("False", "DeletionOverdue")),
    ("own-version-serves", request(), [rollout("v")], ("True", "DeletionEffective")),
    ("descendant-serves", request(), [rollout("w")], ("True", "DeletionEffective")),
    (
        "one-of-two-still-serves-the-parent",
        request(),
        [rollout("v", name="a"), rollout("p", name="b")],
        ("False", "DeletionPending"),
    ),
    (
        "recorded-effective-stays",
        request(
            {
                "deletionEffective": {
                    "time": "2026-12-02T03:55:00Z",
                    "inferenceService": "x",
                    "version": "v",
                }
            }
        ),
        [rollout("p")],
        ("True", "DeletionEffective"),
    ),
]


@pytest.mark.parametrize(
    ("req", "rollouts", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_deletion_effect(req, rollouts, expected):
    effect = deletion_effect(req, VERSIONS, rollouts, NOW)
    if expected is None:
        assert effect is None
        return
    assert effect is not None
    assert effect.condition[1:3] == expected
    if expected[0] == "False":
        assert effect.pending_since == DONE and effect.pending_seconds == 600.0
        assert "isvc-b" in effect.condition[3] or "isvc-ro" in effect.condition[3]
    else:
        assert effect.pending_seconds == 0.0 and effect.effective is not None


def test_effective_names_the_inferenceservice_version_and_time():
    effect = deletion_effect(request(), VERSIONS, [rollout("w")], NOW)
    assert effect is not None and effect.effective == {
        "time": datetime(2026, 12, 2, 3, 55, tzinfo=UTC),
        "inferenceService": "isvc-ro",
        "version": "w",
    }


def test_parent_known_by_uri_only():
    v = version("v", parent_uri="s3://m/p")
    v = VersionView("v", {**v.spec, "parents": [{"role": "base", "uri": "s3://m/p"}]}, {})
    effect = deletion_effect(request(), [P, v], [rollout("p")], NOW)
    assert effect is not None and effect.condition[2] == "DeletionPending"


def test_lineage_cycles_terminate():
    parents = {"a": ["b"], "b": ["a"], "c": ["a"]}
    assert ancestors("c", parents) == {"a", "b", "c"}


def test_plan_pending_then_overdue_event_once_then_effective():
    req = request()
    pending = deletion_plan(
        [], req, deletion_effect(req, VERSIONS, [rollout("p", "15m")], NOW), NOW
    )
    patch = next(a.patch for a in pending if isinstance(a, PatchStatus))
    assert patch["deletionPendingSince"] == "2026-12-02T03:50:00Z"
    assert [a for a in pending if isinstance(a, RecordEvent)] == []
    gauge = next(a for a in pending if isinstance(a, MetricUpdate))
    assert (gauge.name, gauge.value) == ("modelops_deletion_pending_seconds", 600.0)
    req = request(apply_merge_patch(req.status, patch))
    later = NOW + timedelta(minutes=10)
    overdue = deletion_plan(
        [], req, deletion_effect(req, VERSIONS, [rollout("p", "15m")], later), later
    )
    assert [a.reason for a in overdue if isinstance(a, RecordEvent)] == ["DeletionOverdue"]
    req = request(apply_merge_patch(req.status, overdue[0].patch))  # type: ignore[union-attr]
    again = deletion_plan(
        [], req, deletion_effect(req, VERSIONS, [rollout("p", "15m")], later), later
    )
    assert [a for a in again if not isinstance(a, MetricUpdate)] == []  # once
    done = deletion_plan([], req, deletion_effect(req, VERSIONS, [rollout("v")], later), later)
    patch = next(a.patch for a in done if isinstance(a, PatchStatus))
    assert patch["deletionPendingSince"] is None
    assert patch["deletionEffective"]["version"] == "v"
    cond = next(c for c in patch["conditions"] if c["type"] == "DeletionEffective")
    assert (cond["status"], cond["reason"]) == ("True", "DeletionEffective")
    assert next(a for a in done if isinstance(a, MetricUpdate)).value == 0.0


def test_plan_keeps_the_requests_own_status_write():
    req = request()
    own = PatchStatus({"phase": "Succeeded", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "",
         "lastTransitionTime": "2026-12-02T03:50:00Z", "observedGeneration": 1}]})  # fmt: skip
    out = deletion_plan([own], req, deletion_effect(req, VERSIONS, [rollout("p")], NOW), NOW)
    patches = [a for a in out if isinstance(a, PatchStatus)]
    assert len(patches) == 1 and patches[0].patch["phase"] == "Succeeded"
    assert {c["type"] for c in patches[0].patch["conditions"]} == {"Ready", "DeletionEffective"}
