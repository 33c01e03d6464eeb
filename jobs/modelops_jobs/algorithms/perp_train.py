"""PERP retraining loops: the causal-LM loss over the whole model, or block-wise reconstruction.

Why a module of its own: the loops are what a retried pod resumes and what runs on
several ranks, so they own the resume point (`resume`, one function for both loops),
the checkpoint contents and the seeded data order. Batches are drawn from seeded
per-epoch permutations, so the data order needs no state: a resumed run skips the
samples already drawn and ends bit-identical to an uninterrupted run.
"""

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelops_api.prune_retrain import PruneRetrainSpec
from modelops_jobs import distributed, offload
from modelops_jobs.algorithms import perp_peft, perp_ranks, pruning, pruning_driver
from modelops_jobs.algorithms.perp_eval import autocast
from modelops_jobs.algorithms.perp_state import spec_digest
from modelops_jobs.context import RunContext
from modelops_jobs.errors import Preempted


@dataclass(frozen=True)
class ResumePoint:
    """Where a (possibly resumed) retraining continues, and the state it continues from."""

    block: int = 0
    step: int = 0
    seconds_before: float = 0.0
    state: dict[str, Any] | None = None

    def load_optimizer(self, optimizer: torch.optim.Optimizer, schedule: Any) -> int:
        """Load the saved optimizer and schedule; the first step to run (0 when fresh)."""
        if self.state is None:
            return 0
        optimizer.load_state_dict(self.state["optimizer"])
        schedule.load_state_dict(self.state["schedule"])
        return self.step

    def seconds(self, started: float) -> float:
        """Retraining seconds over every attempt so far."""
        return self.seconds_before + time.monotonic() - started


def resume(model: nn.Module, state: dict[str, Any] | None) -> ResumePoint:
    """The trainable values restored from a checkpoint state, and where to continue."""
    if state is None:
        return ResumePoint()
    params = dict(perp_peft.trainable_parameters(model))
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    return ResumePoint(
        block=int(state.get("block", 0)),
        step=int(state["step"]),
        seconds_before=float(state.get("retrain_seconds", 0.0)),
        state=state,
    )


def freeze_outside_blocks(model: nn.Module) -> None:
    inside = {id(p) for p in pruning.find_blocks(model).parameters()}
    for param in model.parameters():
        if id(param) not in inside:
            param.requires_grad_(False)


def sample_order(n: int, seed: int) -> Iterator[int]:
    """Indices 0..n-1 in a fresh seeded permutation per epoch, forever."""
    epoch = 0
    while True:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        yield from torch.randperm(n, generator=generator).tolist()
        epoch += 1


def _skip(order: Iterator[int], count: int) -> Iterator[int]:
    for _ in range(count):
        next(order)
    return order


