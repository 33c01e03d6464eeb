"""UnlearnRequest method s3t: exact deletion by deactivating the slices that saw a sample.

Why this module exists: it is an s3t request's whole life in the Job pod — read and check
the IDs (deletion.py), cut the store's orders, write the receipt, optionally retrain,
measure forgetting (unlearn_eval.py).

Under the store's file lock (requests for one model run one at a time, so concurrent
requests lose nothing): hash the IDs, look them up in the index, and cut every order of
an affected shard just before the first hit slice. The cut active set is written as a
new version and CURRENT is switched with os.replace: readers see the old or the new
version, never a mix, and the old version stays intact. The receipt (hashed IDs, slices
deactivated, digests and versions before/after) is stored under receipts/ and returned
in `lineage["receipt"]` (a DeletionReceipt). Choices:
- Unknown IDs are counted in `unknownIds` and listed (hashed) in the stored receipt. A
  request whose IDs are all unknown still succeeds, deleting 0: the index is the truth
  of what the model saw, and "not in the training set" is a valid, auditable answer.
- Already deleted IDs are a no-op: a repeated request writes no version and no receipt
  file; its receipt says samples 0 and versionBefore == versionAfter.
- retrainAffected: after serving the deletion, the truncated orders are retrained from
  their last live prefix without the deleted samples (reusing every unchanged step) and
  written as one more version; deletions that landed meanwhile are re-applied to them.
Forget / retain / test figures are measured when spec.evaluation names retain or test
data (loading the model is the expensive part; the deletion itself is instant).
"""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from modelops_api.unlearn_request import (
    Deactivation,
    DeletionReceipt,
    UnlearnRequestSpec,
    UnlearnResults,
)
from modelops_jobs import unlearn_eval
from modelops_jobs.algorithms import s3t, s3t_job, s3t_model, s3t_orders, s3t_store, s3t_train
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.data import read_records
from modelops_jobs.deletion import ids_digest, requested_ids
from modelops_jobs.errors import PermanentError


def open_store(spec: UnlearnRequestSpec, ctx: RunContext) -> tuple[Path, dict[str, Any]]:
    s3t_store.refuse_object_store(str(spec.model.uri), "spec.model.uri")
    store = ctx.resolve(str(spec.model.uri))
    if not s3t_store.is_store(store):
        raise PermanentError(
            f"{spec.model.uri} is not an S3T model store (no store.json)", "NotAnS3TModel"
        )
    try:
        config = s3t_store.read_config(store)
    except (ValueError, OSError) as exc:
        raise PermanentError(str(exc), "NotAnS3TModel") from exc
    if s3t_store.current_version(store) is None:
        raise PermanentError(
            f"{spec.model.uri}: training has not sealed the store yet", "StoreNotReady"
        )
    return store, config


