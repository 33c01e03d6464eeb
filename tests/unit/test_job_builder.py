"""The Job and ConfigMap builders produce the exact manifests, field by field."""

import json

import pytest

from modelops_api import PruneRetrainSpec
from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_operator.build.jobs import ResourceIdentity, build_configmap, build_job, spec_document
from modelops_operator.build.names import job_name
from modelops_operator.config import OperatorConfig

RES = ResourceIdentity("PruneRetrain", "opt", "team-a", "uid-1", 2)
CONFIG = OperatorConfig(jobs_image="registry/jobs:1", service_account="modelops-job")


def build(**spec):
    body = {"model": {"uri": "pvc://models/opt"}, "output": {"uri": "pvc://out/opt"}, **spec}
    parsed = PruneRetrainSpec.model_validate(body)
    doc = spec_document(RES, parsed)
    return build_job(RES, parsed, CONFIG, doc), build_configmap(RES, doc), doc


def test_job_metadata_and_owner():
    job, _, _ = build()
    meta = job["metadata"]
    assert meta["name"] == "opt-prune" and meta["namespace"] == "team-a"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "PruneRetrain",
            "name": "opt",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "modelops",
        "modelops.dev/kind": "PruneRetrain",
        "modelops.dev/name": "opt",
        "app.kubernetes.io/component": "job",
    }
    assert meta["annotations"]["modelops.dev/generation"] == "2"
    assert meta["annotations"]["modelops.dev/spec-digest"].startswith("sha256:")


def test_job_spec_policies():
    job, _, _ = build(
        runPolicy={"activeDeadlineSeconds": 600, "backoffLimit": 2, "ttlSecondsAfterFinished": 60}
    )
    spec = job["spec"]
    assert (
        spec["backoffLimit"] == 2
        and spec["activeDeadlineSeconds"] == 600
        and spec["ttlSecondsAfterFinished"] == 60
    )
    assert spec["podFailurePolicy"]["rules"][0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "job", "operator": "In", "values": [3]},
    }
    assert "suspend" not in spec


def test_pod_security_and_container():
    job, _, _ = build()
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "modelops-job"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = pod["containers"][0]
    assert c["image"] == "registry/jobs:1"
    assert c["command"] == ["python", "-m", "modelops_jobs.launch"]
    assert c["args"][:2] == ["--spec", "/etc/modelops/spec.json"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["terminationMessagePath"] == "/dev/termination-log"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/modelops"]["readOnly"] is True and "/tmp" in mounts
    assert "/mnt/pvc/models" in mounts and "/mnt/pvc/out" in mounts, (
        "one mount per referenced claim"
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spec"]["configMap"]["name"] == "opt-prune"
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "20Gi"}}


# -- issue 11: a Job mounts inputs read-only and bounds its scratch space -----------------


def _claim_mounts(job):
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in pod["containers"][0]["volumeMounts"]:
        pvc = volumes[m["name"]].get("persistentVolumeClaim")
        if pvc and m["name"].startswith("pvc-"):
            ro = (m.get("readOnly", False), pvc.get("readOnly", False))
            assert ro[0] == ro[1], f"mount and volume disagree on readOnly for {pvc}"
            out[pvc["claimName"]] = "ro" if ro[0] else "rw"
    return out


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"retrain": {"data": {"uri": "pvc://data/text.jsonl"}}},
            {"models": "ro", "data": "ro", "out": "rw"},
        ),
        ({"output": {"uri": "pvc://models/pruned"}}, {"models": "rw"}),
    ],
    ids=["inputs-read-only", "input-on-output-claim-shares-rw"],
)
def test_input_claims_are_read_only_and_only_the_output_claim_writable(spec, expected):
    job, _, _ = build(**spec)
    assert _claim_mounts(job) == expected


def test_unlearn_s3t_writes_its_model_store_and_reads_the_rest():
    from modelops_api.unlearn_request import UnlearnRequestSpec

    res = ResourceIdentity("UnlearnRequest", "forget", "team-a", "uid-2")
    parsed = UnlearnRequestSpec.model_validate(
        {"model": {"uri": "pvc://store/s3t"}, "samplesUri": "pvc://requests/ids.txt"}
    )
    job = build_job(res, parsed, CONFIG, spec_document(res, parsed))
    assert _claim_mounts(job) == {"store": "rw", "requests": "ro"}


@pytest.mark.parametrize(
    ("resources", "limit"),
    [({}, "20Gi"), ({"ephemeralStorage": "5Gi"}, "5Gi")],
    ids=["default", "from-ephemeral-storage"],
)
def test_scratch_empty_dir_has_a_size_limit(resources, limit):
    job, _, _ = build(resources=resources)
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": limit}


@pytest.mark.parametrize(
    ("gpu", "expected_limit"),
    [({"count": 2}, "2"), ({"count": 0}, None)],
    ids=["two-gpus", "cpu-only"],
)
def test_gpu_resources(gpu, expected_limit):
    job, _, _ = build(resources={"gpu": gpu, "cpu": "8", "memory": "64Gi"})
    res = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"]["cpu"] == "8" and res["limits"]["memory"] == "64Gi"
    assert res["limits"].get("nvidia.com/gpu") == expected_limit


def test_scheduling_and_gpu_product():
    job, _, _ = build(
        resources={"gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}},
        scheduling={
            "nodeSelector": {"pool": "a100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "priorityClassName": "batch-low",
            "queueName": "team-a-gpus",
        },
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "pool": "a100",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    }
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "batch-low"
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpus"


def test_secrets_only_by_reference():
    job, cm, _ = build(
        model={"uri": "hf://org/gated", "tokenSecretRef": {"name": "hf", "key": "token"}}
    )
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "HF_TOKEN")
    assert token == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": False}},
    }
    assert "value" not in token
    assert json.loads(cm["data"]["spec.json"])["spec"]["model"]["tokenSecretRef"] == {
        "name": "hf",
        "key": "token",
    }


