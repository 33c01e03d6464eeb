"""Storage URIs to local paths, and atomic publication of outputs: one interface, every scheme.

Inputs (`StorageResolver.local_path`): `file://` is the path itself; `pvc://claim/path`
is the claim mounted by the Job builder at `$MODELOPS_PVC_ROOT/claim` (default
/mnt/pvc); `hf://org/name` is a Hugging Face snapshot resolved from the cache volume
(offline when `HF_HUB_OFFLINE=1`); `s3://` and `gs://` are downloaded by
`transfer.download` into `$MODELOPS_CACHE_DIR` (keyed by URI and digest, resumable,
verified against the source's manifest).

Outputs (`prepare_output` then `Output.publish`): the algorithm always writes into a
local staging directory, the manifest last. On a filesystem the staging directory sits
beside the destination and is renamed into place; on an object store it is uploaded
file by file with manifest.json last (`transfer.upload`). Either way a reader sees a
complete result or none, and a failed run never leaves a partial output that looks
complete (docs/architecture.md, "Outputs and object stores").
"""

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelops_api.storage import parse_uri
from modelops_jobs import transfer
from modelops_jobs.checkpoint import Checkpointer
from modelops_jobs.errors import PermanentError, RetryableError
from modelops_jobs.objectstore import is_remote
from modelops_jobs.reporting import Reporter

MANIFEST = transfer.MANIFEST


def cache_root(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("MODELOPS_CACHE_DIR", "/tmp/modelops-cache"))


def _key(uri: str) -> str:
    return hashlib.sha256(uri.encode()).hexdigest()[:24]


class StorageResolver:
    """Maps storage URIs to local paths (downloading object-store URIs into the cache)."""

    def __init__(self, pvc_root: str | None = None, cache_dir: str | None = None) -> None:
        self.pvc_root = Path(pvc_root or os.environ.get("MODELOPS_PVC_ROOT", "/mnt/pvc"))
        self.cache_dir = cache_root(cache_dir)

    def local_path(
        self, uri: str, must_exist: bool = True, reporter: Reporter | None = None
    ) -> Path:
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
            found = transfer.download(uri, self.cache_dir, reporter)
            path = found or self.cache_dir / "missing" / _key(uri)
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


# -- outputs ---------------------------------------------------------------------------


@dataclass
class Output:
    """Where a run writes (staging), where it publishes, and where it checkpoints."""

    uri: str
    staging: Path
    final: Path | None
    """The local destination; None for an object store (published by upload)."""
    checkpoint_dir: Path
    checkpoint_uri: str | None = None
    """Object-store copy of the checkpoint directory (survives a retried pod)."""

    def checkpointer(self, every: int, rank: int = 0) -> Checkpointer:
        if self.checkpoint_uri is None:
            return Checkpointer(self.checkpoint_dir, every=every, rank=rank)
        from modelops_jobs.remote_checkpoint import SyncedCheckpointer

        return SyncedCheckpointer(self.checkpoint_dir, self.checkpoint_uri, every=every, rank=rank)

    def publish(self, reporter: Reporter | None = None) -> None:
        """Make the finished staging directory (manifest written) the published result."""
        if self.final is None:
            transfer.upload(self.staging, self.uri, reporter)
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            publish(self.staging, self.final)


def prepare_output(
    resolver: StorageResolver, uri: str, checkpoint_dir: Path | None, main: bool = True
) -> Output:
    """A fresh staging directory for `uri`; PermanentError(OutputExists) if it is complete.

    Ranks other than 0 of a distributed run (`main=False`) never publish: they get a
    private scratch directory instead of the staging one, and the same checkpoints."""
    if not main:
        output = prepare_output_location(resolver, uri, checkpoint_dir)
        output.staging = Path(tempfile.mkdtemp(prefix="modelops-rank-"))
        return output
    if not is_remote(uri):
        final = resolver.local_path(uri, must_exist=False)
        staging = staging_dir_for(final)
        ckpt = checkpoint_dir or final.parent / f".{final.name}.checkpoint"
        return Output(uri, staging, final, ckpt)
    transfer.check_output(uri)
    base = resolver.cache_dir / "outputs" / _key(uri)
    staging = base / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    parent, _, name = uri.rstrip("/").rpartition("/")
    return Output(
        uri,
        staging,
        None,
        checkpoint_dir or base / "checkpoint",
        checkpoint_uri=f"{parent}/.{name}.checkpoint",
    )


def prepare_output_location(
    resolver: StorageResolver, uri: str, checkpoint_dir: Path | None
) -> Output:
    """Where `uri`'s run checkpoints, without touching its staging directory."""
    if not is_remote(uri):
        final = resolver.local_path(uri, must_exist=False)
        if is_complete(final):
            raise PermanentError(f"output {final} already holds a completed result", "OutputExists")
        ckpt = checkpoint_dir or final.parent / f".{final.name}.checkpoint"
        return Output(uri, final.parent / f".{final.name}.partial", final, ckpt)
    base = resolver.cache_dir / "outputs" / _key(uri)
    parent, _, name = uri.rstrip("/").rpartition("/")
    return Output(
        uri,
        base / "staging",
        None,
        checkpoint_dir or base / "checkpoint",
        checkpoint_uri=f"{parent}/.{name}.checkpoint",
    )


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
    return transfer.sha256_file(path)


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative path -> digest), manifest excluded."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            out[path.relative_to(root).as_posix()] = file_digest(path)
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
