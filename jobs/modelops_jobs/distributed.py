"""The distributed runtime of a training loop: who am I, which strategy, how to wrap, which rows.

A pod started by `modelops_jobs.launch` runs one worker per device under torchrun
(RANK, WORLD_SIZE, LOCAL_RANK in the environment); a pod with one process runs the
runner in-process and every function here is then a no-op that returns its input.

API (what the training loops use):
- `init_from_env() -> World`: joins the process group (nccl on CUDA with device
  cuda:LOCAL_RANK, gloo on CPU) when WORLD_SIZE > 1; `World` carries rank, world size,
  local rank and device. `shutdown(world)` leaves it.
- `resolve_strategy(requested, model, world) -> "single" | "ddp" | "fsdp"`: `auto`
  measures the bytes of parameters + gradients + AdamW state of the trainable part (and
  the frozen weights) against the device's total memory (`choose_strategy`, pure); on
  CPU auto is ddp.
- `wrap(model, strategy, world)`: DDP (frozen parameters are neither broadcast nor
  reduced), or FSDP2 `fully_shard` on each transformer block then on the root. The
  returned module is the one to call forward on in training; the unwrapped `model` is
  the one to evaluate (DDP) and is the same object under FSDP2.
- `gradient_sync(wrapped, sync)`: a context that skips the gradient all-reduce on
  micro-batches before the last one of a step.
- Rows: `shard_slice(rows, world)` is this rank's contiguous part of a global
  (micro-)batch; `loss_scale(local, total, world)` multiplies a rank's mean loss over
  its `local` counted items so that the average of the ranks' gradients (what DDP and
  FSDP compute) equals the gradient of the mean over all `total` items: the same global
  batch and the same result as one process.
- Agreement: `any_rank(flag, world)` (an all-reduce MAX of a flag: SIGTERM to any rank
  stops every rank at the same step boundary), `sum_over_ranks`, `gather_objects`,
  `barrier`.
- Saving: `full_model_state(model, world)` gathers a full CPU state dict (a collective
  under FSDP2; every rank calls it, rank 0 writes); `full_optimizer_state` /
  `load_full_optimizer_state` convert an FSDP2 optimizer's state to and from the
  single-process, index-keyed form (`optimizer.state_dict()`).
Sharded checkpoints (torch.distributed.checkpoint) are in `dist_checkpoint`.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist

from modelops_jobs.errors import PermanentError

Strategy = Literal["single", "ddp", "fsdp"]
ADAMW_STATE_BYTES = 8
"""exp_avg and exp_avg_sq in float32 per trainable element."""
MEMORY_HEADROOM = 0.8
"""Share of a device's memory the weights, gradients and optimizer state may take
(activations and the allocator need the rest)."""


@dataclass(frozen=True)
class World:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"rank": self.rank, "worldSize": self.world_size, "device": str(self.device)}


def _int(env: dict[str, str] | os._Environ[str], name: str, default: int) -> int:
    return int(env.get(name) or default)


def init_from_env(env: dict[str, str] | None = None) -> World:
    """The World of this process; joins the process group when WORLD_SIZE > 1."""
    env = dict(os.environ) if env is None else env
    world_size = _int(env, "WORLD_SIZE", 1)
    rank, local_rank = _int(env, "RANK", 0), _int(env, "LOCAL_RANK", 0)
    cuda = torch.cuda.is_available()
    if world_size <= 1:
        return World(device=torch.device("cuda" if cuda else "cpu"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return World(rank, world_size, local_rank, device)


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


# -- collectives -------------------------------------------------------------------
def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when it is True on at least one (an all-reduce MAX)."""
    if not world.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=world.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_over_ranks(values: list[float], world: World) -> list[float]:
    """Element-wise sums over ranks (float64), the same on every rank."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def gather_objects(value: Any, world: World) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if not world.distributed:
        return [value]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, value)
    return out


# -- rows --------------------------------------------------------------------------
def shard_slice(rows: int, world: World) -> slice:
    """This rank's contiguous rows of a global batch of `rows` (sizes differ by one at
    most); ValueError when some rank would get none."""
    if rows < world.world_size:
        raise ValueError(f"a batch of {rows} rows cannot be split over {world.world_size} ranks")
    base, extra = divmod(rows, world.world_size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (1 if world.rank < extra else 0))


def batch_rows(batch_size: int, world: World) -> slice:
    """`shard_slice` of a spec's batch; PermanentError naming spec.optimization.batchSize
    when the batch cannot give every rank a row."""
    try:
        return shard_slice(batch_size, world)
    except ValueError as exc:
        raise PermanentError(
            f"spec.optimization.batchSize {batch_size} is smaller than the "
            f"{world.world_size} processes it is split over",
            "BatchTooSmall",
        ) from exc


def loss_scale(local: int, total: int, world: World) -> float:
    """Factor for a rank's mean loss over `local` items so that the mean of the ranks'
    gradients is the gradient of the mean over `total` items (1.0 on one process)."""
    if not world.distributed:
        return 1.0
    return world.world_size * local / total


# -- strategy ----------------------------------------------------------------------
def training_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights, gradients and AdamW state: trainable parameters count weight +
    gradient + 8 bytes of optimizer state per element, frozen ones their weight only."""
    total = 0
    for param in model.parameters():
        size = param.numel() * param.element_size()
        if param.requires_grad:
            total += 2 * size + ADAMW_STATE_BYTES * param.numel()
        else:
            total += size
    return total


