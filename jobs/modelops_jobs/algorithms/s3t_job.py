"""ModelAdaptation strategy `s3t`: train an exactly-unlearnable S3T model store.

Why a module of its own: it turns a spec into a store (s3t_model.py, s3t_train.py and
s3t.py know what a store holds), and it owns how the shards of one store are trained by
several pods.

Multi-pod assembly. The operator runs an Indexed Job with `completions = shards`; each
pod sees `JOB_COMPLETION_INDEX` and trains that one shard (without it, one pod trains
all shards in turn). The store is this run's output location (`<output.uri>/run-NNNN`),
written in place, not through the runner's staging directory, because several pods
fill it:
1. Under the store lock, the first pod writes store.json; later pods check that their
   config digest matches it (a changed spec is StoreMismatch, never a mixed store).
2. Each pod trains its shard's steps into shards/<i>/steps/ (content-addressed, so a
   retried or preempted pod resumes at the first missing step) and writes
   shards/<i>/shard.json last: that file means "shard i is complete".
3. Under the lock, whichever pod finds every shard.json present "seals" the store:
   it writes index.json and version v0001, then switches CURRENT. Only one pod seals;
   a store without CURRENT is not servable yet.
The runner is told `publish=False` and no root manifest.json is written, so a retried
pod never meets OutputExists. The pod that seals returns the version; the others
return `sealed: false`.
"""

import hashlib
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_jobs import distributed
from modelops_jobs.algorithms import s3t, s3t_model, s3t_orders, s3t_store, s3t_train
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.data import read_records
from modelops_jobs.errors import PermanentError, Preempted

SHARD_ENV = "JOB_COMPLETION_INDEX"
DATA_LOCATION = ("data_uri", "data_max_samples")


def store_path_for(spec: Any, ctx: RunContext) -> Path:
    """This run's store: the runner's output location for the run (<output>/run-NNNN)."""
    from modelops_api import kind_info
    from modelops_jobs.storage import output_location

    run = ctx.run
    uri = output_location(kind_info("ModelAdaptation"), spec, {"run": run})
    s3t_store.refuse_object_store(str(uri), "spec.output.uri")
    return ctx.resolve(str(uri), must_exist=False)


def build_samples(
    records: list[dict[str, Any]], config: dict[str, Any], tokenizer: Any
) -> dict[str, tuple[s3t.Sample, int, int]]:
    """hashed ID -> (sample, shard, slice) for every record; PermanentError on bad data."""
    out: dict[str, tuple[s3t.Sample, int, int]] = {}
    classify = config["task"] == "classification"
    for i, record in enumerate(records):
        for field in (config["id_field"], config["text_field"]) + (
            (config["label_field"],) if classify else ()
        ):
            if field not in record:
                raise PermanentError(f"training record {i} has no field {field!r}", "InvalidData")
        sample_id = str(record[config["id_field"]])
        hashed = s3t_orders.hash_id(sample_id)
        if hashed in out:
            raise PermanentError(f"sample ID {sample_id!r} appears twice", "DuplicateSampleID")
        label = -1
        if classify:
            label = record[config["label_field"]]
            if not isinstance(label, int) or not 0 <= label < config["num_labels"]:
                raise PermanentError(
                    f"record {i}: label {label!r} is not an integer in [0, {config['num_labels']})",
                    "InvalidData",
                )
        ids = s3t.tokenize(tokenizer, str(record[config["text_field"]]), config["sequence_length"])
        shard, slice_index = s3t_orders.assign(
            sample_id, config["shards"], config["slices"], config["seed"]
        )
        out[hashed] = (s3t.Sample(hashed, tuple(ids), label), shard, slice_index)
    return out


def slices_of(
    samples: dict[str, tuple[s3t.Sample, int, int]],
    shard: int,
    slices: int,
    excluded: "set[str] | frozenset[str]" = frozenset(),
) -> list[list[s3t.Sample]]:  # type: ignore[assignment]
    """A shard's samples per slice, without `excluded` hashed IDs."""
    out: list[list[s3t.Sample]] = [[] for _ in range(slices)]
    for hashed, (sample, s, k) in samples.items():
        if s == shard and hashed not in excluded:
            out[k].append(sample)
    return out


def train_settings(config: dict[str, Any]) -> s3t_train.TrainSettings:
    return s3t_train.TrainSettings(**config["settings"])


