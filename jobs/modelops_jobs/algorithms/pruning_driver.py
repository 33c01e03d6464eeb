"""The pruning driver: block-by-block calibration and pruning, offloaded or rank-shared.

Why a module of its own: pruning.py says what is pruned and how one matrix is scored and
masked; this module walks the model — it captures block 0's calibration inputs, runs
each block on the outputs of the already-pruned blocks before it (Wanda / SparseGPT
statistics from forward hooks), prunes each block's layers, and handles the two ways a
run is spread out: blocks offloaded one at a time to the execution device
(`PruneConfig.placement`), and a block's layers pruned round-robin by rank with each
result broadcast from its owner (`PruneConfig.world`). Embeddings and the head, when
pruned, use magnitude whatever the criterion.
"""

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modelops_jobs import distributed, offload
from modelops_jobs.algorithms.pruning import (
    PrunableLayer,
    PruneConfig,
    check_pattern,
    find_blocks,
    magnitude_scores,
    read_matrix,
    select_keep_mask,
    wanda_scores,
    write_matrix,
)
from modelops_jobs.algorithms.sparsegpt import sparsegpt_prune
from modelops_jobs.errors import PermanentError, Preempted


class _Captured(Exception):
    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("captured")
        self.args_ = args
        self.kwargs_ = kwargs


# -- block-by-block calibration -----------------------------------------------------


def capture_block_inputs(
    model: nn.Module, windows: torch.Tensor, batch_size: int
) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(hidden states, keyword args) entering block 0, one pair per calibration mini-batch."""
    blocks = find_blocks(model)
    device = offload.input_device(model)
    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def stop(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        raise _Captured(args, kwargs)

    handle = blocks[0].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start : start + batch_size].to(device)
            try:
                with torch.no_grad():
                    model(input_ids=batch, use_cache=False)
            except _Captured as got:
                kwargs = dict(got.kwargs_)
                hidden = got.args_[0] if got.args_ else kwargs.pop("hidden_states")
                kwargs.pop("past_key_values", None)
                kwargs.pop("use_cache", None)
                captured.append((hidden.detach(), kwargs))
    finally:
        handle.remove()
    return captured


def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """A block's output hidden states (blocks return a tensor or a tuple headed by one)."""
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _collect_statistics(
    block: nn.Module,
    layers: list[PrunableLayer],
    inputs: list[tuple[torch.Tensor, dict[str, Any]]],
    hessian: bool,
) -> dict[str, torch.Tensor]:
    """Per layer: mean x_j² (Wanda) or 2/N Σ x xᵀ (SparseGPT) over the block's calibration tokens."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...], __: Any) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            stat = x.t() @ x if hessian else (x**2).sum(dim=0)
            sums[name] = sums[name] + stat if name in sums else stat
            counts[name] = counts.get(name, 0) + x.shape[0]

        return hook

    handles = [layer.module.register_forward_hook(hook_for(layer.name)) for layer in layers]
    try:
        with torch.no_grad():
            for hidden, kwargs in inputs:
                run_block(block, hidden, kwargs)
    finally:
        for handle in handles:
            handle.remove()
    scale = 2.0 if hessian else 1.0
    return {name: scale * sums[name] / counts[name] for name in sums}


def prune_layer(
    layer: PrunableLayer, config: PruneConfig, statistic: torch.Tensor | None
) -> torch.Tensor:
    """Prune one layer in place with the configured criterion; return its keep mask (out, in)."""
    source = (config.full_precision or {}).get(layer.name)
    device = layer.module.weight.device
    weight = (read_matrix(layer.module) if source is None else source.to(device)).float()
    if config.criterion == "sparsegpt" and statistic is not None:
        pruned, keep = sparsegpt_prune(
            weight,
            statistic,
            config.sparsity,
            config.nm,
            config.sparsegpt_block_size,
            config.sparsegpt_damping,
        )
    else:
        if config.criterion == "wanda" and statistic is not None:
            scores = wanda_scores(weight, statistic)
        else:
            scores = magnitude_scores(weight)
        keep = select_keep_mask(scores, config.sparsity, config.nm)
        pruned = weight * keep
    if source is not None and config.full_precision is not None:
        config.full_precision[layer.name] = pruned.to(source.device, source.dtype)
    write_matrix(layer.module, pruned)
    return keep


def prune_model(
    model: nn.Module,
    layers: list[PrunableLayer],
    config: PruneConfig,
    calibration: torch.Tensor | None = None,
    on_block: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune every layer; Wanda/SparseGPT calibrate block by block on pruned-model inputs.

    Returns {layer name: keep mask (out, in), bool}. `on_block(done, total)` reports progress.
    """
    check_pattern(layers, config.nm)
    masks: dict[str, torch.Tensor] = {}
    calibrated = config.criterion in ("wanda", "sparsegpt")
    if calibrated and calibration is None:
        raise PermanentError(f"{config.criterion} needs calibration data", "DataMissing")
    blocks = find_blocks(model)
    placement = config.placement
    scope = offload.offloaded(model, blocks, placement) if placement else contextlib.nullcontext()
    with scope:
        inputs = capture_block_inputs(model, calibration, config.batch_size) if calibrated else []
        for index, block in enumerate(blocks):
            with offload.block_on(block, placement) if placement else contextlib.nullcontext():
                inputs = _prune_block(block, index, layers, config, inputs, masks)
            if on_block is not None:
                on_block(index + 1, len(blocks))
            if config.should_stop():
                raise Preempted(
                    "stopped while pruning; the retried run prunes again from the start"
                )
        outside = PruneConfig(
            criterion="magnitude",
            sparsity=config.sparsity,
            nm=config.nm,
            full_precision=config.full_precision,
        )
        for layer in layers:
            if layer.block_index < 0:
                masks[layer.name] = _offloaded_mask(prune_layer(layer, outside, None), placement)
    return masks


