"""Every published output becomes one ModelVersion: a deterministic name, the lineage
read from the spec and status, recorded once (level-based) by the one-shot and the
ModelAdaptation plans."""

from datetime import UTC, datetime, timedelta

import pytest

from modelops_api.model_version import ModelVersionSpec
from modelops_operator.build.names import version_name
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import EnsureModelVersion, PatchStatus, RecordEvent
from modelops_operator.reconcile.observed import Observed, ResourceView
from modelops_operator.reconcile.status_patch import apply_merge_patch
from modelops_operator.reconcile.versions import metrics, oneshot_version

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
DIGEST = "sha256:" + "0123456789abcdef" * 4
CONFIG = OperatorConfig()


@pytest.mark.parametrize(
    ("source", "digest", "expected"),
    [
        ("adapt", DIGEST, "adapt-0123456789"),
        ("a" * 63, DIGEST, "a" * 52 + "-0123456789"),
        ("a" * 51 + "-b", DIGEST, "a" * 51 + "-0123456789"),
        ("x.y" + "-" * 60, DIGEST, "x.y-0123456789"),
        ("a" * 253, DIGEST.upper().replace("SHA256", "sha256"), "a" * 52 + "-0123456789"),
    ],
    ids=["short", "63-chars-cut", "trailing-dash-removed", "dots-and-dashes", "253-chars"],
)
def test_version_name(source, digest, expected):
    name = version_name(source, digest)
    assert name == expected
    assert len(name) <= 63


@pytest.mark.parametrize("digest", ["", "sha256:xyz", "abc"], ids=["empty", "not-hex", "short"])
def test_version_name_of_a_digest_without_ten_hex_digits_is_hashed(digest):
    name = version_name("src", digest)
    assert len(name) == len("src-") + 10 and name == version_name("src", digest)
    assert name != version_name("src", digest + "0")


def view(kind, spec, status, name="src"):
    return ResourceView(kind, name, "ns", "uid-1", 1, spec, status, {}, NOW - timedelta(hours=1))


def succeeded(results=None, **artifact):
    return {
        "phase": "Succeeded",
        "completionTime": "2026-12-02T03:30:00Z",
        "artifact": {"uri": "pvc://m/out", "manifestDigest": DIGEST, **artifact},
        "results": results or {},
    }


KNOWN = {"pvc://m/base": "base-aaaaaaaaaa"}
PRUNE = {
    "model": {"uri": "pvc://m/base"},
    "retrain": {"data": {"uri": "pvc://d/train.jsonl"}},
    "evaluation": {"data": {"uri": "pvc://d/eval.jsonl"}},
    "output": {"uri": "pvc://m/out"},
}
UNLEARN = {"method": "ssd", "model": {"uri": "pvc://m/base"}, "sampleIds": ["a", "b"]}
TRANSFER = {
    "sourceModel": {"uri": "pvc://m/src"},
    "sourceAdapter": {"uri": "pvc://a/src"},
    "targetModel": {"uri": "pvc://m/base"},
    "evaluationData": {"uri": "pvc://d/eval.jsonl"},
    "output": {"uri": "pvc://a/out"},
}


@pytest.mark.parametrize(
    ("kind", "spec", "results", "parents", "datasets", "method"),
    [
        (
            "PruneRetrain",
            PRUNE,
            {"retrainedPerplexity": 31.5, "maskPreserved": True, "sparsity": 0.5},
            [{"role": "base", "uri": "pvc://m/base", "version": "base-aaaaaaaaaa"}],
            [
                {"role": "train", "uri": "pvc://d/train.jsonl", "digest": "sha256:t"},
                {"role": "eval", "uri": "pvc://d/eval.jsonl"},
            ],
            "perp",
        ),
        (
            "UnlearnRequest",
            UNLEARN,
            {"deletedSamples": 2, "forgetAccuracy": 0.1},
            [{"role": "base", "uri": "pvc://m/base", "version": "base-aaaaaaaaaa"}],
            [],
            "ssd",
        ),
        (
            "LoRATransfer",
            TRANSFER,
            {"transferredScore": 0.8, "metric": "rougeL"},
            [
                {"role": "source", "uri": "pvc://m/src"},
                {"role": "target", "uri": "pvc://m/base", "version": "base-aaaaaaaaaa"},
                {"role": "adapter", "uri": "pvc://a/src"},
            ],
            [{"role": "eval", "uri": "pvc://d/eval.jsonl"}],
            "translora",
        ),
    ],
    ids=["prune-retrain", "unlearn-request", "lora-transfer"],
)
def test_oneshot_version_manifest(kind, spec, results, parents, datasets, method):
    lineage = [{"role": "train", "uri": "pvc://d/train.jsonl", "digest": "sha256:t"}]
    res = view(kind, spec, succeeded(results, datasets=lineage))
    doc = oneshot_version(res, KNOWN, NOW)
    assert doc["apiVersion"] == "modelops.dev/v1alpha1" and doc["kind"] == "ModelVersion"
    meta = doc["metadata"]
    assert meta["name"] == "src-0123456789" and meta["namespace"] == "ns"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "modelops",
        "modelops.dev/source-kind": kind,
        "modelops.dev/source-name": "src",
    }
    assert "ownerReferences" not in meta  # versions outlive their source
    v = doc["spec"]
    ModelVersionSpec.model_validate(v)
    assert v["uri"] == "pvc://m/out" and v["manifestDigest"] == DIGEST
    assert v["source"] == {"kind": kind, "name": "src", "uid": "uid-1", "method": method}
    assert v["parents"] == parents
    assert v["datasets"] == datasets
    assert v["createdTime"] == "2026-12-02T03:30:00Z"
    assert v["metrics"] == {k: float(x) for k, x in results.items() if k in NUMERIC}
    if kind == "UnlearnRequest":
        assert v["deletion"] == {
            "request": "src",
            "deletedSamples": 2,
            "requestedTime": "2026-12-02T03:00:00Z",
        }
    else:
        assert "deletion" not in v