def choose_strategy(requested: str, needed_bytes: int, device_memory: int | None) -> Strategy:
    """ddp or fsdp for `requested` (auto: fsdp when the bytes exceed the device's usable
    memory; with no device memory known, i.e. on CPU, ddp)."""
    if requested in ("ddp", "fsdp"):
        return requested  # type: ignore[return-value]
    if requested != "auto":
        raise ValueError(f"unknown strategy {requested!r}")
    if device_memory is None:
        return "ddp"
    return "fsdp" if needed_bytes > MEMORY_HEADROOM * device_memory else "ddp"


def device_memory(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory)


def resolve_strategy(requested: str, model: torch.nn.Module, world: World) -> Strategy:
    """The strategy this run uses ("single" on one process)."""
    if not world.distributed:
        return "single"
    return choose_strategy(requested, training_bytes(model), device_memory(world.device))


# -- wrapping ----------------------------------------------------------------------
def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks: the classes transformers never splits across
    devices (`_no_split_modules`), else the children of its largest ModuleList."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if blocks:
        return blocks
    lists = [list(m) for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return max(lists, key=len) if lists else []


def wrap(model: torch.nn.Module, strategy: Strategy, world: World) -> torch.nn.Module:
    """The module to train: DDP, FSDP2 (in place) or the model itself."""
    if strategy == "single" or not world.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in transformer_blocks(model):
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    DDP._set_params_and_buffers_to_ignore_for_model(model, frozen)
    ids = [world.device.index] if world.device.type == "cuda" else None
    # the LMs' buffers (rotary tables, masks) are constants: synced once at
    # construction, not before every forward (`broadcast_buffers` is deprecated)
    return DDP(model, device_ids=ids, forward_sync_buffers=False)


def gradient_sync(wrapped: torch.nn.Module, sync: bool) -> Any:
    """A context for one micro-batch's backward: no gradient reduction unless `sync`."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(wrapped, DDP):
        return nullcontext() if sync else wrapped.no_sync()
    if isinstance(wrapped, FSDPModule):
        return _fsdp_sync(wrapped, sync)
    return nullcontext()


@contextmanager
def _fsdp_sync(module: Any, sync: bool) -> Iterator[None]:
    module.set_requires_gradient_sync(sync)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def local_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of parameters, gradients and optimizer state this rank holds (its shards
    under FSDP2; DDP's communication buckets are not counted)."""
    from torch.distributed.tensor import DTensor

    def size(tensor: Any) -> int:
        if not isinstance(tensor, torch.Tensor):
            return 0
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        return local.numel() * local.element_size()

    total = sum(size(p) + size(p.grad) for p in model.parameters())
    for state in optimizer.state.values():
        total += sum(size(value) for value in state.values())
    return total


# -- full states for saving --------------------------------------------------------
def full_model_state(model: torch.nn.Module, world: World) -> dict[str, torch.Tensor] | None:
    """A full CPU state dict on rank 0 (None elsewhere); a collective under FSDP2."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state: dict[str, Any] = get_model_state_dict(model, options=options)
        if not world.is_main:
            return None
        # tied weights (an LM head sharing the embedding) are stored once, as one process
        # saves them: drop every name but the first of a shared parameter
        first = {name for name, _ in model.named_parameters()}
        aliases = {n for n, _ in model.named_parameters(remove_duplicate=False)} - first
        return {k: v for k, v in state.items() if k not in aliases}
    return model.state_dict() if world.is_main else None


def full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, world: World
) -> dict[str, Any] | None:
    """`optimizer.state_dict()` as one process would have it, on rank 0 (None elsewhere)."""
    if not is_sharded(model):
        return optimizer.state_dict() if world.is_main else None
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    by_name: dict[str, Any] = get_optimizer_state_dict(model, optimizer, options=options)
    if not world.is_main:
        return None
    index = 0
    state: dict[int, Any] = {}
    groups = []
    for group in by_name["param_groups"]:
        ids = []
        for name in group["params"]:
            if name in by_name["state"]:
                state[index] = by_name["state"][name]
            ids.append(index)
            index += 1
        groups.append({**group, "params": ids})
    return {"state": state, "param_groups": groups}


def load_full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, full: dict[str, Any]
) -> None:
    """Load an index-keyed `optimizer.state_dict()` (from one process) into an optimizer,
    sharded or not."""
    if not is_sharded(model):
        optimizer.load_state_dict(full)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    names = [name for name, _ in model.named_parameters()]
    state, groups, index = {}, [], 0
    for group in full["param_groups"]:
        fqns = []
        for _ in group["params"]:
            if index in full["state"]:
                state[names[index]] = full["state"][index]
            fqns.append(names[index])
            index += 1
        groups.append({**group, "params": fqns})
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(
        model, optimizer, {"state": state, "param_groups": groups}, options=options
    )
