"""s3:// for real, against a real S3 server (SeaweedFS, started by the `s3_server`
fixture): sharded models round-trip with identical digests, a 2,500-object prefix
downloads completely, a killed upload publishes nothing and its retry publishes, a
complete output is never overwritten, and wrong credentials are a permanent
AccessDenied naming the bucket."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from modelops_api.meta import EXIT_PERMANENT
from modelops_jobs import objectstore, runner, storage, transfer
from modelops_jobs.errors import PermanentError
from modelops_jobs.reporting import ProgressEvent, Reporter
from modelops_jobs.testing import tiny
from modelops_jobs.testing.fixtures import reversal_task

ROOT = Path(__file__).resolve().parents[2]


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): transfer.sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def store_for(uri: str) -> tuple[Any, objectstore.Location]:
    loc = objectstore.location(uri)
    return objectstore.open_store(loc), loc


def keys_under(uri: str) -> list[str]:
    store, loc = store_for(uri)
    return sorted(o["path"] for o in objectstore.list_objects(store, loc, loc.key))


@pytest.fixture(scope="module")
def sharded_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM saved in several safetensors shards (with the index file),
    plus one 6 MiB file so the upload takes the multipart path (5 MiB parts)."""
    root = tmp_path_factory.mktemp("sharded")
    texts = [r["prompt"] + r["completion"] for r in reversal_task(100, seed=1)]
    tok = tiny.train_tokenizer(texts, vocab_size=300)
    model = tiny.tiny_causal_lm(len(tok), hidden=64, layers=4, heads=4, ffn=128, max_positions=64)
    model.save_pretrained(root / "model", max_shard_size="100KB")
    tok.save_pretrained(root / "model")
    (root / "model" / "blob.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    return root / "model"


def publish_dir(local: Path, uri: str, resolver: storage.StorageResolver) -> str:
    """What the runner does: stage, write the manifest last, publish."""
    out = storage.prepare_output(resolver, uri, None)
    for path in local.rglob("*"):
        if path.is_file():
            target = out.staging / path.relative_to(local)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    digest = storage.write_manifest(out.staging, {"kind": "test"})
    out.publish()
    return digest


def test_sharded_model_round_trips_with_identical_digests(
    s3_env: dict[str, str], s3_prefix: str, sharded_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(objectstore.PART_SIZE_ENV, str(5 * 1024 * 1024))
    shards = sorted(p.name for p in sharded_model.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (sharded_model / "model.safetensors.index.json").exists()
    events: list[ProgressEvent] = []
    reporter = Reporter(events.append)
    resolver = storage.StorageResolver()
    uri = f"{s3_prefix}/model"
    out = storage.prepare_output(resolver, uri, None)
    for path in sharded_model.iterdir():
        (out.staging / path.name).write_bytes(path.read_bytes())
    storage.write_manifest(out.staging, {"kind": "test"})
    out.publish(reporter)
    assert transfer.is_complete(uri)
    assert not any(k.endswith(transfer.MARKER) for k in keys_under(uri))
    store, loc = store_for(uri)
    blob = objectstore.head(store, loc, loc.child("blob.bin"))
    assert blob is not None and str(blob["e_tag"]).strip('"').endswith("-2")  # 2 parts

    local = resolver.local_path(uri, reporter=reporter)
    assert digests(local) == {
        **digests(sharded_model),
        "manifest.json": digests(local)["manifest.json"],
    }
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["files"] == digests(sharded_model)
    phases = {e.phase for e in events if e.step is not None}
    assert {"upload", "download"} <= phases
    last_upload = [e for e in events if e.phase == "upload" and e.step is not None][-1]
    files = len([p for p in sharded_model.iterdir() if p.is_file()])
    assert last_upload.step == last_upload.total == files + 1  # + manifest.json
    assert last_upload.metrics["bytes"] == last_upload.metrics["total_bytes"]
    # the published model loads as a model
    from modelops_jobs.modelio import load_causal_lm

    assert load_causal_lm(local) is not None


def test_cache_hit_and_resume_after_a_partial_download(
    s3_env: dict[str, str], s3_prefix: str, sharded_model: Path
) -> None:
    resolver = storage.StorageResolver()
    uri = f"{s3_prefix}/model"
    publish_dir(sharded_model, uri, resolver)
    first = resolver.local_path(uri)
    stamps = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}
    assert resolver.local_path(uri) == first  # keyed by URI + manifest digest: no download
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a pod killed half-way: one file missing, one truncated, one corrupted (same size)
    shards = sorted(first.glob("model-*.safetensors"))
    transfer.complete_marker(first).unlink()
    shards[0].unlink()
    shards[1].write_bytes(shards[1].read_bytes()[:100])
    shards[2].write_bytes(bytes(len(shards[2].read_bytes())))
    again = resolver.local_path(uri)
    assert again == first and transfer.complete_marker(first).exists()
    assert digests(again) == {
        **digests(sharded_model),
        "manifest.json": digests(again)["manifest.json"],
    }
    untouched = first / "config.json"
    assert untouched.stat().st_mtime_ns == stamps[untouched]  # kept, not downloaded again


def test_prefix_of_2500_small_objects_downloads_completely(
    s3_env: dict[str, str], s3_prefix: str
) -> None:
    import obstore

    store, loc = store_for(s3_prefix)
    count = 2500
    payload = {f"part-{i // 500}/obj-{i:05d}.txt": f"object {i}\n".encode() for i in range(count)}
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: obstore.put(store, loc.child(kv[0]), kv[1]), payload.items()))
    local = storage.StorageResolver().local_path(s3_prefix)
    got = {
        p.relative_to(local).as_posix(): p.read_bytes()
        for p in local.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert len(got) == count  # > 1,000: the listing was paged
    assert got == payload


UPLOADER = """
import sys
from pathlib import Path
from modelops_jobs import transfer
transfer.upload(Path(sys.argv[1]), sys.argv[2])
"""


def test_upload_killed_midway_leaves_no_manifest_and_the_retry_publishes(
    s3_env: dict[str, str], s3_prefix: str, tmp_path: Path
) -> None:
    local = tmp_path / "result"
    local.mkdir()
    for i in range(400):
        (local / f"file-{i:04d}.bin").write_bytes(os.urandom(32 * 1024))
    storage.write_manifest(local, {"kind": "test"})
    uri = f"{s3_prefix}/out"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'jobs'}",
        "MODELOPS_TRANSFER_WORKERS": "2",
    }
    proc = subprocess.Popen([sys.executable, "-c", UPLOADER, str(local), uri], env=env)
    deadline = time.monotonic() + 60
    while len(keys_under(uri)) < 20:
        assert proc.poll() is None, "the upload finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = keys_under(uri)
    assert left and not any(k.endswith("manifest.json") for k in left)
    assert not transfer.is_complete(uri)
    with pytest.raises(PermanentError) as unfinished:  # a reader refuses the half upload
        storage.StorageResolver().local_path(uri)
    assert unfinished.value.reason == "IncompleteSource"

    transfer.upload(local, uri)  # the retried run: cleans the prefix, publishes
    assert transfer.is_complete(uri)
    fetched = storage.StorageResolver().local_path(uri)
    assert digests(fetched) == digests(local)