def delete(
    store: Path,
    hashed: list[str],
    index: dict[str, list[int]],
    receipt_base: str,
    unknown: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """Apply one request (known hashed IDs) under the store lock; the full receipt,
    stored with the model unless the request changed nothing."""
    with s3t_store.store_lock(store):
        before = s3t_store.read_version(store)
        deleted = set(before["deleted"])
        new = sorted(h for h in hashed if h not in deleted)
        receipt: dict[str, Any] = {
            "method": "s3t",
            "exact": True,
            "samples": len(new),
            "hashed_ids": new,
            "already_deleted": sorted(h for h in hashed if h in deleted),
            "unknown_hashed_ids": sorted(unknown),
            "version_before": before["version"],
            "digest_before": s3t_store.model_digest(before),
            "time": datetime.now(UTC).isoformat(),
            "deactivated": [],
        }
        if not new:
            return {
                **receipt,
                "version_after": before["version"],
                "digest_after": receipt["digest_before"],
            }
        shards, deactivations = s3t_store.truncate_shards(before, s3t_store.hits_of(new, index))
        after = {
            "parent": before["version"],
            "reason": "delete",
            "created": receipt["time"],
            "deleted": sorted(deleted | set(new)),
            "shards": shards,
        }
        version = s3t_store.write_version(store, after)
        receipt.update(
            version_after=version,
            digest_after=s3t_store.model_digest(after),
            deactivated=deactivations,
            out_of_service=[e["shard"] for e in shards if s3t_store.served_order(e) is None],
            receipt_uri=f"{receipt_base}/receipts/{version}.json",
        )
        s3t_store.write_json(store / "receipts" / f"{version}.json", receipt)
        return receipt


def training_samples(
    config: dict[str, Any], ctx: RunContext, tokenizer: Any
) -> dict[str, tuple[s3t.Sample, int, int]]:
    path = ctx.resolve(config["data_uri"])
    records = read_records(path, config.get("data_max_samples"))
    return s3t_job.build_samples(records, config, tokenizer)


def retrain_affected(
    store: Path, config: dict[str, Any], ctx: RunContext, base: Path
) -> str | None:
    """Retrain truncated orders without the deleted samples; write a version (or None)."""
    from modelops_jobs.modelio import load_tokenizer

    current = s3t_store.read_version(store)
    slices = config["slices"]
    todo = {
        e["shard"]: [tuple(o["order"]) for o in e["orders"] if o["live"] < slices]
        for e in current["shards"]
    }
    todo = {s: orders for s, orders in todo.items() if orders}
    if not todo:
        return None
    deleted = set(current["deleted"])
    index = s3t_store.read_json(store / "index.json")["entries"]
    samples = {
        h: v for h, v in training_samples(config, ctx, load_tokenizer(base)).items() if h in index
    }
    missing = set(index) - deleted - set(samples)
    if missing:
        raise PermanentError(
            f"{len(missing)} retained training samples are gone from {config['data_uri']}",
            "TrainingDataChanged",
        )
    model = s3t_model.build_model(config, base, ctx.device)
    retrained: dict[int, list[dict[str, Any]]] = {}
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for shard, orders in sorted(todo.items()):
            ctx.reporter.phase(f"s3t-retrain-shard-{shard}")
            retrained[shard] = s3t_train.train_orders(
                model,
                store,
                shard,
                orders,
                s3t_job.slices_of(samples, shard, slices, deleted),
                s3t_job.train_settings(config),
                config["seed"],
                config["config_digest"],
                config["pad_id"],
                ctx.device,
                progress=lambda d, t, loss: ctx.reporter.step(d, t),
            )
    finally:
        torch.use_deterministic_algorithms(previous)
    with s3t_store.store_lock(store):
        latest = s3t_store.read_version(store)
        since = sorted(set(latest["deleted"]) - deleted)
        shards = []
        for entry in latest["shards"]:
            fresh = {tuple(o["order"]): o for o in retrained.get(entry["shard"], [])}
            kept = [
                {**fresh[tuple(o["order"])], "live": slices}
                if tuple(o["order"]) in fresh and o["live"] < slices
                else o
                for o in entry["orders"]
            ]
            shards.append({"shard": entry["shard"], "orders": kept})
        shards, _ = s3t_store.truncate_shards({"shards": shards}, s3t_store.hits_of(since, index))
        manifest = {
            "parent": latest["version"],
            "reason": "retrain",
            "created": datetime.now(UTC).isoformat(),
            "deleted": latest["deleted"],
            "shards": shards,
        }
        return s3t_store.write_version(store, manifest)


def run(spec: UnlearnRequestSpec, ctx: RunContext) -> AlgorithmResult:
    started = time.monotonic()
    store, config = open_store(spec, ctx)
    ids = requested_ids(spec, ctx)
    index = s3t_store.read_json(store / "index.json")["entries"]
    hashed = [s3t_orders.hash_id(i) for i in ids]
    known = [h for h in hashed if h in index]
    unknown = sorted(h for h in hashed if h not in index)
    ctx.reporter.phase("s3t-delete")
    full = delete(store, known, index, str(spec.model.uri).rstrip("/"), unknown)
    seconds = time.monotonic() - started
    base = ctx.resolve(config["base_uri"])
    retrained, retrain_error = None, None
    if spec.retrain_affected:
        try:  # the deletion is served already: a failed retraining must not hide its receipt
            retrained = retrain_affected(store, config, ctx, base)
        except PermanentError as exc:
            retrain_error = f"{exc.reason}: {exc.message}"
    served = s3t_store.read_version(store)
    out = [e["shard"] for e in served["shards"] if s3t_store.served_order(e) is None]
    receipt = DeletionReceipt(
        method="s3t",
        exact=True,
        samples=full["samples"],
        hashed_ids_digest=ids_digest(full["hashed_ids"]),
        deactivated=[Deactivation(**d) for d in full["deactivated"][:256]],
        digest_before=full["digest_before"],
        digest_after=full["digest_after"],
        version_before=full["version_before"],
        version_after=full["version_after"],
        time=datetime.fromisoformat(full["time"]),
        receipt_uri=full.get("receipt_uri"),
        serving=len(out) < len(served["shards"]),
    )
    results: dict[str, Any] = {
        "deleted_samples": full["samples"],
        "unknown_ids": len(unknown),
        "shards_out_of_service": out,
        "shards": len(served["shards"]),
        "shards_in_service": len(served["shards"]) - len(out),
        "seconds": round(seconds, 4),
    }
    wants_figures = spec.evaluation.retain_data is not None or spec.evaluation.test_data is not None
    if wants_figures and len(results["shards_out_of_service"]) < len(served["shards"]):
        ctx.reporter.phase("evaluate")
        ensemble = s3t.load(store, base_path=base, device=ctx.device)
        samples = _forget_samples(config, ctx, ensemble.tokenizer, set(known))
        sets = unlearn_eval.eval_sets(spec, ctx, config, ensemble.tokenizer)
        results.update(
            unlearn_eval.measure(ensemble.logits, samples, sets, config["pad_id"], ctx.device)
        )
    if ctx.output_dir.name.endswith(".partial"):  # spec.output given: publish the receipt there too
        s3t_store.write_json(ctx.output_dir / "receipt.json", {**full, "serving": receipt.serving})
    lineage = {
        "receipt": receipt.to_wire(),
        "retrainedVersion": retrained,
        "retrainError": retrain_error,
        "store": str(spec.model.uri),
    }
    results = UnlearnResults.model_validate(results).model_dump(exclude_none=True)
    version = retrained or full["version_after"]
    return AlgorithmResult(
        results=results, lineage=lineage, version=version, publish=spec.output is not None
    )


def _forget_samples(
    config: dict[str, Any], ctx: RunContext, tokenizer: Any, hashed: set[str]
) -> list[s3t.Sample]:
    try:
        samples = training_samples(config, ctx, tokenizer)
    except PermanentError:
        return []  # the training data is gone: no forget-set figures, nothing else lost
    return [samples[h][0] for h in sorted(hashed) if h in samples][: unlearn_eval.EVAL_LIMIT]
