"""PERP over several processes: which rows a rank trains on, the wrapped model, one pruning.

Why a module of its own: PERP's retraining is data parallel (DDP over the small
trainable subset; the frozen pruned base is replicated, never reduced), and three
things must hold on every rank for the result to equal one process's:
- the same pruned base and masks: every rank prunes (it needs the calibration
  activations anyway), then rank 0's pruned matrices and masks are broadcast, so a
  non-deterministic GPU kernel can never leave two ranks with different masks;
- the same global batch: every rank draws the same seeded sample order and trains on
  its contiguous part of each (micro-)batch, with the loss scaled so the ranks' averaged
  gradient is the gradient of the mean over the whole batch (`distributed.loss_scale`);
- the same stop step: a SIGTERM to any rank stops every rank at the same step boundary
  (`distributed.any_rank`), and each rank saves its own checkpoint state.
FSDP2 is refused for PERP: what PERP trains is small by design, and the masked
adapters' merge needs the whole frozen matrix on the rank that merges.
"""

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from modelops_api.prune_retrain import PruneRetrainSpec
from modelops_jobs import distributed
from modelops_jobs.algorithms import pruning
from modelops_jobs.distributed import World
from modelops_jobs.errors import PermanentError


def batch_rows(batch_size: int, world: World, field: str) -> slice:
    """This rank's rows of every global (micro-)batch; PermanentError naming `field`."""
    try:
        return distributed.shard_slice(batch_size, world)
    except ValueError as exc:
        raise PermanentError(
            f"{field} {batch_size} is smaller than the {world.world_size} processes "
            "it is split over (each process needs at least one row)",
            "InvalidSpec",
        ) from exc


def wrap(model: nn.Module, spec: PruneRetrainSpec, world: World) -> nn.Module:
    """DDP over the trainable subset on several processes, the model itself on one."""
    strategy = distributed.resolve_strategy(spec.distribution.strategy, model, world)
    if strategy == "fsdp":
        raise PermanentError(
            "spec.distribution.strategy fsdp is not supported by PruneRetrain: PERP retrains "
            "a small subset with DDP (use ddp or auto)",
            "Unsupported",
        )
    return distributed.wrap(model, strategy, world)


def _broadcast(tensor: torch.Tensor, world: World) -> None:
    """Rank 0's values into `tensor` on every rank (through the backend's device)."""
    on_device = tensor.to(world.device)
    dist.broadcast(on_device, src=0)
    if on_device is not tensor:
        tensor.copy_(on_device.to(tensor.device))


def agree_on_pruning(
    layers: list[pruning.PrunableLayer],
    masks: dict[str, torch.Tensor],
    full_precision: dict[str, torch.Tensor] | None,
    world: World,
) -> None:
    """Every rank ends with rank 0's pruned matrices and masks (no-op on one process)."""
    if not world.distributed:
        return
    for name in sorted(masks):
        _broadcast(masks[name], world)
    for _name, tensor in sorted((full_precision or {}).items()):
        _broadcast(tensor, world)
    for layer in layers:
        if full_precision is not None and layer.name in full_precision:
            pruning.write_matrix(layer.module, full_precision[layer.name])
        else:
            weight = layer.module.weight
            assert isinstance(weight, torch.Tensor)
            _broadcast(weight.data, world)


def global_mean(value: float, local: int, total: int, world: World) -> float:
    """The mean over the global batch of a per-rank mean over `local` of `total` rows."""
    if not world.distributed:
        return value
    return distributed.sum_over_ranks([value * local / total], world)[0]


def sum_pair(a: float, b: float, world: World) -> tuple[float, float]:
    """(Σ a, Σ b) over ranks (a and b as they are on one process)."""
    if not world.distributed:
        return a, b
    out: Any = distributed.sum_over_ranks([a, b], world)
    return float(out[0]), float(out[1])