@pytest.mark.parametrize(
    "storage,expected",
    [
        (
            {"secretName": "store", "accessKeyId": "id", "secretAccessKey": "sk"},
            {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "sk"},
        ),
        (
            {
                "secretName": "store",
                "accessKeyId": "id",
                "secretAccessKey": "sk",
                "sessionToken": "tok",
                "endpointUrl": "url",
                "region": "reg",
            },
            {
                "AWS_ACCESS_KEY_ID": "id",
                "AWS_SECRET_ACCESS_KEY": "sk",
                "AWS_SESSION_TOKEN": "tok",
                "AWS_ENDPOINT_URL": "url",
                "AWS_REGION": "reg",
            },
        ),
        ({"secretName": "store", "serviceAccountKey": "sa"}, {"GOOGLE_SERVICE_ACCOUNT_KEY": "sa"}),
        (None, {}),
    ],
    ids=["s3-pair", "s3-compatible", "gcs", "workload-identity"],
)
def test_storage_credentials_only_by_reference(storage, expected):
    spec = {"model": {"uri": "s3://models/opt"}, "output": {"uri": "s3://models/out"}}
    job, cm, _ = build(**spec, **({"storage": storage} if storage else {}))
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    by_ref = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in env
        if "valueFrom" in e and e["name"] != "HF_TOKEN"
    }
    assert {k: v["key"] for k, v in by_ref.items()} == expected
    assert all(v["name"] == "store" and v["optional"] is False for v in by_ref.values())
    names = {e["name"] for e in env}
    assert not any(n.startswith(("AWS_", "GOOGLE_")) and n not in expected for n in names)
    assert "secretKeyRef" not in cm["data"]["spec.json"]


def test_download_cache_volume_is_shared_by_pods_when_configured():
    spec = PruneRetrainSpec.model_validate(
        {"model": {"uri": "s3://models/opt"}, "output": {"uri": "s3://models/out"}}
    )
    plain = build_job(RES, spec, CONFIG, spec_document(RES, spec))["spec"]["template"]["spec"]
    assert not any(v["name"] == "download-cache" for v in plain["volumes"])
    config = OperatorConfig(jobs_image="registry/jobs:1", download_cache_claim="dl-cache")
    pod = build_job(RES, spec, config, spec_document(RES, spec))["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "download-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": "dl-cache"}
    container = pod["containers"][0]
    assert {"name": "download-cache", "mountPath": "/cache/modelops"} in container["volumeMounts"]
    assert {"name": "MODELOPS_CACHE_DIR", "value": "/cache/modelops"} in container["env"]


def test_configmap_holds_the_validated_document():
    _, cm, doc = build()
    assert cm["metadata"]["name"] == "opt-prune"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    stored = json.loads(cm["data"]["spec.json"])
    assert stored == json.loads(json.dumps(doc))
    assert stored["spec"]["retrain"]["subset"] == ["biases", "norms", "head", "masklora"]


def test_indexed_job_for_s3t_shards():
    spec = ModelAdaptationSpec.model_validate(
        {
            "strategy": "s3t",
            "model": {"uri": "pvc://m/b"},
            "data": {"uri": "pvc://d/x"},
            "output": {"uri": "pvc://o/s"},
            "s3t": {"shards": 4},
        }
    )
    res = ResourceIdentity("ModelAdaptation", "ma", "ns", "u", 1)
    doc = spec_document(res, spec, {"number": 3})
    job = build_job(res, spec, CONFIG, doc, run=3, indexed_completions=4)
    assert job["metadata"]["name"] == "ma-adapt-3"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4
    assert job["spec"]["backoffLimitPerIndex"] == 3 and "backoffLimit" not in job["spec"]


@pytest.mark.parametrize(
    ("name", "run", "expected"),
    [("opt", None, "opt-prune"), ("opt", 7, "opt-prune-7"), ("x" * 63, None, None)],
    ids=["plain", "run", "too-long"],
)
def test_job_names_are_deterministic_and_bounded(name, run, expected):
    got = job_name("PruneRetrain", name, run)
    assert got == job_name("PruneRetrain", name, run)
    assert len(got) <= 63
    if expected:
        assert got == expected


@pytest.mark.parametrize("length", [63, 64, 253], ids=lambda n: f"name-{n}")
def test_every_label_value_and_name_fits_for_long_resource_names(length):
    """Issue 12: a 253-character name (legal) put itself into a label value, and every
    create and list call failed with a 400."""
    res = ResourceIdentity("PruneRetrain", "n" * length, "team-a", "uid-1", 1)
    parsed = PruneRetrainSpec.model_validate(
        {"model": {"uri": "pvc://models/opt"}, "output": {"uri": "pvc://out/opt"}}
    )
    doc = spec_document(res, parsed)
    for manifest in (build_job(res, parsed, CONFIG, doc), build_configmap(res, doc)):
        meta = manifest["metadata"]
        assert len(meta["name"]) <= 63
        assert all(len(v) <= 63 for v in meta["labels"].values()), meta["labels"]
        assert meta["ownerReferences"][0]["name"] == res.name
    pod_labels = build_job(res, parsed, CONFIG, doc)["spec"]["template"]["metadata"]["labels"]
    assert all(len(v) <= 63 for v in pod_labels.values())
