"""S3T training: cumulative top-down training of the PEFT layer groups, prefix by prefix.

Why a module of its own: s3t_model.py says what the model is, s3t.py what a sample, a
batch and a served version are; this module is how a shard's checkpoints come to exist
(ModelAdaptation strategy s3t, and the retraining of UnlearnRequest).

Training one step of order pi at position i: groups of pi[0..i-1] are loaded from their
own checkpoints and frozen, group i starts fresh (seeded A, B = 0), groups after i are
inactive (A = B = 0: exactly the identity), and group i plus the task head train on the
union of slices pi[0..i]. The step's checkpoint holds group i and the head; nothing is
shared across shards or orders (a fresh optimizer each step, seeds derived from
(seed, shard, prefix) only, the batch order drawn from the step's own generator, no early
stopping).

Checkpoints are content-addressed: a step's key hashes its parent's key, its slice and
the hashed IDs it trained on. Orders sharing a prefix share its checkpoints (the full
budget trains 64 steps for L = 4, not 96), a preempted shard resumes where it stopped,
and retraining after a deletion reuses every step whose data did not change.
"""

import gc
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modelops_jobs import distributed
from modelops_jobs.algorithms.s3t import Sample, collate, sample_scores
from modelops_jobs.algorithms.s3t_model import S3TModel, StepState
from modelops_jobs.storage import file_digest


@dataclass(frozen=True)
class TrainSettings:
    """The inner training loop of one cumulative step."""

    epochs: int
    learning_rate: float
    batch_size: int
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_ratio: float = 0.0
    gradient_accumulation: int = 1


# -- one cumulative step ----------------------------------------------------------------


def step_seed(seed: int, shard: int, prefix: Sequence[int]) -> int:
    """The seed of a step: a function of (seed, shard, prefix) only, never of the data."""
    text = f"s3t-step|{seed}|{shard}|{'-'.join(map(str, prefix))}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")


def train_step(
    model: S3TModel,
    frozen: Sequence[StepState],
    samples: Sequence[Sample],
    settings: TrainSettings,
    seed: int,
    pad_id: int,
    device: torch.device,
    world: distributed.World | None = None,
) -> tuple[StepState, float]:
    """Train group len(frozen) and the head on `samples`; return its checkpoint and last loss.

    On several processes (`world`) DDP averages the trainables' gradients: every rank
    draws the same batches from the step's own generator and trains on its contiguous
    rows of each (`_rank_rows`), with the loss scaled so that the averaged gradient is the
    one process's; the returned state is the same on every rank.
    """
    world = world or distributed.World()
    group = len(frozen)
    torch.manual_seed(seed)
    model.load_prefix(frozen)
    trainable = _start_group(model, group)
    ordered = sorted(samples, key=lambda s: s.hashed_id)
    batches_per_epoch = math.ceil(len(ordered) / settings.batch_size)
    total = max(1, settings.epochs * batches_per_epoch // settings.gradient_accumulation)
    warmup = int(settings.warmup_ratio * total)
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / (total - warmup))
        ),
    )
    order_gen = torch.Generator().manual_seed(seed)
    wrapped = distributed.wrap(model, "ddp", world) if world.distributed else model
    model.train()
    loss_value, micro, accumulation = float("nan"), 0, settings.gradient_accumulation
    for _ in range(settings.epochs):
        for idx in torch.randperm(len(ordered), generator=order_gen).split(settings.batch_size):
            rows = _rank_rows(len(idx), world)
            mine = idx[rows] if rows.stop > rows.start else idx[:1]  # an idle rank: weight 0
            scale = distributed.loss_scale(rows.stop - rows.start, len(idx), world)
            batch = collate([ordered[int(i)] for i in mine], pad_id, device)
            micro += 1
            with distributed.gradient_sync(wrapped, micro % accumulation == 0):
                logits = wrapped(batch["input_ids"], batch["attention_mask"])
                loss = sample_scores(logits, batch)[0].mean()
                (loss * scale / accumulation).backward()
            if micro % accumulation == 0:
                nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach()) * scale / world.world_size
    if world.distributed:
        loss_value = distributed.sum_over_ranks([loss_value], world)[0]
    del wrapped  # its gradient hooks must not outlive this step's trainables
    gc.collect()
    for p in trainable:
        p.requires_grad_(False)
        p.grad = None
    model.eval()
    return model.step_state(group), loss_value


