"""Storage URIs to local paths, and atomic publication of outputs.

One resolver per scheme: `file://` is the path itself; `pvc://claim/path` is the claim
mounted by the Job builder at `$MODELOPS_PVC_ROOT/claim` (default /mnt/pvc);
`hf://org/name` is a Hugging Face snapshot resolved from the cache volume (offline
when `HF_HUB_OFFLINE=1`); `s3://` is downloaded into a cache (needs boto3).

Outputs are written into a staging directory beside the destination, the manifest
last, then renamed into place: a reader sees a complete result or none, and a failed
run never leaves a partial output that looks complete.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from modelops_api.storage import parse_uri
from modelops_jobs.errors import PermanentError, RetryableError

MANIFEST = "manifest.json"


class StorageResolver:
    """Maps storage URIs to local paths."""

    def __init__(self, pvc_root: str | None = None, cache_dir: str | None = None) -> None:
        self.pvc_root = Path(pvc_root or os.environ.get("MODELOPS_PVC_ROOT", "/mnt/pvc"))
        self.cache_dir = Path(
            cache_dir or os.environ.get("MODELOPS_CACHE_DIR", "/tmp/modelops-cache")
        )

    def local_path(self, uri: str, must_exist: bool = True) -> Path:
        try:
            parsed = parse_uri(uri)
        except ValueError as exc:
            raise PermanentError(str(exc), "InvalidURI") from exc
        if parsed.scheme == "file":
            path = Path(parsed.path)
        elif parsed.scheme == "pvc":
            path = self.pvc_root / parsed.authority / parsed.path
        elif parsed.scheme == "hf":
            path = self._hf_snapshot(f"{parsed.authority}/{parsed.path}", parsed.revision)
        else:
            path = self._s3_download(parsed.authority, parsed.path, must_exist)
        if must_exist and not path.exists():
            raise PermanentError(f"{uri} does not exist (looked at {path})", "NotFound")
        return path

    def _hf_snapshot(self, repo: str, revision: str | None) -> Path:
        try:
            from huggingface_hub import snapshot_download
        except ImportError as exc:  # pragma: no cover
            raise PermanentError("hf:// needs huggingface_hub", "Unsupported") from exc
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        try:
            return Path(snapshot_download(repo, revision=revision, local_files_only=offline))
        except Exception as exc:
            kind = type(exc).__name__
            if "NotFound" in kind or "LocalEntry" in kind or "Repository" in kind:
                raise PermanentError(f"hf://{repo}: {exc}", "NotFound") from exc
            raise RetryableError(f"hf://{repo}: {exc}") from exc

    def _s3_download(self, bucket: str, key: str, must_exist: bool) -> Path:
        try:
            import boto3  # type: ignore[import-not-found]
        except ImportError as exc:
            raise PermanentError("s3:// needs boto3 in the jobs image", "Unsupported") from exc
        target = self.cache_dir / "s3" / bucket / key
        client = boto3.client("s3")
        listing = client.list_objects_v2(Bucket=bucket, Prefix=key)
        for obj in listing.get("Contents", []):
            dest = self.cache_dir / "s3" / bucket / obj["Key"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest))
        return target


def is_complete(path: Path) -> bool:
    """A published output has its manifest."""
    return (path / MANIFEST).is_file()


def staging_dir_for(final: Path) -> Path:
    """A fresh staging directory beside the destination (same filesystem, so rename is atomic)."""
    if is_complete(final):
        raise PermanentError(
            f"output {final} already holds a completed result; choose a new output.uri",
            "OutputExists",
        )
    staging = final.parent / f".{final.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative path -> digest), manifest excluded."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            out[str(path.relative_to(root))] = file_digest(path)
    return out


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """Write manifest.json (with file digests) last; return its own digest."""
    body = {**manifest, "files": tree_digests(directory)}
    text = json.dumps(body, indent=2, sort_keys=True, default=str)
    (directory / MANIFEST).write_text(text)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def publish(staging: Path, final: Path) -> None:
    """Move a finished staging directory into place atomically."""
    if final.exists():
        if is_complete(final):
            raise PermanentError(f"output {final} appeared while running", "OutputExists")
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)