def _prune_block(
    block: nn.Module,
    index: int,
    layers: list[PrunableLayer],
    config: PruneConfig,
    inputs: list[tuple[torch.Tensor, dict[str, Any]]],
    masks: dict[str, torch.Tensor],
) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """Calibrate and prune one block (masks filled in); return the next block's inputs."""
    block_layers = [layer for layer in layers if layer.block_index == index]
    stats: dict[str, torch.Tensor] = {}
    if inputs:
        stats = _collect_statistics(
            block, block_layers, inputs, hessian=config.criterion == "sparsegpt"
        )
    world = config.world if config.full_precision is None else None
    for position, layer in enumerate(block_layers):
        if world is None or position % world.world_size == world.rank:
            keep = prune_layer(layer, config, stats.get(layer.name))
        else:  # another rank prunes this layer; its mask and weights arrive below
            shape = read_matrix(layer.module).shape
            keep = torch.empty(shape, dtype=torch.bool, device=layer.module.weight.device)
        masks[layer.name] = keep
    if world is not None:
        _share_block(block_layers, masks, world)
    for layer in block_layers:
        masks[layer.name] = _offloaded_mask(masks[layer.name], config.placement)
    if not inputs:
        return inputs
    with torch.no_grad():
        return [(run_block(block, h, kw), kw) for h, kw in inputs]


def _share_block(
    layers: list[PrunableLayer], masks: dict[str, torch.Tensor], world: distributed.World
) -> None:
    """Each layer's pruned weight and mask, from the rank that pruned it, onto every rank."""
    import torch.distributed as dist

    for position, layer in enumerate(layers):
        owner = position % world.world_size
        weight = layer.module.weight
        assert isinstance(weight, torch.Tensor)
        for tensor in (weight.data, masks[layer.name]):
            moved = tensor.to(world.device)
            dist.broadcast(moved, src=owner)
            if moved is not tensor:
                tensor.copy_(moved)


def _offloaded_mask(keep: torch.Tensor, placement: offload.Placement | None) -> torch.Tensor:
    """A keep mask lives where its weights wait: the offload device when offloaded."""
    return keep if placement is None else keep.to(placement.offload)
