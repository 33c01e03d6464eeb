"""The API models accept good specs and reject bad ones with a message naming the field."""

import pytest
from pydantic import ValidationError

from modelops_api import LoRATransferSpec, ModelAdaptationSpec, PruneRetrainSpec, UnlearnRequestSpec
from modelops_api.storage import parse_uri

MODEL = {"uri": "pvc://models/opt-125m"}
OUT = {"uri": "pvc://models/out"}
PROM = {
    "prometheusUrl": "http://prometheus:9090",
    "query": "max(drift)",
    "fireThreshold": 0.5,
    "clearThreshold": 0.3,
}

S3_CREDS = {"secretName": "store", "accessKeyId": "id", "secretAccessKey": "secret"}

ACCEPT = [
    (
        "prune-s3-with-credentials",
        PruneRetrainSpec,
        {
            "model": {"uri": "s3://models/opt"},
            "output": {"uri": "s3://models/out"},
            "storage": {**S3_CREDS, "endpointUrl": "endpoint", "region": "region"},
        },
    ),
    (
        "prune-gs-service-account",
        PruneRetrainSpec,
        {
            "model": {"uri": "gs://models/opt"},
            "output": {"uri": "gs://models/out"},
            "storage": {"secretName": "gcs", "serviceAccountKey": "key.json"},
        },
    ),
    (
        "prune-s3-workload-identity",
        PruneRetrainSpec,
        {"model": {"uri": "s3://models/x"}, "output": OUT},
    ),
    (
        "unlearn-ssd-s3",
        UnlearnRequestSpec,
        {"method": "ssd", "model": {"uri": "s3://models/opt"}, "sampleIds": ["x"], "output": OUT},
    ),
    ("prune-minimal", PruneRetrainSpec, {"model": MODEL, "output": OUT}),
    (
        "prune-2:4",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "pruning": {"pattern": "2:4", "sparsity": 0.5}},
    ),
    (
        "prune-4:8-wanda",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "pruning": {"pattern": "4:8", "criterion": "wanda"}},
    ),
    (
        "prune-1:4",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "pruning": {"pattern": "1:4", "sparsity": 0.75}},
    ),
    (
        "prune-scalelora",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "retrain": {"subset": ["biases", "scalelora"]}},
    ),
    ("unlearn-ids", UnlearnRequestSpec, {"model": MODEL, "sampleIds": ["a-1", "b:2"]}),
    ("unlearn-uri", UnlearnRequestSpec, {"model": MODEL, "samplesUri": "file:///data/ids.txt"}),
    (
        "unlearn-ssd",
        UnlearnRequestSpec,
        {
            "method": "ssd",
            "model": MODEL,
            "sampleIds": ["x"],
            "ssd": {"alpha": 5, "lambda": 0.5},
            "output": OUT,
        },
    ),
    (
        "transfer",
        LoRATransferSpec,
        {
            "sourceModel": MODEL,
            "sourceAdapter": {"uri": "pvc://a/b"},
            "targetModel": {"uri": "hf://org/name@main"},
            "output": OUT,
        },
    ),
    (
        "adapt-cpt",
        ModelAdaptationSpec,
        {"model": MODEL, "data": {"uri": "s3://bucket-1/d1"}, "output": OUT},
    ),
    (
        "adapt-drift",
        ModelAdaptationSpec,
        {
            "model": MODEL,
            "data": {"uri": "pvc://d/x"},
            "output": OUT,
            "trigger": {"type": "drift", "drift": PROM},
        },
    ),
    (
        "adapt-schedule",
        ModelAdaptationSpec,
        {
            "model": MODEL,
            "data": {"uri": "pvc://d/x"},
            "output": OUT,
            "trigger": {"type": "schedule", "schedule": "0 3 * * 1"},
        },
    ),
    (
        "adapt-s3t",
        ModelAdaptationSpec,
        {
            "strategy": "s3t",
            "model": MODEL,
            "output": OUT,
            "s3t": {"shards": 2, "slices": 3, "deletionProbabilities": [0.1, 0.2, 0.7]},
        },
    ),
]