def store_config(
    spec: Any, groups: list[list[int]], pad_id: int, orders: list[tuple[int, ...]]
) -> dict[str, Any]:
    """The store.json body; its digest roots every step key."""
    s3 = spec.s3t
    opt = spec.optimization
    settings = s3t_train.TrainSettings(
        epochs=s3.epochs_per_step,
        learning_rate=opt.learning_rate,
        batch_size=opt.batch_size,
        weight_decay=opt.weight_decay,
        max_grad_norm=opt.max_grad_norm,
        warmup_ratio=opt.warmup_ratio,
        gradient_accumulation=opt.gradient_accumulation,
    )
    config = {
        "format": s3t_store.STORE_FORMAT,
        "shards": s3.shards,
        "slices": s3.slices,
        "orders": [list(o) for o in orders],
        "order_selection": s3.order_selection,
        "task": s3.task,
        "num_labels": s3.num_labels,
        "label_field": s3.label_field,
        "text_field": spec.data.text_field,
        "id_field": spec.data.id_field,
        "data_uri": str(spec.data.uri),
        "data_max_samples": spec.data.max_samples,
        "base_uri": str(spec.model.uri),
        "base_dtype": spec.model.dtype,
        "base_quantization": spec.model.quantization,
        "lora": {
            "rank": s3.lora.rank,
            "alpha": s3.lora.alpha,
            "dropout": s3.lora.dropout,
            "use_rslora": s3.lora.use_rslora,
            "target_modules": list(s3.lora.target_modules),
        },
        "settings": asdict(settings),
        "sequence_length": opt.sequence_length,
        "pad_id": pad_id,
        "seed": spec.seed,
        "groups": groups,
    }
    # Where the data lives is not part of the training config: which samples each step
    # saw is in its key. So retraining from scratch on a copy without a sample (another
    # file) reproduces the same step keys for the steps that never saw it.
    hashed = {k: v for k, v in config.items() if k not in DATA_LOCATION}
    body = json.dumps(hashed, sort_keys=True).encode()
    return {**config, "config_digest": hashlib.sha256(body).hexdigest()[:24]}


def shards_to_train(shards: int) -> list[int]:
    """[JOB_COMPLETION_INDEX] in an Indexed Job pod, else every shard."""
    raw = os.environ.get(SHARD_ENV)
    if raw is None or raw == "":
        return list(range(shards))
    if not raw.isdigit() or int(raw) >= shards:
        raise PermanentError(
            f"{SHARD_ENV}={raw!r} is not a shard index below {shards}", "InvalidShardIndex"
        )
    return [int(raw)]


def ensure_config(store: Path, config: dict[str, Any]) -> None:
    """Write store.json, or check that the store was started with the same config."""
    with s3t_store.store_lock(store):
        if s3t_store.is_store(store):
            existing = s3t_store.read_json(store / "store.json")
            same = [existing.get(k) == config[k] for k in ("config_digest", *DATA_LOCATION)]
            if not all(same):
                raise PermanentError(
                    f"{store} was started with another S3T config", "StoreMismatch"
                )
        else:
            s3t_store.write_json(store / "store.json", config)


def seal(
    store: Path, config: dict[str, Any], samples: dict[str, tuple[s3t.Sample, int, int]]
) -> str | None:
    """Write index.json and v0001 once every shard is complete; the version, or None."""
    with s3t_store.store_lock(store):
        current = s3t_store.current_version(store)
        if current is not None:
            return current
        shard_files = [store / "shards" / str(s) / "shard.json" for s in range(config["shards"])]
        if not all(p.exists() for p in shard_files):
            return None
        entries = {h: [shard, k] for h, (_, shard, k) in sorted(samples.items())}
        s3t_store.write_json(store / "index.json", {"hash": "sha256", "entries": entries})
        shards = []
        for s, path in enumerate(shard_files):
            body = s3t_store.read_json(path)
            orders = [{**o, "live": len(o["steps"])} for o in body["orders"]]
            shards.append({"shard": s, "orders": orders})
        manifest = {
            "parent": None,
            "reason": "train",
            "created": datetime.now(UTC).isoformat(),
            "deleted": [],
            "shards": shards,
        }
        return s3t_store.write_version(store, manifest)