def test_complete_output_is_refused(
    s3_env: dict[str, str], s3_prefix: str, sharded_model: Path, tmp_path: Path
) -> None:
    resolver = storage.StorageResolver()
    uri = f"{s3_prefix}/model"
    publish_dir(sharded_model, uri, resolver)
    before = keys_under(uri)
    with pytest.raises(PermanentError) as exc:
        storage.prepare_output(resolver, uri, None)
    assert exc.value.reason == "OutputExists" and uri in exc.value.message
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.bin").write_bytes(b"another result")
    storage.write_manifest(other, {"kind": "test"})
    with pytest.raises(PermanentError) as late:  # a writer that checked before it was published
        transfer.upload(other, uri)
    assert late.value.reason == "OutputExists"
    assert keys_under(uri) == before


def test_foreign_objects_under_the_output_prefix_are_never_deleted(
    s3_env: dict[str, str], s3_prefix: str
) -> None:
    import obstore

    store, loc = store_for(s3_prefix)
    obstore.put(store, loc.child("someone-elses/data.bin"), b"keep me")
    with pytest.raises(PermanentError) as exc:
        storage.prepare_output(storage.StorageResolver(), s3_prefix, None)
    assert exc.value.reason == "OutputNotEmpty"
    assert keys_under(s3_prefix) == [loc.child("someone-elses/data.bin")]


def test_the_server_honours_conditional_create(s3_env: dict[str, str], s3_prefix: str) -> None:
    """The manifest is written with If-None-Match: *; a second create must fail."""
    import obstore
    import obstore.exceptions as oe

    store, loc = store_for(s3_prefix)
    obstore.put(store, loc.child("manifest.json"), b"{}", mode="create")
    with pytest.raises((oe.AlreadyExistsError, oe.PreconditionError)):
        obstore.put(store, loc.child("manifest.json"), b"{}", mode="create")


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret-key-value"}, "AccessDenied"),
        ({"AWS_ACCESS_KEY_ID": "AKNOSUCHKEY0000"}, "AccessDenied"),
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_wrong_credentials_are_a_permanent_access_denied(
    s3_env: dict[str, str],
    s3_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str],
    reason: str,
) -> None:
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PermanentError) as exc:
        storage.StorageResolver().local_path(f"{s3_prefix}/model")
    assert exc.value.reason == reason
    assert "modelops-test" in exc.value.message
    for value in change.values():
        assert value not in exc.value.message


