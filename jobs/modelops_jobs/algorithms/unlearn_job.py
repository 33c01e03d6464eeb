"""UnlearnRequest: forget training samples, exactly (S3T) or approximately (SSD).

Why this module exists: it is the request's whole life in the Job pod — read and check
the IDs, apply the method, write the receipt, measure forgetting.

s3t (exact). Under the store's file lock (requests for one model run one at a time, so
concurrent requests lose nothing): hash the IDs, look them up in the index, and cut
every order of an affected shard just before the first hit slice. The cut active set is
written as a new version and CURRENT is switched with os.replace: readers see the old or
the new version, never a mix, and the old version stays intact. The receipt (hashed IDs,
slices deactivated, digests and versions before/after) is stored under receipts/ and
returned in `lineage["receipt"]` (a DeletionReceipt). Choices:
- Unknown IDs are counted in `unknownIds` and listed (hashed) in the stored receipt. A
  request whose IDs are all unknown still succeeds, deleting 0: the index is the truth
  of what the model saw, and "not in the training set" is a valid, auditable answer.
- Already deleted IDs are a no-op: a repeated request writes no version and no receipt
  file; its receipt says samples 0 and versionBefore == versionAfter.
- retrainAffected: after serving the deletion, the truncated orders are retrained from
  their last live prefix without the deleted samples (reusing every unchanged step) and
  written as one more version; deletions that landed meanwhile are re-applied to them.
ssd (approximate): a plain causal-LM directory, its stored full-data importance, and the
forget set's texts (matched by ID in spec.ssd.forgetData); the dampened model is written
to spec.output. Results are flagged approximate (receipt exact = false).
Both report forget / retain / test figures and a membership score (unlearn_eval.py);
s3t measures them when spec.evaluation names retain or test data (loading the model is
the expensive part; the deletion itself is instant).
"""

import hashlib
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError

from modelops_api.unlearn_request import Deactivation, DeletionReceipt, SampleID, UnlearnResults
from modelops_jobs.algorithms import s3t, s3t_job, s3t_orders, s3t_store, ssd, unlearn_eval
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.data import iter_jsonl, read_records
from modelops_jobs.errors import PermanentError
from modelops_jobs.storage import file_digest

SAMPLE_ID = TypeAdapter(SampleID)


def run(spec: Any, ctx: RunContext) -> AlgorithmResult:
    started = time.monotonic()
    if spec.method == "ssd":
        return run_ssd(spec, ctx, started)
    return run_s3t(spec, ctx, started)


def requested_ids(spec: Any, ctx: RunContext) -> list[str]:
    """The request's IDs (inline or one per line / JSONL 'id'), checked, deduplicated."""
    if spec.sample_ids is not None:
        raw: list[tuple[str, Any]] = [(f"sampleIds[{i}]", x) for i, x in enumerate(spec.sample_ids)]
    else:
        text = ctx.resolve(str(spec.samples_uri)).read_text(encoding="utf-8")
        lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        raw = [(f"{spec.samples_uri}:{n}", _line_id(line, n)) for n, line in lines]
    ids: dict[str, None] = {}
    for where, value in raw:
        ids[_check_id(where, value)] = None
        if len(ids) > spec.max_samples:
            raise PermanentError(f"more than maxSamples={spec.max_samples} IDs", "TooManySamples")
    if not ids:
        raise PermanentError("the request names no sample IDs", "NoSampleIDs")
    return list(ids)


def _line_id(line: str, lineno: int) -> Any:
    if not line.startswith("{"):
        return line
    import json

    try:
        return json.loads(line).get("id")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise PermanentError(
            f"line {lineno}: not a JSON object with 'id'", "InvalidSampleID"
        ) from exc


def _check_id(where: str, value: Any) -> str:
    try:
        return str(SAMPLE_ID.validate_python(value))
    except ValidationError as exc:
        raise PermanentError(
            f"{where}: {value!r} is not a sample ID (letters, digits and ._:/-, at most 128)",
            "InvalidSampleID",
        ) from exc


def ids_digest(hashed: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(sorted(hashed)).encode()).hexdigest()


# -- s3t ----------------------------------------------------------------------------------