def train_shard(
    model: s3t_model.S3TModel,
    store: Path,
    shard: int,
    config: dict[str, Any],
    samples: dict[str, tuple[s3t.Sample, int, int]],
    ctx: RunContext,
) -> bool:
    """Train one shard into the store (skipped when complete); True when it trained."""
    marker = store / "shards" / str(shard) / "shard.json"
    if (
        marker.exists()
        and s3t_store.read_json(marker).get("config_digest") == config["config_digest"]
    ):
        return False
    ctx.reporter.phase(f"s3t-shard-{shard}")

    def progress(done: int, total: int, loss: float) -> None:
        ctx.reporter.step(done, total, loss=None if loss != loss else loss)

    try:
        orders = s3t_train.train_orders(
            model,
            store,
            shard,
            [tuple(o) for o in config["orders"]],
            slices_of(samples, shard, config["slices"]),
            train_settings(config),
            config["seed"],
            config["config_digest"],
            config["pad_id"],
            ctx.device,
            progress=progress,
            should_stop=lambda: distributed.any_rank(ctx.checkpointer.should_stop(), ctx.world),
            world=ctx.world,
        )
    except InterruptedError as exc:
        raise Preempted(f"shard {shard}: {exc}; finished steps are kept") from exc
    if ctx.world.is_main:
        s3t_store.write_json(
            marker, {"shard": shard, "config_digest": config["config_digest"], "orders": orders}
        )
    distributed.barrier(ctx.world)  # every rank sees the marker before the next check
    return True


def run(spec: ModelAdaptationSpec, ctx: RunContext) -> AlgorithmResult:
    """Train this pod's shards into the run's store and seal it when all are present."""
    from modelops_jobs.modelio import load_tokenizer

    s3 = spec.s3t
    if spec.data is None:
        raise PermanentError("strategy s3t needs spec.data (the training set)", "DataRequired")
    if s3.lora.use_dora:
        raise PermanentError(
            "S3T needs B = 0 to mean 'inactive'; DoRA breaks that", "UnsupportedForS3T"
        )
    try:
        orders = s3t_orders.select_orders(
            s3.order_selection, s3.slices, s3.orders, s3.deletion_probabilities
        )
    except ValueError as exc:
        raise PermanentError(str(exc), "InvalidSpec") from exc
    store = store_path_for(spec, ctx)
    base_path = ctx.resolve(str(spec.model.uri))
    tokenizer = load_tokenizer(base_path)
    records = read_records(ctx.resolve(str(spec.data.uri)), spec.data.max_samples)
    ctx.reporter.phase("s3t-load")
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        probe = {
            "base_dtype": spec.model.dtype,
            "base_quantization": spec.model.quantization,
            "task": s3.task,
            "num_labels": s3.num_labels,
            "slices": s3.slices,
        }
        try:
            model = s3t_model.build_model(
                {**probe, "lora": _lora_dict(s3.lora)}, base_path, ctx.device
            )
        except ValueError as exc:
            raise PermanentError(str(exc), "UnsupportedModel") from exc
        config = store_config(spec, model.groups, int(tokenizer.pad_token_id or 0), orders)
        samples = build_samples(records, config, tokenizer)
        if not samples:
            raise PermanentError("the training data is empty", "InvalidData")
        _refuse_fsdp(spec)
        if ctx.world.is_main:
            ensure_config(store, config)
        distributed.barrier(ctx.world)
        trained = [
            s
            for s in shards_to_train(s3.shards)
            if train_shard(model, store, s, config, samples, ctx)
        ]
    finally:
        torch.use_deterministic_algorithms(previous)
    version = seal(store, config, samples) if ctx.world.is_main else None
    if ctx.output_dir.name.endswith(".partial"):
        try:
            ctx.output_dir.rmdir()  # the runner's unused staging directory
        except OSError:
            pass
    sizes = [[len(x) for x in slices_of(samples, s, s3.slices)] for s in range(s3.shards)]
    results = {
        "strategy": "s3t",
        "store": str(store),
        "version": version,
        "sealed": version is not None,
        "shardsTrained": trained,
        "samples": len(samples),
        "orders": len(orders),
    }
    lineage = {
        "base": str(spec.model.uri),
        "data": str(spec.data.uri),
        "configDigest": config["config_digest"],
    }
    return AlgorithmResult(
        results=results,
        lineage=lineage,
        metrics={"sliceSizes": sizes},
        version=version,
        publish=False,
    )


def _refuse_fsdp(spec: Any) -> None:
    """S3T trains one small LoRA group and a head per step: DDP, never FSDP2."""
    if spec.distribution.strategy == "fsdp":
        raise PermanentError(
            "spec.distribution.strategy fsdp is not supported by strategy s3t: each step "
            "trains one LoRA group and the head, replicated with DDP (use ddp or auto)",
            "Unsupported",
        )


def _lora_dict(lora: Any) -> dict[str, Any]:
    return {
        "rank": lora.rank,
        "alpha": lora.alpha,
        "dropout": lora.dropout,
        "use_rslora": lora.use_rslora,
        "target_modules": list(lora.target_modules),
    }
