"""Downloads from and uploads to object stores, with the guarantees the local path has.

Downloads (`download`): every key under the prefix (the client pages through the
listing), fetched in parallel and streamed to disk in chunks (a shard is never whole
in memory), each into a `.part` file renamed when complete and, when the prefix holds
a manifest.json, verified against its sha256. The cache directory is keyed by the URI
and by the source's digest (the manifest's, or the listing's ETags when there is no
manifest): a retried pod that shares the cache finds a `.complete` marker and
downloads nothing, and one killed half-way keeps the files it finished.

Uploads (`upload`): object stores have no rename, so a result is published by writing
every file under the final prefix and manifest.json LAST, with a conditional create
(`If-None-Match: *`): a prefix with a manifest is complete, one without is an
incomplete attempt. A complete prefix is never overwritten (PermanentError
OutputExists, also when another writer's manifest lands first); an incomplete one is
cleaned up and written again. Large files go up in parts (MODELOPS_UPLOAD_PART_SIZE).
"""

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelops_jobs.errors import PermanentError, RetryableError
from modelops_jobs.objectstore import (
    Location,
    errors,
    head,
    list_objects,
    location,
    open_store,
    part_size,
    read_bytes,
)
from modelops_jobs.reporting import Reporter

MANIFEST = "manifest.json"
COMPLETE = ".complete"
"""Suffix of the marker beside a finished download directory (never inside it)."""
MARKER = ".modelops-upload"
"""Written first by an upload and removed after its manifest: 'this prefix is ours'."""
WORKERS = int(os.environ.get("MODELOPS_TRANSFER_WORKERS", "8"))
UPLOAD_WORKERS = 4
CHUNK = 8 * 1024 * 1024


class Progress:
    """Files and bytes done, reported through the run's reporter (thread-safe)."""

    def __init__(self, reporter: Reporter | None, phase: str, files: int, size: int) -> None:
        self.reporter, self.files, self.size = reporter, files, size
        self.done_files = self.done_bytes = 0
        self._lock = threading.Lock()
        self._previous = reporter.phase_name if reporter else ""
        if reporter is not None:
            reporter.phase(phase)

    def add(self, nbytes: int, file_done: bool = False) -> None:
        with self._lock:
            self.done_bytes += nbytes
            self.done_files += int(file_done)
            if self.reporter is not None and self.files:
                self.reporter.step(
                    max(self.done_files, 0),
                    self.files,
                    bytes=float(self.done_bytes),
                    total_bytes=float(self.size),
                )

    def close(self) -> None:
        if self.reporter is not None and self._previous not in ("", "start"):
            self.reporter.phase(self._previous)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _parallel(items: list[Any], work: Callable[[Any], None], workers: int = WORKERS) -> None:
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


# -- downloads -------------------------------------------------------------------------


def download(uri: str, cache_root: Path, reporter: Reporter | None = None) -> Path | None:
    """A local copy of an object or a prefix (None when neither exists)."""
    loc = location(uri)
    store = open_store(loc)
    listed = list_objects(store, loc, loc.key)
    objects = [o for o in listed if not o["path"].endswith("/") and o["path"] != loc.child(MARKER)]
    unfinished = len(objects) < len(listed) and any(o["path"] == loc.child(MARKER) for o in listed)
    if unfinished and not any(o["path"] == loc.child(MANIFEST) for o in objects):
        raise PermanentError(
            f"{uri} is an unfinished upload (no manifest.json yet): its run has not published it",
            "IncompleteSource",
        )
    base = cache_root / "remote" / hashlib.sha256(loc.uri.encode()).hexdigest()[:24]
    if not objects:
        meta = head(store, loc, loc.key) if loc.key else None
        if meta is None:
            return None
        digest = hashlib.sha256(f"{meta['size']}:{meta.get('e_tag')}".encode()).hexdigest()
        name = loc.key.rsplit("/", 1)[-1]
        target = base / digest[:24] / name
        if not target.is_file():
            _fetch(store, loc, meta, target, None, Progress(reporter, "download", 1, meta["size"]))
        return target
    rels = {o["path"]: _relative(loc, o["path"]) for o in objects}
    expected: dict[str, str] = {}
    if MANIFEST in rels.values():
        body = read_bytes(store, loc, loc.child(MANIFEST))
        key = hashlib.sha256(body).hexdigest()
        expected = _manifest_files(uri, body)
        missing = sorted(set(expected) - set(rels.values()))
        if missing:
            raise PermanentError(
                f"{uri}: manifest.json lists {len(missing)} files the store does not hold "
                f"(first: {missing[0]})",
                "ManifestMismatch",
            )
    else:
        listing = sorted((o["path"], o["size"], o.get("e_tag")) for o in objects)
        key = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    dest = base / key[:24]
    if complete_marker(dest).is_file():
        return dest
    progress = Progress(reporter, "download", len(objects), sum(o["size"] for o in objects))

    def one(meta: dict[str, Any]) -> None:
        rel = rels[meta["path"]]
        target = dest / rel
        want = expected.get(rel)
        kept = target.is_file() and target.stat().st_size == meta["size"]
        if kept and (want is None or sha256_file(target) == want):
            progress.add(meta["size"], file_done=True)
            return
        _fetch(store, loc, meta, target, want, progress)

    try:
        _parallel(objects, one)
    finally:
        progress.close()
    complete_marker(dest).write_text(json.dumps({"uri": uri, "key": key}))
    return dest


def complete_marker(dest: Path) -> Path:
    return dest.with_name(dest.name + COMPLETE)


def _relative(loc: Location, key: str) -> str:
    """The object's path under the prefix; refuses keys that would escape it."""
    rel = key[len(loc.key) + 1 :] if loc.key else key
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        raise PermanentError(f"{loc.uri}: object key {key!r} is not a safe path", "InvalidData")
    return rel