def open_store(spec: Any, ctx: RunContext) -> tuple[Path, dict[str, Any]]:
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
    model = s3t.build_model(config, base, ctx.device)
    retrained: dict[int, list[dict[str, Any]]] = {}
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for shard, orders in sorted(todo.items()):
            ctx.reporter.phase(f"s3t-retrain-shard-{shard}")
            retrained[shard] = s3t.train_orders(
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
            orders = [
                {**fresh[tuple(o["order"])], "live": slices}
                if tuple(o["order"]) in fresh and o["live"] < slices
                else o
                for o in entry["orders"]
            ]
            shards.append({"shard": entry["shard"], "orders": orders})
        shards, _ = s3t_store.truncate_shards({"shards": shards}, s3t_store.hits_of(since, index))
        manifest = {
            "parent": latest["version"],
            "reason": "retrain",
            "created": datetime.now(UTC).isoformat(),
            "deleted": latest["deleted"],
            "shards": shards,
        }
        return s3t_store.write_version(store, manifest)


def run_s3t(spec: Any, ctx: RunContext, started: float) -> AlgorithmResult:
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


# -- ssd ----------------------------------------------------------------------------------


def run_ssd(spec: Any, ctx: RunContext, started: float) -> AlgorithmResult:
    from modelops_jobs.modelio import load_causal_lm, load_tokenizer

    if spec.output is None:
        raise PermanentError("method ssd writes a new model: set spec.output", "OutputRequired")
    model_path = ctx.resolve(str(spec.model.uri))
    if s3t_store.is_store(model_path):
        raise PermanentError(
            "this is an S3T store: use method s3t for exact deletion", "UnsupportedModel"
        )
    importance_path = (
        ctx.resolve(str(spec.ssd.importance_uri), must_exist=False)
        if spec.ssd.importance_uri
        else model_path / ssd.IMPORTANCE_FILE
    )
    if not importance_path.is_file():
        raise PermanentError(
            f"no stored full-data importance at {importance_path}", "ImportanceMissing"
        )
    importance = ssd.ImportanceFile(importance_path)
    ids = requested_ids(spec, ctx)
    ref = spec.ssd.forget_data
    data_uri = str(ref.uri) if ref else importance.metadata.get("data_uri")
    if not data_uri:
        raise PermanentError(
            "set spec.ssd.forgetData (the training data holding the IDs)", "ForgetDataRequired"
        )
    id_field = ref.id_field if ref else importance.metadata.get("id_field", "id")
    text_field = ref.text_field if ref else importance.metadata.get("text_field", "text")
    wanted = set(ids)
    texts = {
        str(r[id_field]): str(r.get(text_field, ""))
        for r in iter_jsonl(ctx.resolve(data_uri))
        if str(r.get(id_field)) in wanted
    }
    found = [i for i in ids if i in texts]
    model = load_causal_lm(model_path, spec.model.dtype, spec.model.quantization, ctx.device)
    tokenizer = load_tokenizer(model_path)
    batch_size = int(importance.metadata.get("batch_size", 8))
    max_length = int(importance.metadata.get("max_length", 256))
    ctx.reporter.phase("ssd")
    report = ssd.DampenReport()
    if found:
        batches = ssd.lm_batches(tokenizer, [texts[i] for i in found], batch_size, max_length)
        try:
            report = ssd.selective_synaptic_dampening(
                model,
                batches,
                importance,
                ssd.causal_lm_loss,
                spec.ssd.alpha,
                spec.ssd.lambda_,
                patterns=spec.ssd.layers,
                stream=bool(spec.ssd.layers),
            )
        except KeyError as exc:
            raise PermanentError(str(exc), "ImportanceMismatch") from exc
    seconds = time.monotonic() - started
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    shutil.copyfile(importance_path, ctx.output_dir / ssd.IMPORTANCE_FILE)
    hashed = [s3t_orders.hash_id(i) for i in found]
    receipt = DeletionReceipt(
        method="ssd",
        exact=False,
        samples=len(found),
        hashed_ids_digest=ids_digest(hashed),
        digest_before=_weights_digest(model_path),
        digest_after=_weights_digest(ctx.output_dir),
        time=datetime.now(UTC),
    )
    pad_id = int(tokenizer.pad_token_id or 0)
    forget = [
        s3t.Sample(h, tuple(s3t.tokenize(tokenizer, texts[i], max_length)))
        for h, i in zip(hashed, found, strict=True)
    ]
    eval_config = {
        "task": "causal_lm",
        "label_field": "label",
        "sequence_length": max_length,
        "num_labels": 0,
    }
    ctx.reporter.phase("evaluate")
    model.eval()
    figures = unlearn_eval.measure(
        lambda ids_, mask: model(input_ids=ids_, attention_mask=mask).logits,
        forget,
        unlearn_eval.eval_sets(spec, ctx, eval_config, tokenizer),
        pad_id,
        ctx.device,
    )
    results = {
        "deleted_samples": len(found),
        "unknown_ids": len(ids) - len(found),
        "dampened_parameters": report.dampened,
        "seconds": round(seconds, 4),
        **figures,
    }
    lineage = {
        "receipt": receipt.to_wire(),
        "approximate": True,
        "alpha": spec.ssd.alpha,
        "lambda": spec.ssd.lambda_,
        "passes": report.passes,
        "hashedIds": hashed,
    }
    results = UnlearnResults.model_validate(results).model_dump(exclude_none=True)
    return AlgorithmResult(
        results=results,
        lineage=lineage,
        metrics={"dampenedPerTensor": report.per_tensor, "approximate": True},
    )


def _weights_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.glob("*.safetensors")):
        if path.name != ssd.IMPORTANCE_FILE:
            h.update(file_digest(path).encode())
    return "sha256:" + h.hexdigest()
