"""Training checkpoints of a model + optimizer, sharded under torch.distributed.checkpoint.

One process: exactly the Checkpointer's single `state.pt` ({"model", "optimizer", ...
the loop's own entries, "rng"}), as before. Several processes: the model and optimizer
go through `torch.distributed.checkpoint` (each rank writes its shard; FSDP2 and DDP
alike, and a checkpoint saved by N ranks loads on M) into
`<checkpoint dir>/dcp/step-XXXXXXXX/`; then every rank saves its own small state file
(`state.pt` on rank 0, `state-rankNNNNN.pt` elsewhere: the loop's cursors and counters,
this rank's RNG, and the name of that DCP directory). Older DCP directories are removed
after all ranks saved, so a pod killed mid-save still finds the previous complete one.
A `SyncedCheckpointer` uploads every file it finds changed after each save, so the
retried pod (possibly on another node) pulls the whole set.

On load every rank reads its state file, the ranks compare the DCP step they point at
(all_gather), and they restore model and optimizer from it; when the ranks disagree
(a kill in the middle of a save), or one has nothing, the run starts from scratch.
"""

import shutil
import sys
from typing import Any

import torch

from modelops_jobs.checkpoint import Checkpointer
from modelops_jobs.distributed import World, barrier, gather_objects

DCP_DIR = "dcp"
DCP_KEY = "dcp"


def save(
    checkpointer: Checkpointer,
    world: World,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    step: int,
) -> None:
    """Save model, optimizer and `extra` (collective: every rank calls it)."""
    if not world.distributed:
        checkpointer.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), **extra}
        )
        return
    if checkpointer.directory is None:
        return
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    name = f"step-{step:08d}"
    root = checkpointer.directory / DCP_DIR
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=root / name)
    barrier(world)
    checkpointer.save({**extra, DCP_KEY: name})
    barrier(world)
    if world.local_rank == 0:
        for old in root.iterdir():
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)


def load(
    checkpointer: Checkpointer,
    world: World,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any] | None:
    """The loop's `extra` entries of the last checkpoint, with model and optimizer
    restored in place (and this rank's RNG), or None (collective)."""
    state = checkpointer.load()
    if not world.distributed:
        if state is None:
            return None
        model.load_state_dict(state.pop("model"))
        optimizer.load_state_dict(state.pop("optimizer"))
        return state
    name = state.get(DCP_KEY) if state else None
    names = gather_objects(name, world)
    if name is None or len(set(names)) != 1:
        if any(n is not None for n in names):
            print(
                f"modelops: ranks hold different checkpoints {names}; starting over",
                file=sys.stderr,
            )
        return None
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    assert checkpointer.directory is not None and state is not None
    model_state, optim_state = get_state_dict(model, optimizer)
    loaded: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
    dcp.load(loaded, checkpoint_id=checkpointer.directory / DCP_DIR / name)
    set_state_dict(
        model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"]
    )
    state.pop(DCP_KEY)
    return state
