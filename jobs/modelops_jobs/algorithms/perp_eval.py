"""Perplexity of a causal LM, in memory or with its blocks offloaded, and mixed precision.

Why a module of its own: PERP measures perplexity four times (dense, pruned, unmerged,
retrained), and a model larger than the device has to be measured with its blocks
streamed through the execution device (`offload.streamed_blocks`, accelerate's hooks)
while giving the same number as the all-in-memory path.
"""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from modelops_jobs import distributed, offload
from modelops_jobs.algorithms import pruning


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for a half-precision model (or a quantized base), else nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int,
    amp: torch.dtype | None = None,
    placement: offload.Placement | None = None,
    world: distributed.World | None = None,
) -> float:
    """exp(mean next-token NLL) over non-overlapping windows.

    With a placement, the blocks wait on the offload device and visit the execution
    device one at a time during each batch's forward. With several processes (`world`)
    each rank measures its contiguous part of the windows and the NLL sums are added up
    (float64); every rank returns the same value.
    """
    world = world or distributed.World()
    if world.distributed and windows.shape[0] >= world.world_size:
        windows = windows[distributed.shard_slice(windows.shape[0], world)]
    elif world.distributed:
        windows = windows[:0] if world.rank else windows
    if placement is None:
        device = offload.input_device(model)
        nll, count = _nll(model, windows, batch_size, amp, device)
    else:
        blocks = pruning.find_blocks(model)
        with offload.streamed_blocks(model, blocks, placement):
            nll, count = _nll(model, windows, batch_size, amp, placement.execution)
    if world.distributed:
        nll, count = distributed.sum_over_ranks([nll, count], world)
    return math.exp(nll / count)


def _nll(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int,
    amp: torch.dtype | None,
    device: torch.device,
) -> tuple[float, float]:
    """(summed next-token NLL, token count) over the windows."""
    was_training = model.training
    model.eval()
    nll = 0.0
    count = 0
    with torch.no_grad(), autocast(device, amp):
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start : start + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits.float()
            nll += float(
                F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]),
                    batch[:, 1:].reshape(-1),
                    reduction="sum",
                )
            )
            count += batch[:, 1:].numel()
    model.train(was_training)
    return nll, float(count)
