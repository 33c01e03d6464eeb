"""The S3T model store on disk: layout, versions, the lock, and deletion arithmetic.

Why a module of its own: training (s3t_job), deletion (unlearn_s3t) and serving
(s3t.load) all read and write the same files, and the atomicity rules live here once.

Layout (a directory; every JSON write is a tmp file + os.replace):
  store.json                 format, shards, slices, orders, task, base URI, config digest
  index.json                 sha256(sample ID) -> [shard, slice]; no sample text
  shards/<s>/steps/<key>.safetensors   one trained step (its group + head)
  shards/<s>/shard.json      the shard's orders and step keys (written last: shard done)
  versions/vNNNN/active.json per shard and order the live prefix length and its steps;
                             the cumulative deleted hashed IDs
  CURRENT                    the served version's name, switched with os.replace
  receipts/<version>.json    deletion receipts
Readers take CURRENT, then that version's active.json: a reader sees the old or the new
version, never a mix. Writers (sealing after training, deletions, retraining) hold an
exclusive fcntl.flock on `.lock`, so requests for one store run one at a time.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STORE_FORMAT = "modelops-s3t/1"


def write_json(path: Path, body: Any) -> None:
    """Write JSON atomically (tmp file in the same directory, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@contextlib.contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Exclusive lock on the store (fcntl.flock): writers of one store run one at a time."""
    store.mkdir(parents=True, exist_ok=True)
    with open(store / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def refuse_object_store(uri: str, field: str) -> None:
    """The store needs flock and os.replace: an object store (s3://, gs://) has neither."""
    from modelops_api.storage import OBJECT_STORE_SCHEMES, S3T_NEEDS_FILESYSTEM
    from modelops_jobs.errors import PermanentError

    if uri.split("://", 1)[0] in OBJECT_STORE_SCHEMES:
        raise PermanentError(f"{field}: {S3T_NEEDS_FILESYSTEM}", "UnsupportedStorage")


def is_store(path: Path) -> bool:
    return (path / "store.json").is_file()


def read_config(store: Path) -> dict[str, Any]:
    body = read_json(store / "store.json")
    if body.get("format") != STORE_FORMAT:
        raise ValueError(f"{store} holds store format {body.get('format')!r}, not {STORE_FORMAT}")
    return body


def current_version(store: Path) -> str | None:
    path = store / "CURRENT"
    return path.read_text().strip() if path.exists() else None


def read_version(store: Path, version: str | None = None) -> dict[str, Any]:
    """The active-set manifest of a version (default: CURRENT)."""
    version = version or current_version(store)
    if version is None:
        raise FileNotFoundError(f"{store} has no sealed version yet (no CURRENT)")
    return read_json(store / "versions" / version / "active.json")


def write_version(store: Path, manifest: dict[str, Any]) -> str:
    """Write a new version and switch CURRENT to it; call under store_lock."""
    versions = store / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[1:]) for p in versions.glob("v[0-9]*") if p.name[1:].isdigit()]
    name = f"v{max(numbers, default=0) + 1:04d}"
    write_json(versions / name / "active.json", {**manifest, "version": name})
    tmp = store / f".CURRENT.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, store / "CURRENT")
    return name


def model_digest(manifest: dict[str, Any]) -> str:
    """sha256 over the live prefixes and their checkpoint digests: what the version serves."""
    live = [
        [
            [o["order"], o["live"], [s["digest"] for s in o["steps"][: o["live"]]]]
            for o in shard["orders"]
        ]
        for shard in manifest["shards"]
    ]
    return "sha256:" + hashlib.sha256(json.dumps(live, sort_keys=True).encode()).hexdigest()


def served_order(shard_entry: dict[str, Any]) -> dict[str, Any] | None:
    """The live order with the longest prefix (first one on ties); None: out of service."""
    best = max(shard_entry["orders"], key=lambda o: o["live"], default=None)
    return best if best is not None and best["live"] > 0 else None


# -- deletion arithmetic -------------------------------------------------------------


def truncate_shards(
    manifest: dict[str, Any], hits: dict[int, set[int]]
) -> tuple[list[dict[str, Any]], list[dict[str, int]]]:
    """Cut each order of a hit shard before its first hit slice; the deactivations."""
    shards, truncated = [], {(s, k): 0 for s, ks in hits.items() for k in ks}
    for entry in manifest["shards"]:
        hit = hits.get(entry["shard"], set())
        orders = []
        for o in entry["orders"]:
            positions = [o["order"].index(k) for k in hit]
            cut = min(positions, default=len(o["order"]))
            if cut < o["live"]:
                truncated[(entry["shard"], o["order"][cut])] += 1
                o = {**o, "live": cut, "steps": o["steps"][:cut]}
            orders.append(o)
        shards.append({"shard": entry["shard"], "orders": orders})
    deactivations = [
        {"shard": s, "slice": k, "orders_truncated": n} for (s, k), n in sorted(truncated.items())
    ]
    return shards, deactivations


def hits_of(hashed: list[str], index: dict[str, list[int]]) -> dict[int, set[int]]:
    """Per shard, the slices that hold these (known) hashed IDs."""
    hits: dict[int, set[int]] = {}
    for h in hashed:
        shard, slice_index = index[h]
        hits.setdefault(shard, set()).add(slice_index)
    return hits
