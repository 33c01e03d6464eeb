"""Object-store throughput: a ~1 GB multi-shard model up to and down from a real S3 server.

A local SeaweedFS (`weed server -s3`, built by `make seaweedfs`) on 127.0.0.1 stands in
for the object store. The model is `--shards` safetensors-sized files of random bytes
plus an index, published through the same code a run uses (`storage.Output.publish`:
multipart uploads, manifest last) and fetched through the same resolver a run uses
(`StorageResolver.local_path`: paged listing, parallel streamed downloads, sha256
verified against the manifest). The baseline, in the same run, is copying the same
files on the local disk (`shutil.copyfile`), so the result is a ratio: how much slower
the object-store path is than a local copy on this machine. The server shares the
machine's CPUs and disk with the client, so this measures the client path and the
server's overhead, not a network.

    PYTHONPATH=operator:jobs python benchmarks/storage.py [--size-mb 1024 --shards 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from modelops_devcluster.seaweedfs import SeaweedS3, weed_version

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"
BUCKET = "bench"


def make_model(root: Path, size_mb: int, shards: int) -> Path:
    model = root / "model"
    model.mkdir(parents=True)
    per = size_mb * 1024 * 1024 // shards
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        with open(model / name, "wb") as fh:
            for _ in range(per // (8 << 20)):
                fh.write(os.urandom(8 << 20))
            fh.write(os.urandom(per % (8 << 20)))
        weight_map[f"layer.{i}.weight"] = name
    index = {"metadata": {"total_size": per * shards}, "weight_map": weight_map}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    (model / "config.json").write_text(json.dumps({"model_type": "bench"}))
    return model


def peak_rss_mb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) // 1024


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(size_mb: int, shards: int) -> dict[str, object]:
    from modelops_jobs import objectstore, storage

    work = Path(tempfile.mkdtemp(prefix="modelops-bench-storage-"))
    try:
        model = make_model(work / "src", size_mb, shards)
        total = sum(p.stat().st_size for p in model.iterdir())
        with SeaweedS3(work / "seaweedfs") as server:
            server.create_bucket(BUCKET)
            os.environ.update(server.env())
            resolver = storage.StorageResolver(cache_dir=str(work / "cache"))
            uri = f"s3://{BUCKET}/models/bench"

            def upload() -> None:
                out = storage.prepare_output(resolver, uri, None)
                for p in model.iterdir():
                    os.link(p, out.staging / p.name)  # stage without copying the bytes
                storage.write_manifest(out.staging, {"kind": "benchmark"})
                out.publish()

            def local_copy() -> None:
                dest = work / "copy"
                dest.mkdir()
                for p in model.iterdir():
                    shutil.copyfile(p, dest / p.name)
                os.sync()

            t_manifest = timed(lambda: storage.tree_digests(model))
            rss = {"before_mb": peak_rss_mb()}
            t_up = timed(upload) - t_manifest  # upload time excludes hashing the files
            rss["after_upload_mb"] = peak_rss_mb()
            t_down = timed(lambda: resolver.local_path(uri))
            rss["after_download_mb"] = peak_rss_mb()
            t_cached = timed(lambda: resolver.local_path(uri))
            t_copy = timed(local_copy)
        mb = total / 1e6
        return {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "seaweedfs": weed_version(),
            "bytes": total,
            "files": shards + 2,
            "part_size_mb": objectstore.part_size() // (1 << 20),
            "peak_rss": rss,
            "upload_s": round(t_up, 2),
            "download_verified_s": round(t_down, 2),
            "cached_resolve_s": round(t_cached, 3),
            "hash_s": round(t_manifest, 2),
            "local_copy_s": round(t_copy, 2),
            "upload_mb_s": round(mb / t_up, 1),
            "download_mb_s": round(mb / t_down, 1),
            "local_copy_mb_s": round(mb / t_copy, 1),
            "upload_vs_copy": round(t_up / t_copy, 2),
            "download_vs_copy": round(t_down / t_copy, 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, object], command: str) -> str:
    return f"""## Object storage (s3://) throughput

Machine: {r["machine"]}; SeaweedFS (`{r["seaweedfs"]}`) on 127.0.0.1 (same machine, same
disk). Command: `{command}`. A {int(r["bytes"]) / 1e9:.2f} GB model of {r["files"]} files
(safetensors-sized shards + index + config), published through `storage.Output.publish`
(multipart, {r["part_size_mb"]} MiB parts, manifest last) and fetched through
`StorageResolver.local_path` (paged listing, 8 parallel streamed downloads, each file's
sha256 checked against the manifest). Baseline in the same run: `shutil.copyfile` of
the same files on local disk, then `sync`.

| path | seconds | MB/s | vs local copy |
|---|---|---|---|
| local disk copy | {r["local_copy_s"]} | {r["local_copy_mb_s"]} | 1.00 |
| upload to s3:// (excl. hashing) | {r["upload_s"]} | {r["upload_mb_s"]} | {r["upload_vs_copy"]} |
| download from s3://, verified | {r["download_verified_s"]} | {r["download_mb_s"]} | {r["download_vs_copy"]} |
| second resolve (cache hit) | {r["cached_resolve_s"]} | - | - |

Hashing the files for the manifest took {r["hash_s"]} s (done once per published run).
Peak RSS of the process (torch and the jobs imported): {r["peak_rss"]["before_mb"]} MB
before the upload, {r["peak_rss"]["after_upload_mb"]} MB after it,
{r["peak_rss"]["after_download_mb"]} MB after the download: files are streamed, never
held whole (4 files x 4 parts of {r["part_size_mb"]} MiB in flight at most on upload,
8 x 8 MiB chunks on download).
The server and the client share the CPUs and the disk, so these are lower bounds for a
real object store reached over a network with its own disks, and the ratio is what the
storage layer costs on top of moving the bytes on this machine. The local copy ends with
`sync`; the download does not (its bytes may still be in the page cache, as the
server's may be), and the upload pays SeaweedFS's write path (4 MiB filer chunks into
volume files) on the same two cores.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    result = run(args.size_mb, args.shards)
    command = "PYTHONPATH=operator:jobs python benchmarks/storage.py" + (
        f" --size-mb {args.size_mb} --shards {args.shards}"
        if (args.size_mb, args.shards) != (1024, 8)
        else ""
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "storage.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "storage.md").write_text(markdown(result, command))
    print(json.dumps(result, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