def _start_group(model: S3TModel, group: int) -> list[nn.Parameter]:
    """Group `group` fresh (seeded A, B = 0), the head reset at group 0; its trainables."""
    trainable = list(model.group_params[group].values())
    with torch.no_grad():
        for name, param in model.group_params[group].items():
            if ".lora_A." in name:
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
            else:
                param.zero_()
        if model.head is not None:
            if group == 0:
                model.head.reset_parameters()
            trainable += list(model.head.parameters())
    for p in trainable:
        p.requires_grad_(True)
    return trainable


def _rank_rows(rows: int, world: distributed.World) -> slice:
    """This rank's contiguous rows of a batch of `rows`; empty for a rank beyond them."""
    if rows >= world.world_size:
        return distributed.shard_slice(rows, world)
    return slice(min(world.rank, rows), min(world.rank + 1, rows))


# -- a shard: every prefix of every order -----------------------------------------------


def step_key(parent_key: str, slice_index: int, samples: Sequence[Sample]) -> str:
    """Content address of a step: parent step, slice, and the hashed IDs trained on."""
    h = hashlib.sha256(f"{parent_key}|{slice_index}|".encode())
    for hashed in sorted(s.hashed_id for s in samples):
        h.update(hashed.encode())
    return h.hexdigest()[:24]


def root_key(config_digest: str, shard: int) -> str:
    return hashlib.sha256(f"{config_digest}|shard{shard}".encode()).hexdigest()[:24]


def train_orders(
    model: S3TModel,
    store: Path,
    shard: int,
    orders: Sequence[Sequence[int]],
    slice_samples: Sequence[Sequence[Sample]],
    settings: TrainSettings,
    seed: int,
    config_digest: str,
    pad_id: int,
    device: torch.device,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    world: distributed.World | None = None,
) -> list[dict[str, Any]]:
    """Make sure every step of every order exists on disk; return the orders' step lists.

    Steps already on disk (same key) are reused, never retrained. `should_stop` is
    checked before each new step; the caller raises Preempted when it returns True.
    On several processes every rank trains every step together (data parallel) and
    rank 0 alone writes the step files (the others' records carry no digest).
    """
    world = world or distributed.World()
    steps_dir = store / "shards" / str(shard) / "steps"
    steps_dir.mkdir(parents=True, exist_ok=True)
    prefixes = sorted(
        {tuple(o[: i + 1]) for o in orders for i in range(len(o))}, key=lambda p: (len(p), p)
    )
    keys: dict[tuple[int, ...], str] = {(): root_key(config_digest, shard)}
    states: dict[tuple[int, ...], StepState] = {}
    records: dict[tuple[int, ...], dict[str, Any]] = {}
    for done, prefix in enumerate(prefixes, start=1):
        union = [s for k in prefix for s in slice_samples[k]]
        key = step_key(keys[prefix[:-1]], prefix[-1], slice_samples[prefix[-1]])
        path = steps_dir / f"{key}.safetensors"
        loss = float("nan")
        if path.exists():
            states[prefix] = load_file(path, device=str(device))
        else:
            if should_stop is not None and should_stop():
                raise InterruptedError(f"stop requested before step {prefix} of shard {shard}")
            frozen = [states[prefix[: j + 1]] for j in range(len(prefix) - 1)]
            seed_here = step_seed(seed, shard, prefix)
            states[prefix], loss = train_step(
                model, frozen, union, settings, seed_here, pad_id, device, world
            )
            # one metadata key: safetensors writes several keys in hash order (digests would vary)
            step_info = {"prefix": list(prefix), "shard": shard, "samples": len(union)}
            meta = {"s3t": json.dumps(step_info, sort_keys=True)}
            if world.is_main:
                tmp = path.with_suffix(".tmp")
                save_file({k: v.cpu() for k, v in states[prefix].items()}, str(tmp), metadata=meta)
                os.replace(tmp, path)
        keys[prefix] = key
        digest = file_digest(path) if world.is_main else None
        records[prefix] = {"key": key, "digest": digest, "samples": len(union)}
        if progress is not None:
            progress(done, len(prefixes), loss)
    return [
        {"order": list(o), "steps": [records[tuple(o[: i + 1])] for i in range(len(o))]}
        for o in orders
    ]