def test_wrong_credentials_through_the_runner_exit_permanently(
    s3_env: dict[str, str], s3_prefix: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-not-the-secret")
    document = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "PruneRetrain",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u"},
        "spec": {
            "model": {"uri": f"{s3_prefix}/model"},
            "pruning": {"sparsity": 0.5, "calibrationSamples": 2},
            "retrain": {"optimization": {"steps": 1}},
            "output": {"uri": f"{s3_prefix}/out"},
            "resources": {"gpu": {"count": 0}},
        },
    }
    outcome = runner.execute(document)
    assert outcome.exit_code == EXIT_PERMANENT
    assert outcome.result.reason == "AccessDenied"
    assert "bucket modelops-test" in outcome.result.message
    assert "definitely-not-the-secret" not in json.dumps(outcome.result.to_wire())


def test_missing_bucket_is_permanent(s3_env: dict[str, str]) -> None:
    with pytest.raises(PermanentError) as exc:
        storage.StorageResolver().local_path("s3://no-such-bucket-here/model")
    assert exc.value.reason in ("BucketNotFound", "NotFound")
    assert "no-such-bucket-here" in exc.value.message


def test_s3t_store_on_an_object_store_is_refused(s3_prefix: str) -> None:
    from modelops_jobs.algorithms import s3t_store

    with pytest.raises(PermanentError) as exc:
        s3t_store.refuse_object_store(f"{s3_prefix}/store", "spec.output.uri")
    assert exc.value.reason == "UnsupportedStorage" and "spec.output.uri" in exc.value.message


def test_remote_checkpoint_survives_a_new_pod(
    s3_env: dict[str, str], s3_prefix: str, tmp_path: Path
) -> None:
    from modelops_jobs.remote_checkpoint import SyncedCheckpointer

    first = SyncedCheckpointer(tmp_path / "pod-1", f"{s3_prefix}/.out.checkpoint", every=1)
    first.save({"step": 7, "w": torch.ones(3)})
    (tmp_path / "pod-1" / "pruned.pt").write_bytes(b"pruned")
    first.push()
    second = SyncedCheckpointer(tmp_path / "pod-2", f"{s3_prefix}/.out.checkpoint", every=1)
    state = second.load()
    assert state is not None and state["step"] == 7 and torch.equal(state["w"], torch.ones(3))
    assert (tmp_path / "pod-2" / "pruned.pt").read_bytes() == b"pruned"
    second.clear()
    assert keys_under(f"{s3_prefix}/.out.checkpoint") == []


def test_model_adaptation_run_reads_and_publishes_on_s3(
    s3_env: dict[str, str], s3_prefix: str, tmp_path: Path
) -> None:
    """A ModelAdaptation (lora) run through the runner: model and data from s3://, the
    version published under <output>/run-0001 with its manifest, the next run under
    run-0002, and run 1's prefix is never written again."""
    from tests.jobs.test_runner import lora_document

    texts = [r["prompt"] + r["completion"] for r in reversal_task(200, seed=5)]
    tok = tiny.train_tokenizer(texts, vocab_size=300)
    model = tiny.tiny_causal_lm(len(tok), hidden=32, layers=2, heads=2, ffn=64, max_positions=64)
    tiny.save_model_dir(model, tok, tmp_path / "src" / "base")
    from modelops_jobs.data import write_jsonl

    write_jsonl(tmp_path / "src" / "task.jsonl", reversal_task(64, seed=0))
    publish_dir(tmp_path / "src", f"{s3_prefix}/in", storage.StorageResolver())
    document = lora_document(tmp_path, "unused")
    document["spec"]["model"]["uri"] = f"{s3_prefix}/in/base"
    document["spec"]["data"]["uri"] = f"{s3_prefix}/in/task.jsonl"
    document["spec"]["output"]["uri"] = f"{s3_prefix}/versions"
    outcome = runner.execute(document)
    assert outcome.exit_code == 0, outcome.result
    assert outcome.result.artifact is not None
    assert outcome.result.artifact.uri == f"{s3_prefix}/versions/run-0001"
    assert transfer.is_complete(f"{s3_prefix}/versions/run-0001")
    second = {
        **document,
        "run": {"number": 2, "trigger": "test", "parent": outcome.result.artifact.uri},
    }
    again = runner.execute(second)
    assert again.exit_code == 0, again.result
    assert transfer.is_complete(f"{s3_prefix}/versions/run-0002")
    assert runner.execute(document).result.reason == "OutputExists"  # run 1 is never rewritten
