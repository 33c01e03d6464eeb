"""PERP's pruned-state file: what a retried pod reuses instead of pruning again.

Why a module of its own: pruning a large model is the costly, non-resumable part of a
PERP run (a stop while pruning prunes again), so once it is done the pruned weights,
the masks and the dense/pruned perplexities go to `pruned.pt` in the checkpoint
directory, keyed by a digest of the spec (a changed spec never reuses them).
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from modelops_api.prune_retrain import PruneRetrainSpec
from modelops_jobs.algorithms import pruning
from modelops_jobs.context import RunContext

PRUNED_FILE = "pruned.pt"


def spec_digest(spec: PruneRetrainSpec) -> str:
    body = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def pruned_path(ctx: RunContext) -> Path | None:
    directory = ctx.checkpointer.directory
    return None if directory is None else directory / PRUNED_FILE


def save_pruned(
    ctx: RunContext,
    digest: str,
    layers: list[pruning.PrunableLayer],
    masks: dict[str, torch.Tensor],
    full_precision: dict[str, torch.Tensor] | None,
    dense_ppl: float | None,
    pruned_ppl: float | None,
) -> None:
    path = pruned_path(ctx)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {lay.name: pruning.read_matrix(lay.module).detach().cpu().clone() for lay in layers}
    weights.update(full_precision or {})
    body = {
        "digest": digest,
        "weights": weights,
        "masks": {name: mask.cpu() for name, mask in masks.items()},
        "dense_perplexity": dense_ppl,
        "pruned_perplexity": pruned_ppl,
    }
    tmp = path.with_name(f".{PRUNED_FILE}.tmp")
    torch.save(body, tmp)
    os.replace(tmp, path)


def load_pruned(ctx: RunContext, digest: str) -> dict[str, Any] | None:
    path = pruned_path(ctx)
    if path is None or not path.exists():
        return None
    body: dict[str, Any] = torch.load(path, weights_only=False)
    return body if body.get("digest") == digest else None


def remove_pruned(ctx: RunContext) -> None:
    path = pruned_path(ctx)
    if path is not None and path.exists():
        path.unlink()
