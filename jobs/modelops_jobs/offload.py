"""Models larger than one device: blocks wait on the CPU, one block at a time computes.

Why a module of its own: pruning (Wanda/SparseGPT calibration) and perplexity both have
to work on a causal LM whose weights do not fit the GPU. Both use the structure that
SparseGPT and Wanda use: everything outside the transformer blocks (embeddings, final
norm, head; small) sits on the *execution device*, the blocks sit on the *offload
device* (the CPU), and each block visits the execution device while it computes. The
activations flow block to block on the execution device.

Two ways of visiting, one per caller:
- pruning moves blocks explicitly (`block_on`): block i is moved once, calibrated,
  pruned, run to produce block i+1's inputs, and moved back;
- evaluation runs the model's own forward and lets accelerate's
  `cpu_offload_with_hook` move each block to the execution device when its forward
  starts; the hooks are chained (block i's hook offloads block i-1, block 0's offloads
  the last block), so at most one block is resident at a time (`streamed_blocks`).

On a machine without a GPU the execution device is the CPU too: the same code paths
run (the tests compare them with the all-in-memory path), only the copies are no-ops.
A 4/8-bit (bitsandbytes) base is never offloaded: its layers cannot move to the CPU,
and at a quarter of the size it is placed whole on the local rank's device instead.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modelops_jobs.errors import PermanentError

FIT_SHARE = 0.8
"""Share of a device's memory the weights may take before blocks are offloaded (the
rest is for activations, calibration statistics and the CUDA context)."""


@dataclass(frozen=True)
class Placement:
    """Where blocks compute (`execution`) and where they wait in between (`offload`)."""

    execution: torch.device
    offload: torch.device = field(default_factory=lambda: torch.device("cpu"))


def input_device(model: Any) -> torch.device:
    """Where a causal LM's input ids go: its input embeddings' device."""
    weight: torch.Tensor = model.get_input_embeddings().weight
    return weight.device


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (tied tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def device_memory(device: torch.device) -> int | None:
    """Total memory of a CUDA device; None for the CPU (no limit applies)."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def choose_placement(
    weight_bytes: int, execution: torch.device, capacity: int | None
) -> Placement | None:
    """A Placement when the weights exceed FIT_SHARE of the execution device, else None.

    None means "load the model onto `execution` whole" (today's path); a CPU execution
    device (capacity None) never offloads.
    """
    if capacity is None or weight_bytes <= FIT_SHARE * capacity:
        return None
    return Placement(execution=execution)


def _inside_blocks(blocks: nn.ModuleList) -> set[int]:
    return {id(t) for t in [*blocks.parameters(), *blocks.buffers()]}


def place_outside_blocks(model: nn.Module, blocks: nn.ModuleList, device: torch.device) -> None:
    """Move every parameter and buffer that is not inside `blocks` onto `device`, in place.

    Parameters keep their identity (a head tied to the embeddings stays tied).
    """
    inside = _inside_blocks(blocks)
    with torch.no_grad():
        for module in model.modules():
            for param in module.parameters(recurse=False):
                if id(param) not in inside and param.device != device:
                    param.data = param.data.to(device)
            for name, buffer in list(module.named_buffers(recurse=False)):
                if id(buffer) not in inside and buffer.device != device:
                    module._buffers[name] = buffer.to(device)


def refuse_quantized(model: nn.Module) -> None:
    """PermanentError(Unsupported) for a bitsandbytes model: it cannot be offloaded."""
    kinds = {type(p).__name__ for p in model.parameters()}
    if kinds & {"Params4bit", "Int8Params"}:
        raise PermanentError(
            "a 4/8-bit base is placed whole on the local rank's device, never offloaded",
            "Unsupported",
        )


@contextmanager
def block_on(block: nn.Module, placement: Placement) -> Iterator[nn.Module]:
    """`block` on the execution device for the body, back on the offload device after."""
    block.to(placement.execution)
    try:
        yield block
    finally:
        block.to(placement.offload)


@contextmanager
def offloaded(model: nn.Module, blocks: nn.ModuleList, placement: Placement) -> Iterator[None]:
    """Blocks on the offload device, the rest on the execution device; all back after."""
    refuse_quantized(model)
    blocks.to(placement.offload)
    place_outside_blocks(model, blocks, placement.execution)
    try:
        yield
    finally:
        place_outside_blocks(model, blocks, placement.offload)


@contextmanager
def streamed_blocks(
    model: nn.Module, blocks: nn.ModuleList, placement: Placement
) -> Iterator[list[object]]:
    """The model's forward with each block moved to the execution device as it starts.

    accelerate's `cpu_offload_with_hook` per block, chained in a ring so the hook of a
    block offloads the block that ran before it; removed (and every block back on the
    offload device) on exit. Yields the hooks (tests count their offloads).
    """
    from accelerate import cpu_offload_with_hook
    from accelerate.hooks import UserCpuOffloadHook

    if placement.offload.type != "cpu":
        raise ValueError("accelerate's CPU offload hooks offload to the CPU only")
    hooks: list[UserCpuOffloadHook] = []
    with offloaded(model, blocks, placement):
        try:
            for block in blocks:
                previous = hooks[-1] if hooks else None
                hooks.append(cpu_offload_with_hook(block, placement.execution, previous)[1])
            if len(hooks) > 1:
                hooks[0].hook.prev_module_hook = hooks[-1]
            yield list(hooks)
        finally:
            for hook in hooks:
                hook.offload()
                hook.remove()