REJECT = [
    (
        "storage-half-key-pair",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "storage": {"secretName": "s", "accessKeyId": "id"}},
        "set both accessKeyId and secretAccessKey",
    ),
    (
        "storage-no-keys",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "storage": {"secretName": "s"}},
        "serviceAccountKey",
    ),
    (
        "storage-bad-secret-name",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "storage": {**S3_CREDS, "secretName": "Not_A_Name"}},
        "storage.secretName",
    ),
    (
        "unlearn-s3t-store-on-s3",
        UnlearnRequestSpec,
        {"model": {"uri": "s3://bucket/store"}, "sampleIds": ["a"]},
        "model.uri: an S3T model store needs a filesystem",
    ),
    (
        "adapt-s3t-store-on-gs",
        ModelAdaptationSpec,
        {
            "strategy": "s3t",
            "model": MODEL,
            "data": {"uri": "pvc://d/x"},
            "output": {"uri": "gs://bucket/store"},
        },
        "output.uri: an S3T model store needs a filesystem",
    ),
    ("prune-no-model", PruneRetrainSpec, {"output": OUT}, "model"),
    (
        "prune-nm-mismatch",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "pruning": {"pattern": "2:4", "sparsity": 0.7}},
        "sparsity must equal",
    ),
    (
        "prune-bad-pattern",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "pruning": {"pattern": "2-4"}},
        "pruning.pattern",
    ),
    (
        "prune-sparsity-1",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "pruning": {"sparsity": 1.0}},
        "pruning.sparsity",
    ),
    (
        "prune-bad-criterion",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "pruning": {"criterion": "random"}},
        "pruning.criterion",
    ),
    (
        "prune-two-lora",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "retrain": {"subset": ["lora", "masklora"]}},
        "at most one",
    ),
    (
        "prune-unknown-field",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "sparsity": 0.5},
        "sparsity",
    ),
    (
        "prune-traversal",
        PruneRetrainSpec,
        {"model": {"uri": "pvc://models/../etc"}, "output": OUT},
        "model.uri",
    ),
    (
        "prune-bad-scheme",
        PruneRetrainSpec,
        {"model": {"uri": "http://x/y"}, "output": OUT},
        "model.uri",
    ),
    (
        "prune-gpu-17",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "resources": {"gpu": {"count": 17}}},
        "resources.gpu.count",
    ),
    (
        "prune-bad-memory",
        PruneRetrainSpec,
        {"model": MODEL, "output": OUT, "resources": {"memory": "lots"}},
        "resources.memory",
    ),
    (
        "unlearn-both",
        UnlearnRequestSpec,
        {"model": MODEL, "sampleIds": ["a"], "samplesUri": "pvc://x/y"},
        "exactly one",
    ),
    ("unlearn-neither", UnlearnRequestSpec, {"model": MODEL}, "exactly one"),
    (
        "unlearn-bad-id",
        UnlearnRequestSpec,
        {"model": MODEL, "sampleIds": ["has space"]},
        "sampleIds",
    ),
    (
        "unlearn-too-many",
        UnlearnRequestSpec,
        {"model": MODEL, "sampleIds": ["a", "b", "c"], "maxSamples": 2},
        "maxSamples",
    ),
    (
        "unlearn-bad-method",
        UnlearnRequestSpec,
        {"model": MODEL, "sampleIds": ["a"], "method": "gradient-ascent"},
        "method",
    ),
    (
        "transfer-budget",
        LoRATransferSpec,
        {
            "sourceModel": MODEL,
            "sourceAdapter": {"uri": "pvc://a/b"},
            "targetModel": MODEL,
            "output": OUT,
            "synthesis": {"samples": 10, "maxAttempts": 5},
        },
        "maxAttempts",
    ),
    ("adapt-cpt-no-data", ModelAdaptationSpec, {"model": MODEL, "output": OUT}, "data is required"),
    (
        "adapt-clear-above-fire",
        ModelAdaptationSpec,
        {
            "model": MODEL,
            "data": {"uri": "pvc://d/x"},
            "output": OUT,
            "trigger": {"type": "drift", "drift": {**PROM, "clearThreshold": 0.9}},
        },
        "clearThreshold",
    ),
    (
        "adapt-drift-missing",
        ModelAdaptationSpec,
        {"model": MODEL, "data": {"uri": "pvc://d/x"}, "output": OUT, "trigger": {"type": "drift"}},
        "drift is required",
    ),
    (
        "adapt-bad-cron",
        ModelAdaptationSpec,
        {
            "model": MODEL,
            "data": {"uri": "pvc://d/x"},
            "output": OUT,
            "trigger": {"type": "schedule", "schedule": "every day"},
        },
        "trigger.schedule",
    ),
    (
        "adapt-bad-duration",
        ModelAdaptationSpec,
        {
            "model": MODEL,
            "data": {"uri": "pvc://d/x"},
            "output": OUT,
            "trigger": {"type": "drift", "drift": {**PROM, "for": "5 minutes"}},
        },
        "for",
    ),
    (
        "adapt-probabilities",
        ModelAdaptationSpec,
        {
            "strategy": "s3t",
            "model": MODEL,
            "output": OUT,
            "s3t": {"slices": 3, "deletionProbabilities": [0.5]},
        },
        "one entry per slice",
    ),
]


