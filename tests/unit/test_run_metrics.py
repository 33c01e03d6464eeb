"""Metrics from what a reconcile decided (issue 16: recorded next to the metrics, from
the typed status, with no kind names): a run counted once when it finishes, with its
duration; runs of a kind with a run history counted per run; triggers from runCount;
deleted samples from the results; and a status no model accepts records nothing
rather than failing the reconcile."""

import pytest

from modelops_operator import metrics
from modelops_operator.reconcile.actions import PatchStatus
from modelops_operator.reconcile.observed import ResourceView
from modelops_operator.run_metrics import RunMetrics

T0, T1 = "2026-12-01T10:00:00Z", "2026-12-01T10:01:40Z"


def view(kind: str, name: str, status: dict) -> ResourceView:
    return ResourceView(kind, name, "ns", "uid", 1, {}, status)


def sample(metric: str, labels: dict) -> float:
    return metrics.REGISTRY.get_sample_value(metric, labels) or 0.0


CASES = [
    # id, kind, status before, patch, finished, deleted samples
    (
        "prune-succeeds",
        "PruneRetrain",
        {"phase": "Running", "startTime": T0},
        {"phase": "Succeeded", "completionTime": T1},
        ("Succeeded", 1),
        0,
    ),
    (
        "unlearn-succeeds-counts-samples",
        "UnlearnRequest",
        {"phase": "Running", "startTime": T0},
        {"phase": "Succeeded", "completionTime": T1, "results": {"deletedSamples": 7}},
        ("Succeeded", 1),
        7,
    ),
    (
        "transfer-fails",
        "LoRATransfer",
        {"phase": "Pending"},
        {"phase": "Failed"},
        ("Failed", 1),
        0,
    ),
    ("no-change", "PruneRetrain", {"phase": "Running"}, {}, ("Succeeded", 0), 0),
]


@pytest.mark.parametrize(
    ("kind", "before", "patch", "finished", "deleted"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_a_one_shot_run_is_counted_once_when_it_finishes(kind, before, patch, finished, deleted):
    rec = RunMetrics()
    name = f"r-{kind}-{len(before)}-{len(patch)}"
    rec.record(view(kind, name, before), [], None)  # first seen: its phase is known
    phase, count = finished
    labels = {"kind": kind, "phase": phase}
    runs_before = sample("modelops_runs_finished_total", labels)
    durations = sample("modelops_run_duration_seconds_sum", {"kind": kind})
    actions = [PatchStatus(patch)] if patch else []
    rec.record(view(kind, name, before), actions, None)
    rec.record(view(kind, name, {**before, **patch}), [], None)  # nothing new: not again
    assert sample("modelops_runs_finished_total", labels) - runs_before == count
    if count and "completionTime" in patch and "startTime" in before:
        assert sample("modelops_run_duration_seconds_sum", {"kind": kind}) - durations == 100
    got = sample("modelops_deleted_samples_total", {"namespace": "ns", "name": name, "kind": kind})
    assert got == deleted


def test_a_resource_first_seen_finished_is_not_counted():
    rec = RunMetrics()
    labels = {"kind": "PruneRetrain", "phase": "Succeeded"}
    before = sample("modelops_runs_finished_total", labels)
    rec.record(view("PruneRetrain", "old", {"phase": "Succeeded"}), [], None)
    assert sample("modelops_runs_finished_total", labels) == before
    assert rec.phases[("PruneRetrain", "ns", "old")] == "Succeeded"


def test_runs_of_a_kind_with_a_history_are_counted_per_run_and_triggers_from_run_count():
    rec = RunMetrics()
    kind = "ModelAdaptation"
    status = {
        "phase": "Running",
        "runCount": 1,
        "runs": [{"run": 1, "phase": "Running", "trigger": "manual", "startTime": T0}],
    }
    rec.record(view(kind, "ma", status), [], None)
    labels = {"kind": kind, "phase": "Succeeded"}
    before = sample("modelops_runs_finished_total", labels)
    triggers = sample("modelops_triggers_total", {"namespace": "ns", "name": "ma", "kind": kind})
    patch = {
        "phase": "Running",
        "runCount": 2,
        "runs": [
            {
                "run": 1,
                "phase": "Succeeded",
                "trigger": "manual",
                "startTime": T0,
                "completionTime": T1,
            },
            {"run": 2, "phase": "Pending", "trigger": "schedule"},
        ],
    }
    rec.record(view(kind, "ma", status), [PatchStatus(patch)], None)
    assert sample("modelops_runs_finished_total", labels) - before == 1
    after = sample("modelops_triggers_total", {"namespace": "ns", "name": "ma", "kind": kind})
    assert after - triggers == 1
    assert sample("modelops_active_runs", {"kind": kind}) >= 1


def test_a_status_no_model_accepts_records_nothing():
    rec = RunMetrics()
    assert rec.record(view("PruneRetrain", "bad", {"phase": "Exploded"}), [], None) is None
    assert ("PruneRetrain", "ns", "bad") not in rec.phases


def test_active_runs_follow_phase_changes_and_deletions():
    rec = RunMetrics()

    def active():
        return sample("modelops_active_runs", {"kind": "LoRATransfer"})

    rec.record(view("LoRATransfer", "a", {"phase": "Pending"}), [], None)
    rec.record(view("LoRATransfer", "b", {"phase": "Running"}), [], None)
    assert active() == 2
    rec.record(
        view("LoRATransfer", "a", {"phase": "Pending"}), [PatchStatus({"phase": "Failed"})], None
    )
    assert active() == 1
    rec.forget(("LoRATransfer", "ns", "b"))
    assert active() == 0
    rec.forget(("LoRATransfer", "ns", "b"))  # twice: no negative count
    assert active() == 0
