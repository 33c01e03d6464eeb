"""s3:// in and out, through the operator, the stand-in kubelet and a Secret.

A PruneRetrain and an UnlearnRequest (ssd) read their model and data from a real S3
server (SeaweedFS) and publish their output there. Their only credentials are the
keys of a Secret named by `spec.storage`: the Job carries them as
`valueFrom.secretKeyRef` env vars, which the stand-in kubelet resolves the way the
kubelet does (it passes no AWS_* variable of its own). The Secret's values appear in
no ConfigMap, status, Event, Job, Pod, operator log or pod log.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from kubernetes import client
from tests.conftest import poll_until
from tests.e2e.test_security import debug_logs, everything_written, leaks

from modelops_api.meta import GROUP, VERSION
from modelops_jobs import storage, transfer
from modelops_jobs.algorithms import ssd
from modelops_jobs.data import write_jsonl
from modelops_jobs.testing import tiny

STORAGE = {
    "secretName": "object-store",
    "accessKeyId": "accessKeyId",
    "secretAccessKey": "secretAccessKey",
    "endpointUrl": "endpoint",
    "region": "region",
}


def upload_plain(local: Path, uri: str) -> None:
    """Objects put one by one, no manifest: a model someone copied into the bucket."""
    import obstore

    from modelops_jobs.objectstore import location, open_store

    loc = location(uri)
    store = open_store(loc)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            obstore.put(store, loc.child(path.relative_to(local).as_posix()), path)


def publish(local: Path, uri: str, tmp: Path) -> None:
    """Published the way a run publishes: files, then manifest.json last."""
    out = storage.prepare_output(storage.StorageResolver(cache_dir=str(tmp)), uri, None)
    for path in local.rglob("*"):
        if path.is_file():
            target = out.staging / path.relative_to(local)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    storage.write_manifest(out.staging, {"kind": "fixture"})
    out.publish()


@pytest.fixture
def world(s3_env: dict[str, str], s3_prefix: str, tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "world"
    texts = tiny.grammar_corpus(160, seed=1)
    records = [{"id": f"d-{i}", "text": t} for i, t in enumerate(texts)]
    tok = tiny.train_tokenizer(texts, 300)
    model = tiny.tiny_causal_lm(len(tok), hidden=32, layers=2, heads=4, ffn=64, max_positions=64)
    tiny.save_model_dir(model, tok, root / "perp-model")
    write_jsonl(root / "data" / "train.jsonl", records[:120])
    write_jsonl(root / "data" / "eval.jsonl", records[120:])
    torch.manual_seed(0)
    meta = {"data_uri": f"{s3_prefix}/data/train.jsonl", "id_field": "id", "text_field": "text"}
    tiny.save_model_dir(model, tok, root / "ssd-model")
    ssd.store_lm_importance(
        model, tok, texts[:120], root / "ssd-model" / ssd.IMPORTANCE_FILE, 8, 32, meta
    )
    upload_plain(root / "perp-model", f"{s3_prefix}/models/perp")
    upload_plain(root / "data", f"{s3_prefix}/data")
    publish(root / "ssd-model", f"{s3_prefix}/models/ssd", tmp_path / "cache")
    return {"prefix": s3_prefix}


def prune(prefix: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PruneRetrain",
        "metadata": {"name": "s3-prune"},
        "spec": {
            "model": {"uri": f"{prefix}/models/perp"},
            "pruning": {"criterion": "wanda", "sparsity": 0.5, "calibrationSamples": 4},
            "retrain": {
                "subset": ["biases", "norms"],
                "data": {"uri": f"{prefix}/data/train.jsonl"},
                "optimization": {"steps": 3, "batchSize": 4, "sequenceLength": 32},
            },
            "evaluation": {"data": {"uri": f"{prefix}/data/eval.jsonl"}, "maxWindows": 4},
            "output": {"uri": f"{prefix}/out/pruned"},
            "resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"},
            "storage": STORAGE,
        },
    }


def unlearn(prefix: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "UnlearnRequest",
        "metadata": {"name": "s3-forget"},
        "spec": {
            "method": "ssd",
            "model": {"uri": f"{prefix}/models/ssd"},
            "sampleIds": ["d-1", "d-2"],
            "ssd": {"alpha": 5.0},
            "output": {"uri": f"{prefix}/out/forgotten"},
            "resources": {"gpu": {"count": 0}, "cpu": "1", "memory": "2Gi"},
            "storage": STORAGE,
        },
    }


def phase_of(api: Any, ns: str, plural: str, name: str) -> dict[str, Any] | None:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, plural, name
    )
    status = obj.get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


@pytest.mark.timeout(900)
def test_prune_and_unlearn_read_and_write_s3_with_secret_credentials(
    control_plane, kube_api, crds_installed, namespace, world, s3_server, tmp_path
):
    from modelops_devcluster.pod_runner import LocalPodRunner
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    prefix = world["prefix"]
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name="object-store", labels={"modelops.dev/usable": "true"}
            ),
            string_data={
                "accessKeyId": s3_server.access_key,
                "secretAccessKey": s3_server.secret_key,
                "endpoint": s3_server.endpoint,
                "region": "us-east-1",
            },
        ),
    )
    custom = client.CustomObjectsApi(kube_api)
    cfg = OperatorConfig(
        namespaces=(namespace,), resync_seconds=2.0, jobs_image="modelops-jobs:test"
    )
    pods = tmp_path / "pods"
    with (
        debug_logs() as logs,
        run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2),
        LocalPodRunner(
            kube_api,
            pods,
            namespace,
            parallel=2,
            extra_env={"MODELOPS_CACHE_DIR": str(tmp_path / "pod-cache")},
        ),
    ):
        for doc, plural in ((prune(prefix), "pruneretrains"), (unlearn(prefix), "unlearnrequests")):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, doc)
        done = {
            name: poll_until(
                f"{plural} {name} finished",
                lambda p=plural, n=name: phase_of(kube_api, namespace, p, n),
                timeout=600,
            )
            for plural, name in (("pruneretrains", "s3-prune"), ("unlearnrequests", "s3-forget"))
        }
    pod_logs = {str(p): p.read_text() for p in pods.rglob("log.txt")}
    for name, status in done.items():
        assert status["phase"] == "Succeeded", (name, status, pod_logs)
    assert done["s3-prune"]["artifact"]["uri"] == f"{prefix}/out/pruned"
    assert done["s3-forget"]["artifact"]["uri"] == f"{prefix}/out/forgotten"
    for out in ("pruned", "forgotten"):
        uri = f"{prefix}/out/{out}"
        assert transfer.is_complete(uri), f"{uri} has no manifest"
        local = storage.StorageResolver(cache_dir=str(tmp_path / "check")).local_path(uri)
        manifest = json.loads((local / "manifest.json").read_text())
        assert (local / "config.json").exists() and manifest["files"]
        assert manifest["files"] == storage.tree_digests(local)
    assert done["s3-forget"]["receipt"]["method"] == "ssd"

    # Every pod really got its credentials from the Secret, by reference.
    envs = [
        {e.name: e.value_from for e in pod.spec.containers[0].env or []}
        for pod in core.list_namespaced_pod(namespace).items
    ]
    assert envs and all(
        e["AWS_SECRET_ACCESS_KEY"].secret_key_ref.name == "object-store" for e in envs
    )

    values = [s3_server.secret_key, s3_server.access_key]
    assert leaks(everything_written(kube_api, (namespace,)), values) == []
    assert leaks({f"operator log {i}": line for i, line in enumerate(logs.lines)}, values) == []
    assert leaks(pod_logs, values) == []