def _manifest_files(uri: str, body: bytes) -> dict[str, str]:
    try:
        files = json.loads(body).get("files", {})
    except (ValueError, AttributeError) as exc:
        raise PermanentError(
            f"{uri}/manifest.json is not valid JSON: {exc}", "InvalidData"
        ) from exc
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def _fetch(
    store: Any,
    loc: Location,
    meta: dict[str, Any],
    target: Path,
    want: str | None,
    progress: Progress,
) -> None:
    """Stream one object to `target` (via a .part file), verifying its digest if known."""
    import obstore

    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        # unique per process and thread: pods sharing a cache never write one .part file
        part = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.part")
        h = hashlib.sha256()
        with errors(loc, f"downloading {meta['path']}"), open(part, "wb") as fh:
            for chunk in obstore.get(store, meta["path"]).stream(min_chunk_size=CHUNK):
                data = memoryview(chunk)
                fh.write(data)
                h.update(data)
                progress.add(len(data))
        got = "sha256:" + h.hexdigest()
        if want is None or got == want:
            os.replace(part, target)
            progress.add(0, file_done=True)
            return
        part.unlink(missing_ok=True)
        if attempt == 2:
            raise PermanentError(
                f"{loc.scheme}://{loc.bucket}/{meta['path']}: sha256 {got} does not match "
                f"the manifest's {want}",
                "DigestMismatch",
            )


# -- uploads ---------------------------------------------------------------------------


def is_complete(uri: str) -> bool:
    """Whether the prefix holds a published result (its manifest)."""
    loc = location(uri)
    return head(open_store(loc), loc, loc.child(MANIFEST)) is not None


def refuse_complete(uri: str) -> None:
    if is_complete(uri):
        raise PermanentError(
            f"output {uri} already holds a completed result (it has a manifest.json); "
            "choose a new output.uri",
            "OutputExists",
        )


def upload(local: Path, uri: str, reporter: Reporter | None = None) -> None:
    """Publish a finished local directory (manifest.json already written) under `uri`."""
    import obstore
    import obstore.exceptions as oe

    loc = location(uri)
    if not loc.key:
        raise PermanentError(f"output {uri} must name a prefix inside the bucket", "InvalidURI")
    store = open_store(loc)
    manifest = local / MANIFEST
    if not manifest.is_file():
        raise RetryableError(f"{local} has no manifest.json to publish", "InternalError")
    refuse_complete(uri)
    _clean_incomplete(store, loc)
    with errors(loc, "starting the upload"):
        obstore.put(store, loc.child(MARKER), json.dumps({"uri": uri}).encode())
    files = sorted(p for p in local.rglob("*") if p.is_file() and p != manifest)
    size = sum(p.stat().st_size for p in files) + manifest.stat().st_size
    progress = Progress(reporter, "upload", len(files) + 1, size)
    chunk = part_size()

    def one(path: Path) -> None:
        key = loc.child(path.relative_to(local).as_posix())
        with errors(loc, f"uploading {key}"):
            obstore.put(store, key, path, chunk_size=chunk, max_concurrency=4)
        progress.add(path.stat().st_size, file_done=True)

    try:
        _parallel(files, one, min(WORKERS, UPLOAD_WORKERS))
        with errors(loc, "writing manifest.json"):
            try:
                obstore.put(store, loc.child(MANIFEST), manifest.read_bytes(), mode="create")
            except (oe.AlreadyExistsError, oe.PreconditionError, FileExistsError):
                raise PermanentError(
                    f"output {uri} was published by another writer while this run uploaded",
                    "OutputExists",
                ) from None
        progress.add(manifest.stat().st_size, file_done=True)
    finally:
        progress.close()
    with errors(loc, "finishing the upload"):
        obstore.delete(store, loc.child(MARKER))


def check_output(uri: str) -> None:
    """Before a run: refuse a complete output, or a prefix holding someone else's objects."""
    loc = location(uri)
    if not loc.key:
        raise PermanentError(f"output {uri} must name a prefix inside the bucket", "InvalidURI")
    refuse_complete(uri)
    _clean_incomplete(open_store(loc), loc, delete=False)


def _clean_incomplete(store: Any, loc: Location, delete: bool = True) -> None:
    """Remove what an earlier attempt left (it has our marker); refuse foreign objects."""
    import obstore

    keys = [o["path"] for o in list_objects(store, loc, loc.key)]
    if not keys:
        return
    if loc.child(MARKER) not in keys:
        raise PermanentError(
            f"output {loc.uri} holds {len(keys)} objects that no modelops upload wrote "
            f"(first: {keys[0]}); choose an empty prefix for output.uri",
            "OutputNotEmpty",
        )
    if not delete:
        return
    with errors(loc, f"removing {len(keys)} objects of an incomplete upload"):
        keys.remove(loc.child(MARKER))
        for i in range(0, len(keys), 1000):
            obstore.delete(store, keys[i : i + 1000])


def remove_prefix(uri: str) -> None:
    """Delete every object under the prefix (checkpoints after a published run)."""
    import obstore

    loc = location(uri)
    store = open_store(loc)
    keys = [o["path"] for o in list_objects(store, loc, loc.key)]
    with errors(loc, "removing"):
        for i in range(0, len(keys), 1000):
            obstore.delete(store, keys[i : i + 1000])


def put_file(path: Path, uri: str) -> None:
    """Upload one file to exactly `uri` (a single object write, atomic for readers)."""
    import obstore

    loc = location(uri)
    with errors(loc, f"uploading {loc.key}"):
        obstore.put(open_store(loc), loc.key, path, chunk_size=part_size(), max_concurrency=4)


def clear_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