NUMERIC = {
    "retrainedPerplexity",
    "sparsity",
    "deletedSamples",
    "forgetAccuracy",
    "transferredScore",
}


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ({"a": 1, "b": 2.5}, {"a": 1.0, "b": 2.5}),
        ({"ok": True, "text": "x", "none": None}, {}),
        ({"nan": float("nan"), "inf": float("inf"), "t": "NaN"}, {}),
        ({"eval": {"ppl": 3.0, "deep": {"x": 1}}}, {"eval.ppl": 3.0}),
        ({"bad name": 1.0, "9x": 1.0, "x" * 65: 1.0}, {}),
        ({f"m{i}": float(i) for i in range(100)}, {f"m{i}": float(i) for i in range(64)}),
    ],
    ids=["numbers", "non-numbers", "non-finite", "one-level-flattened", "bad-names", "capped-64"],
)
def test_metrics_are_the_finite_numeric_results(results, expected):
    assert metrics(results) == expected


@pytest.mark.parametrize(
    "status",
    [
        {"phase": "Running"},
        {"phase": "Succeeded"},
        {"phase": "Succeeded", "artifact": {"uri": "pvc://m/out"}},
        {"phase": "Failed", "artifact": {"uri": "pvc://m/out", "manifestDigest": DIGEST}},
    ],
    ids=["running", "no-artifact", "no-digest", "failed"],
)
def test_no_version_without_a_published_output(status):
    assert oneshot_version(view("PruneRetrain", PRUNE, status), {}, NOW) is None


def with_status(res, actions):
    status = res.status
    for a in actions:
        if isinstance(a, PatchStatus):
            status = apply_merge_patch(status, a.patch)
    return ResourceView(
        res.kind, res.name, res.namespace, res.uid, 1, res.spec, status, {}, res.creation_time
    )


def test_oneshot_plan_records_the_version_once():
    """Succeeded with a digest: EnsureModelVersion, then status.modelVersion; once the
    status shows it, nothing more (level-based; re-emitted until then)."""
    status = {**succeeded({"retrainedPerplexity": 31.5}), "jobRef": {"name": "src-prune"}}
    res = view("PruneRetrain", PRUNE, status)
    obs = Observed(res, known_versions=KNOWN)
    first = plan(obs, CONFIG, NOW)
    kinds = [type(a) for a in first]
    assert kinds == [EnsureModelVersion, PatchStatus, RecordEvent]
    assert first[1].patch == {"modelVersion": "src-0123456789"}
    again = plan(Observed(res, known_versions=KNOWN), CONFIG, NOW)
    assert [a for a in again if isinstance(a, EnsureModelVersion)] == [first[0]]
    done = with_status(res, first)
    assert plan(Observed(done, known_versions=KNOWN), CONFIG, NOW) == []


ADAPT = {
    "strategy": "cpt",
    "model": {"uri": "pvc://m/base"},
    "data": {"uri": "pvc://d/new.jsonl"},
    "output": {"uri": "pvc://m/v"},
}


def run(n, digest, phase="Succeeded", **extra):
    results = {
        "finalLoss": 2.0,
        "artifact": {"uri": f"pvc://m/v/run-{n:04d}", "manifestDigest": digest},
    }
    return {
        "run": n,
        "phase": phase,
        "trigger": "manual",
        "startTime": "2026-12-02T03:00:00Z",
        "completionTime": "2026-12-02T03:10:00Z",
        "results": results,
        **extra,
    }


