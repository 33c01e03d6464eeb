"""One ModelRollout per InferenceService: the older one acts, the other reports Conflict
(reconcile/isvc_claims.py), and the additions fold into the plan's one status write
(reconcile/extra_status.py)."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelops_operator.reconcile.actions import PatchStatus, RecordEvent
from modelops_operator.reconcile.extra_status import with_status
from modelops_operator.reconcile.isvc_claims import cleared, conflict_plan, holder
from modelops_operator.reconcile.observed import ResourceView
from modelops_operator.reconcile.status_patch import apply_merge_patch

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)


def rollout(name, isvc="web", age_s=60, namespace="ns", deleting=False, status=None, created=True):
    return ResourceView(
        kind="ModelRollout",
        name=name,
        namespace=namespace,
        uid=f"uid-{name}",
        generation=1,
        spec={
            "inferenceService": {"name": isvc},
            "candidates": [{"kind": "PruneRetrain", "name": "p"}],
        },
        status=status or {},
        creation_time=NOW - timedelta(seconds=age_s) if created else None,
        deleting=deleting,
    )


CASES = [
    ("alone", rollout("b"), [], None),
    ("older-holds", rollout("b", age_s=10), [rollout("a", age_s=60)], "a"),
    ("newer-waits-not", rollout("a", age_s=60), [rollout("b", age_s=10)], None),
    ("same-second-name-decides", rollout("b"), [rollout("a")], "a"),
    ("same-second-first-name-holds", rollout("a"), [rollout("b")], None),
    ("other-isvc", rollout("b", age_s=10), [rollout("a", isvc="other")], None),
    ("other-namespace", rollout("b", age_s=10), [rollout("a", namespace="ns2")], None),
    ("deleting-older-does-not-hold", rollout("b", age_s=10), [rollout("a", deleting=True)], None),
    ("unknown-creation-sorts-last", rollout("b", created=False), [rollout("a", age_s=1)], "a"),
    ("self-in-list", rollout("a"), [rollout("a")], None),
    (
        "three-way-oldest-holds",
        rollout("c", age_s=5),
        [rollout("b", age_s=50), rollout("a", age_s=20)],
        "b",
    ),
]


@pytest.mark.parametrize(
    ("me", "others", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_older_rollout_holds_the_inferenceservice(me, others, expected):
    assert holder(me, others) == expected


def test_every_rollout_agrees_on_one_holder():
    """Whatever order the cache lists them in, exactly one of them acts."""
    group = [rollout(n, age_s=a) for n, a in (("x", 30), ("y", 30), ("z", 90), ("w", 10))]
    acting = [r.name for r in group if holder(r, list(reversed(group))) is None]
    assert acting == ["z"]


def test_conflict_sets_the_condition_and_warns_once():
    me = rollout("b", age_s=10)
    actions = conflict_plan(me, "a", NOW)
    patch = next(a.patch for a in actions if isinstance(a, PatchStatus))
    cond = next(c for c in patch["conditions"] if c["type"] == "Conflict")
    assert (cond["status"], cond["reason"]) == ("True", "InferenceServiceClaimed")
    assert "ModelRollout a" in cond["message"] and "InferenceService web" in cond["message"]
    assert [a.reason for a in actions if isinstance(a, RecordEvent)] == ["InferenceServiceClaimed"]
    again = rollout("b", age_s=10, status=apply_merge_patch({}, patch))
    assert conflict_plan(again, "a", NOW) == []  # level-based: nothing new to write or say


def test_conflict_clears_once_alone_and_keeps_the_plans_own_conditions():
    held = apply_merge_patch({}, conflict_plan(rollout("b"), "a", NOW)[0].patch)  # type: ignore[union-attr]
    me = rollout("b", status=held)
    plan_patch = {"phase": "Idle", "conditions": [*held["conditions"], _cond("Ready", "True")]}
    out = cleared([PatchStatus(plan_patch)], me, NOW)
    assert len(out) == 1 and isinstance(out[0], PatchStatus)
    conds = {c["type"]: c["status"] for c in out[0].patch["conditions"]}
    assert conds == {"Conflict": "False", "Ready": "True"}
    assert out[0].patch["phase"] == "Idle"
    assert cleared([], rollout("b"), NOW) == []  # never in conflict: nothing to clear


def _cond(type_, status):
    return {
        "type": type_,
        "status": status,
        "reason": "R",
        "message": "",
        "lastTransitionTime": "2026-12-02T04:00:00Z",
        "observedGeneration": 1,
    }


def test_with_status_adds_a_status_write_only_when_something_changes():
    status = {"conditions": [_cond("X", "True")], "a": 1}
    same = with_status([], status, NOW, 1, (("X", "True", "R", ""),), {"a": 1})
    assert same == []
    out = with_status([RecordEvent("Normal", "E", "m")], status, NOW, 1, (), {"a": None, "b": 2})
    assert out[0] == RecordEvent("Normal", "E", "m")
    assert out[1] == PatchStatus({"a": None, "b": 2})


ROLLOUTS = st.lists(
    st.tuples(
        st.sampled_from("abcdefgh"),  # name
        st.sampled_from(["web", "chat", "api"]),  # InferenceService
        st.one_of(st.none(), st.integers(0, 5)),  # age (None: no creationTimestamp yet)
        st.booleans(),  # being deleted
    ),
    max_size=12,
    unique_by=lambda r: r[0],
)


@given(ROLLOUTS, st.randoms())
def test_exactly_one_live_rollout_acts_per_inferenceservice(rows, rnd):
    """Whatever the rollouts and whatever order each sees the others in: for every
    InferenceService named by a rollout not being deleted, exactly one such rollout acts,
    and every other names that one as the holder."""
    group = [
        rollout(n, isvc=i, age_s=a or 0, created=a is not None, deleting=d) for n, i, a, d in rows
    ]
    live = [r for r in group if not r.deleting]
    for isvc in {r.spec["inferenceService"]["name"] for r in live}:
        mine = [r for r in live if r.spec["inferenceService"]["name"] == isvc]
        verdicts = {}
        for r in mine:
            others = list(group)
            rnd.shuffle(others)
            verdicts[r.name] = holder(r, others)
        acting = [n for n, h in verdicts.items() if h is None]
        assert len(acting) == 1, verdicts
        assert all(h in (None, acting[0]) for h in verdicts.values()), verdicts