def _warmup_linear(steps: int, warmup_ratio: float) -> Any:
    warmup = math.ceil(warmup_ratio * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return factor


def _optimizer(
    params: list[nn.Parameter], spec: PruneRetrainSpec
) -> tuple[torch.optim.Optimizer, Any]:
    opt = spec.retrain.optimization
    optimizer = torch.optim.AdamW(params, lr=opt.learning_rate, weight_decay=opt.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_linear(opt.steps, opt.warmup_ratio)
    )
    return optimizer, schedule


def _after_step(
    step: int,
    total: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    ctx: RunContext,
    extra: dict[str, Any],
) -> None:
    """Checkpoint when due or asked to stop; raise Preempted after a stop request."""
    stop = distributed.any_rank(ctx.checkpointer.should_stop(), ctx.world)
    if stop or ctx.checkpointer.due(step):
        ctx.checkpointer.save(
            {
                "trainable": {
                    n: p.detach().clone() for n, p in perp_peft.trainable_parameters(model)
                },
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                **extra,
            }
        )
    if stop:
        raise Preempted(f"stopped at retraining step {step} of {total}; checkpoint saved")


def train_causal_lm(
    model: nn.Module,
    plan: perp_peft.RetrainPlan,
    layers: list[pruning.PrunableLayer],
    masks: dict[str, torch.Tensor],
    windows: torch.Tensor,
    spec: PruneRetrainSpec,
    ctx: RunContext,
    state: dict[str, Any] | None = None,
    amp: torch.dtype | None = None,
) -> float | None:
    """Next-token loss on the retraining windows; AdamW, warmup then linear decay.

    On several processes (ctx.world) DDP averages the gradients of the trainable subset;
    each rank trains on its rows of the same global batches (`perp_ranks`). Returns the
    last step's loss over the global batch (None when no step ran).
    """
    opt, world = spec.retrain.optimization, ctx.world
    device = next(model.parameters()).device
    params = [p for _, p in perp_peft.trainable_parameters(model)]
    optimizer, schedule = _optimizer(params, spec)
    rows = perp_ranks.batch_rows(opt.batch_size, world, "retrain.optimization.batchSize")
    local = rows.stop - rows.start
    scale = distributed.loss_scale(local, opt.batch_size, world) / opt.gradient_accumulation
    wrapped = perp_ranks.wrap(model, spec, world)
    per_step = opt.batch_size * opt.gradient_accumulation
    point = resume(model, state)
    start = point.load_optimizer(optimizer, schedule)
    order = _skip(sample_order(windows.shape[0], spec.seed), start * per_step)
    started = time.monotonic()
    step_loss: float | None = None
    wrapped.train()
    for step in range(start, opt.steps):
        total_loss = 0.0
        for micro in range(opt.gradient_accumulation):
            ids = torch.tensor([next(order) for _ in range(opt.batch_size)])[rows]
            batch = windows[ids].to(device)
            with distributed.gradient_sync(wrapped, micro == opt.gradient_accumulation - 1):
                with autocast(device, amp):
                    loss = wrapped(input_ids=batch, labels=batch, use_cache=False).loss
                (loss * scale).backward()
            total_loss += loss.item() / opt.gradient_accumulation
        torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if plan.full_finetune:
            perp_peft.apply_masks(layers, masks)
        done = step + 1
        step_loss = perp_ranks.global_mean(total_loss, local, opt.batch_size, world)
        ctx.reporter.step(
            done, opt.steps, loss=step_loss, tokens=(done - start) * per_step * windows.shape[1]
        )
        extra = {
            "digest": spec_digest(spec),
            "step": done,
            "retrain_seconds": point.seconds(started),
        }
        _after_step(done, opt.steps, model, optimizer, schedule, ctx, extra)
    model.eval()
    return step_loss


def train_reconstruction(
    model: nn.Module,
    dense_blocks: list[nn.Module | None],
    calibration: torch.Tensor,
    spec: PruneRetrainSpec,
    ctx: RunContext,
    state: dict[str, Any] | None = None,
    amp: torch.dtype | None = None,
    placement: offload.Placement | None = None,
) -> None:
    """Block by block: fit each pruned block's subset to the dense block's output (MSE).

    With a placement the blocks wait on the offload device and each one is trained on
    the execution device (a model larger than the device).
    """
    blocks = pruning.find_blocks(model)
    point = resume(model, state)
    if placement is None:
        device = offload.input_device(model)
        _reconstruct_blocks(model, dense_blocks, calibration, spec, ctx, point, amp, device, None)
        return
    with offload.offloaded(model, blocks, placement):
        _reconstruct_blocks(
            model, dense_blocks, calibration, spec, ctx, point, amp, placement.execution, placement
        )


def _reconstruct_blocks(
    model: nn.Module,
    dense_blocks: list[nn.Module | None],
    calibration: torch.Tensor,
    spec: PruneRetrainSpec,
    ctx: RunContext,
    point: ResumePoint,
    amp: torch.dtype | None,
    device: torch.device,
    placement: offload.Placement | None,
) -> None:
    """The activations flow block to block; each block with trainables is fitted on the way."""
    blocks = pruning.find_blocks(model)
    started = time.monotonic()
    with autocast(device, amp):
        inputs = pruning_driver.capture_block_inputs(
            model, calibration, spec.retrain.optimization.batch_size
        )
    for index, block in enumerate(blocks):
        scope = offload.block_on(block, placement) if placement else contextlib.nullcontext()
        with scope:
            params = [p for p in block.parameters() if p.requires_grad]
            if index >= point.block and params:
                dense = dense_blocks[index]
                assert dense is not None
                dense_blocks[index] = None  # each dense block is needed once
                with torch.no_grad(), autocast(device, amp):
                    dense = dense.to(device)
                    targets = [pruning_driver.run_block(dense, h, kw).float() for h, kw in inputs]
                del dense
                fit = _BlockFit(model, index, len(blocks), spec, ctx, point, amp, device, started)
                fit.run(block, params, inputs, targets)
            with torch.no_grad(), autocast(device, amp):
                inputs = [(pruning_driver.run_block(block, h, kw), kw) for h, kw in inputs]


@dataclass
class _BlockFit:
    """Fitting one pruned block's trainables to the dense block's outputs (MSE)."""

    model: nn.Module
    index: int
    blocks: int
    spec: PruneRetrainSpec
    ctx: RunContext
    point: ResumePoint
    amp: torch.dtype | None
    device: torch.device
    started: float

    def run(
        self,
        block: nn.Module,
        params: list[nn.Parameter],
        inputs: list[tuple[torch.Tensor, dict[str, Any]]],
        targets: list[torch.Tensor],
    ) -> None:
        opt, index = self.spec.retrain.optimization, self.index
        optimizer, schedule = _optimizer(params, self.spec)
        first = self.point.load_optimizer(optimizer, schedule) if index == self.point.block else 0
        order = _skip(
            sample_order(len(inputs), self.spec.seed + index), first * opt.gradient_accumulation
        )
        block.train()
        for step in range(first, opt.steps):
            for _ in range(opt.gradient_accumulation):
                chunk = next(order)
                hidden, kwargs = inputs[chunk]
                with autocast(self.device, self.amp):
                    out = pruning_driver.run_block(block, hidden, kwargs)
                loss = F.mse_loss(out.float(), targets[chunk]) / opt.gradient_accumulation
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            total = self.blocks * opt.steps
            self.ctx.reporter.step(index * opt.steps + step + 1, total, loss=loss.item())
            extra = {
                "digest": spec_digest(self.spec),
                "block": index,
                "step": step + 1,
                "retrain_seconds": self.point.seconds(self.started),
            }
            _after_step(step + 1, opt.steps, self.model, optimizer, schedule, self.ctx, extra)
        block.eval()