def test_adaptation_plan_records_each_succeeded_run_once():
    d2 = "sha256:" + "ab" * 32
    status = {
        "phase": "Succeeded",
        "runCount": 2,
        "runs": [run(1, DIGEST, modelVersion="adapt-0123456789"), run(2, d2)],
        "conditions": [],
    }
    spec = {**ADAPT, "trigger": {"type": "manual", "runOnCreate": False}}
    res = view("ModelAdaptation", spec, status, name="adapt")
    known = {"pvc://m/v/run-0001": "adapt-0123456789"}
    actions = plan(Observed(res, known_versions=known), CONFIG, NOW)
    ensured = [a for a in actions if isinstance(a, EnsureModelVersion)]
    assert len(ensured) == 1
    v = ensured[0].manifest
    assert v["metadata"]["name"] == "adapt-ababababab"
    assert v["spec"]["source"] == {
        "kind": "ModelAdaptation",
        "name": "adapt",
        "uid": "uid-1",
        "run": 2,
        "method": "cpt",
    }
    # run 2 continued run 1's output
    assert v["spec"]["parents"] == [
        {"role": "base", "uri": "pvc://m/v/run-0001", "version": "adapt-0123456789"}
    ]
    assert v["spec"]["metrics"] == {"finalLoss": 2.0}
    patch = next(a for a in actions if isinstance(a, PatchStatus)).patch
    assert patch["modelVersion"] == "adapt-ababababab"
    assert patch["runs"][1]["modelVersion"] == "adapt-ababababab"
    assert actions.index(ensured[0]) < actions.index(
        next(a for a in actions if isinstance(a, PatchStatus))
    )
    done = with_status(res, actions)
    assert not [
        a
        for a in plan(Observed(done, known_versions=known), CONFIG, NOW)
        if isinstance(a, EnsureModelVersion)
    ]


def test_lora_runs_are_adapters_on_the_spec_model():
    spec = {**ADAPT, "strategy": "lora", "trigger": {"type": "manual", "runOnCreate": False}}
    d2 = "sha256:" + "cd" * 32
    status = {"runCount": 2, "runs": [run(1, DIGEST, modelVersion="a-0123456789"), run(2, d2)]}
    res = view("ModelAdaptation", spec, status, name="a")
    actions = plan(Observed(res), CONFIG, NOW)
    v = next(a for a in actions if isinstance(a, EnsureModelVersion)).manifest["spec"]
    assert v["parents"] == [{"role": "base", "uri": "pvc://m/base"}]
    assert v["source"]["method"] == "lora"


@pytest.mark.parametrize(
    ("datasets_field", "expected"),
    [
        ([{"role": "train", "uri": "pvc://d/train.jsonl", "digest": "sha256:t"}], "sha256:t"),
        ([{"uri": "pvc://d/train.jsonl", "digest": 5}], None),
        (["garbage", None, {"digest": "x"}], None),
        ("not-a-list-of-objects", None),
    ],
    ids=["reported", "digest-not-text", "malformed-entries", "malformed-field"],
)
def test_dataset_digests_are_read_defensively(datasets_field, expected):
    res = view("PruneRetrain", PRUNE, succeeded(datasets=datasets_field))
    v = oneshot_version(res, {}, NOW)["spec"]
    train = next(d for d in v["datasets"] if d["role"] == "train")
    assert train.get("digest") == expected


def test_unlearn_deletion_falls_back_to_the_receipt():
    status = {**succeeded({}), "receipt": {"samples": 7}}
    v = oneshot_version(view("UnlearnRequest", UNLEARN, status), {}, NOW)["spec"]
    assert v["deletion"]["deletedSamples"] == 7


def test_a_253_character_source_name_is_recorded():
    """Job kinds' names may have 253 characters (a DNS subdomain). The contract first
    allowed 63 in VersionSource.name, and such a resource got no version (a reported
    defect): the record now takes the whole name; the version's own name is cut."""
    name = "a" * 200 + ".b" * 26
    status = {**succeeded(), "jobRef": {"name": "x", "namespace": "ns"}}
    res = view("PruneRetrain", PRUNE, status, name=name)
    actions = plan(Observed(res), CONFIG, NOW)
    ensure = [a for a in actions if isinstance(a, EnsureModelVersion)]
    assert len(ensure) == 1 and ensure[0].manifest["spec"]["source"]["name"] == name
    assert not [
        a for a in actions if isinstance(a, RecordEvent) and a.reason == "VersionNotRecorded"
    ]
    assert len(version_name(name, DIGEST)) <= 63