@pytest.mark.parametrize(
    ("model", "body"), [(m, b) for _, m, b in ACCEPT], ids=[i for i, _, _ in ACCEPT]
)
def test_accepts(model, body):
    spec = model.model_validate(body)
    again = model.model_validate(spec.to_wire())
    assert again == spec, "the wire form must round-trip"


@pytest.mark.parametrize(
    ("model", "body", "needle"), [(m, b, n) for _, m, b, n in REJECT], ids=[i for i, *_ in REJECT]
)
def test_rejects_naming_the_field(model, body, needle):
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    text = str(err.value)
    assert needle in text, text


def test_models_are_frozen():
    spec = PruneRetrainSpec.model_validate({"model": MODEL, "output": OUT})
    with pytest.raises(ValidationError):
        spec.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("pvc://claim/a/b", True),
        ("pvc://Claim/a", False),
        ("pvc://claim/a/../b", False),
        ("pvc://claim/./b", False),
        ("file:///abs/path", True),
        ("file://relative", False),
        ("file:///a\\b", False),
        ("hf://org/name", True),
        ("hf://org/name@v1.0", True),
        ("hf://org", False),
        ("s3://bucket/key", True),
        ("s3://B/key", False),
        ("gs://bucket_1/key/a", True),
        ("gs://bucket", True),
        ("gs://B/key", False),
        ("gs://bucket/../key", False),
        ("ftp://x/y", False),
    ],
    ids=lambda v: str(v),
)
def test_storage_uris(uri, ok):
    if ok:
        parse_uri(uri)
    else:
        with pytest.raises(ValueError):
            parse_uri(uri)


# Cross-field: with GPUs, one process per GPU (processesPerNode unset or == gpu.count).
PROCESSES_VS_GPUS = [
    ("cpu-two-processes", {"gpu": {"count": 0}}, 2, True),
    ("cpu-unset", {"gpu": {"count": 0}}, None, True),
    ("gpus-unset", {"gpu": {"count": 4}}, None, True),
    ("gpus-equal", {"gpu": {"count": 4}}, 4, True),
    ("gpus-fewer-processes", {"gpu": {"count": 4}}, 2, False),
    ("gpus-more-processes", {"gpu": {"count": 2}}, 8, False),
    ("default-gpu-count-1", {}, 2, False),
    ("default-gpu-count-1-equal", {}, 1, True),
    ("two-nodes-equal", {"nodes": 2, "gpu": {"count": 8}}, 8, True),
]


@pytest.mark.parametrize("model", [PruneRetrainSpec, ModelAdaptationSpec], ids=["prune", "adapt"])
@pytest.mark.parametrize(
    ("resources", "per_node", "ok"),
    [(r, p, ok) for _, r, p, ok in PROCESSES_VS_GPUS],
    ids=[i for i, *_ in PROCESSES_VS_GPUS],
)
def test_processes_per_node_must_match_gpus(model, resources, per_node, ok):
    body = {"model": MODEL, "output": OUT, "resources": resources}
    if model is ModelAdaptationSpec:
        body["data"] = {"uri": "pvc://d/new"}
    if per_node is not None:
        body["distribution"] = {"processesPerNode": per_node}
    if ok:
        model.model_validate(body)
        return
    with pytest.raises(ValidationError) as err:
        model.model_validate(body)
    assert "distribution.processesPerNode" in str(err.value)
    assert "resources.gpu.count" in str(err.value)


def test_every_kind_carries_the_processes_rule_as_cel():
    from modelops_api.common import PROCESSES_MATCH_GPUS
    from modelops_api.crdgen import crd_for
    from modelops_api.kinds import KINDS

    for info in KINDS:
        schema = crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        rules = schema["x-kubernetes-validations"]
        assert PROCESSES_MATCH_GPUS in rules, info.kind
        assert "oldSelf" not in PROCESSES_MATCH_GPUS["rule"], "must hold on create too"
