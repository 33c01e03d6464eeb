"""CPT's checkpoints: the resumable state of a run (saved every `checkpointEvery` steps
and on SIGTERM, sharded under torch.distributed.checkpoint on several ranks) and the
pre-anneal checkpoint an infinite schedule leaves for the next run to continue from.

Separate from `cpt_job` so what survives a retry, and in what form, reads in one place.
"""

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelops_jobs import dist_checkpoint, distributed
from modelops_jobs.context import RunContext
from modelops_jobs.distributed import World

PRE_ANNEAL_DIR = "pre_anneal"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class TrainState:
    """Everything a resumed run needs besides the model and optimizer weights."""

    step: int = 0
    tokens: int = 0
    replay_tokens: int = 0
    before: dict[str, float] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)
    train_loss: list[list[float]] = field(default_factory=list)


def save_pre_anneal(
    model: Any, tokenizer: Any, optimizer: Any, directory: Path, world: World | None = None
) -> None:
    """Write the un-annealed model, tokenizer and AdamW state atomically (rank 0 writes
    the full states; gathering them is a collective under FSDP2)."""
    world = world or World()
    weights = distributed.full_model_state(model, world) if world.distributed else None
    moments = distributed.full_optimizer_state(model, optimizer, world)
    if not world.is_main:
        return
    partial = directory.with_name(directory.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    model.save_pretrained(partial, state_dict=weights)
    tokenizer.save_pretrained(partial)
    torch.save(moments, partial / OPTIMIZER_FILE)
    if directory.exists():
        shutil.rmtree(directory)
    partial.rename(directory)


def pre_anneal_staging(ctx: RunContext) -> Path:
    """Where the pre-anneal checkpoint is written during the run (survives a retry)."""
    base = ctx.checkpointer.directory or ctx.output_dir
    return base / PRE_ANNEAL_DIR


def save_checkpoint(
    ctx: RunContext, model: Any, optimizer: Any, mixer: Any, state: TrainState
) -> None:
    """Model and optimizer (sharded under torch.distributed.checkpoint on several
    ranks), replay cursors and counters (collective)."""
    extra = {"mixer": mixer.state_dict(), "train": state.__dict__}
    dist_checkpoint.save(ctx.checkpointer, ctx.world, model, optimizer, extra, state.step)
