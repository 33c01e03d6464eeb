"""The PruneRetrain job: PERP end to end (arXiv:2312.15230).

Load a causal LM, measure its perplexity (`perp_eval`), prune the block linears
(`pruning`), measure again, retrain a small subset (`perp_peft`) with the causal-LM loss
or block-wise reconstruction (`perp_train`), merge with a rule that keeps the mask,
check that the zeros are exactly the stored masks (and the N:M pattern), measure again
and `save_pretrained`.

Resumable: after pruning, the pruned weights, masks and the dense/pruned perplexities
go to `pruned.pt` (`perp_state`); training state goes to the checkpointer on SIGTERM
and every `checkpointEvery` steps (`perp_train`). A resumed run loads both and ends
bit-identical to an uninterrupted run. A 4/8-bit base (QLoRA style) is pruned in full
precision from the checkpoint's weights, re-quantized for retraining, and merged into
the full-precision pruned weights, so the output is a plain sparse model whose zeros
are exactly the mask. `reconstruction` mode trains `retrain.optimization.steps` steps
per block on the calibration windows and never trains the head or the final norm.
"""

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelops_api.prune_retrain import PruneRetrainSpec, pattern_nm
from modelops_jobs import distributed, modelio, offload
from modelops_jobs.algorithms import (
    perp_inputs,
    perp_peft,
    perp_ranks,
    perp_state,
    perp_train,
    pruning,
    pruning_driver,
)
from modelops_jobs.algorithms.perp_eval import perplexity
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.errors import PermanentError

BATCH_FIELD = "retrain.optimization.batchSize"


def run(spec: PruneRetrainSpec, ctx: RunContext) -> AlgorithmResult:
    """Prune, retrain, merge, verify and save; results validate against PruneRetrainResults."""
    opt = spec.retrain.optimization
    ctx.checkpointer.every = opt.checkpoint_every
    perp_inputs.validate(spec)
    perp_ranks.batch_rows(opt.batch_size, ctx.world, BATCH_FIELD)  # before any loading
    ctx.reporter.phase("load")
    model_dir = ctx.resolve(spec.model.uri, must_exist=False)
    placement = _placement(spec, model_dir, ctx.device)
    load_device = None if placement is not None else ctx.device
    model = modelio.load_causal_lm(
        model_dir, spec.model.dtype, spec.model.quantization, load_device
    )
    tokenizer = modelio.load_tokenizer(model_dir)
    job = _Job(spec, ctx, model, placement)
    job.layers = pruning.prunable_layers(model, spec.pruning.prune_embeddings_and_head)
    pruning.check_pattern(job.layers, job.nm)
    job.seq_len = min(opt.sequence_length, _max_positions(model))
    job.windows = perp_inputs.load_windows(spec, ctx, tokenizer, job.seq_len)
    job.amp = _autocast_dtype(model, spec)
    dense_blocks = _dense_block_copies(model, spec) if perp_inputs.reconstructs(spec) else []
    quantized = spec.model.quantization != "none"
    job.full_precision = pruning.checkpoint_weights(model_dir, job.layers) if quantized else None
    masks, dense_ppl, pruned_ppl = _prune_or_reuse(job)
    masks = _alias_tied_head(model, masks)
    plan, trainable, total = _select_subset(job, masks)
    seconds, peak, last_loss = _retrain(job, plan, masks, dense_blocks)
    unmerged_ppl = job.perplexity("unmerged")

    ctx.reporter.phase("merge")
    densified = perp_peft.merge(model, plan, job.full_precision)
    perp_peft.dequantize_remaining(model, job.layers, job.full_precision)
    layers = pruning.prunable_layers(model, spec.pruning.prune_embeddings_and_head)
    report = pruning.verify_masks(layers, masks, job.nm)
    retrained_ppl = job.perplexity("retrained")

    ctx.reporter.phase("save")
    if ctx.world.is_main:  # rank 0 alone publishes
        model.save_pretrained(ctx.output_dir)
        tokenizer.save_pretrained(ctx.output_dir)
    distributed.barrier(ctx.world)  # every rank is done with pruned.pt before it goes
    if ctx.world.local_rank == 0:
        perp_state.remove_pruned(ctx)
    gap, better = gap_recovered(dense_ppl, pruned_ppl, retrained_ppl)
    results = {
        "sparsity": report.sparsity,
        "mask_preserved": report.mask_preserved and report.pattern_holds,
        "dense_after_merge": bool(densified),
        "dense_perplexity": dense_ppl,
        "pruned_perplexity": pruned_ppl,
        "retrained_perplexity": retrained_ppl,
        "gap_recovered": gap,
        "better_than_dense": better,
        "trainable_share": trainable / total,
        "retrain_seconds": seconds,
        "peak_memory_bytes": peak,
    }
    return AlgorithmResult(
        results=results,
        lineage=_lineage(spec),
        metrics={
            "sparsityPerMatrix": report.per_matrix,
            "maskMismatched": report.mismatched,
            "nmPatternHolds": report.pattern_holds,
            "densifiedMatrices": densified,
            "trainableParameters": trainable,
            "totalParameters": total,
            "unmergedPerplexity": unmerged_ppl,
            "sequenceLength": job.seq_len,
            "offloaded": placement is not None,
            "retrainLoss": last_loss,
        },
    )


@dataclass
class _Job:
    """What the steps of one PERP run share (filled in as run() goes)."""

    spec: PruneRetrainSpec
    ctx: RunContext
    model: nn.Module
    placement: offload.Placement | None
    layers: list[pruning.PrunableLayer] = field(default_factory=list)
    seq_len: int = 0
    windows: dict[str, torch.Tensor] = field(default_factory=dict)
    amp: torch.dtype | None = None
    full_precision: dict[str, torch.Tensor] | None = None

    @property
    def nm(self) -> tuple[int, int] | None:
        return pattern_nm(self.spec.pruning.pattern)

    @property
    def device(self) -> torch.device:
        """Where the model computes: the execution device when its blocks are offloaded."""
        if self.placement is not None:
            return self.placement.execution
        return offload.input_device(self.model)

    def perplexity(self, label: str) -> float | None:
        windows = self.windows.get("eval")
        if windows is None:
            return None
        batch = self.spec.retrain.optimization.batch_size
        value = perplexity(self.model, windows, batch, self.amp, self.placement, self.ctx.world)
        self.ctx.reporter.metric(f"{label}_perplexity", value)
        return value


def _placement(
    spec: PruneRetrainSpec, model_dir: Path, device: torch.device
) -> offload.Placement | None:
    """Offload the blocks when the weight files exceed the device (never a 4/8-bit base).

    Only block-wise work can run offloaded: `causal_lm` retraining needs the whole model
    on one device, so it is refused with a reason naming the field.
    """
    if spec.model.quantization != "none":
        return None
    size = modelio.weight_file_bytes(model_dir)
    placement = offload.choose_placement(size, device, offload.device_memory(device))
    if placement is not None and not perp_inputs.reconstructs(spec):
        raise PermanentError(
            f"the model's weights ({size / 2**30:.1f} GiB) do not fit {device}: "
            "retrain.mode causal_lm needs the whole model on one device; use "
            "retrain.mode reconstruction (block by block, offloaded)",
            "ModelTooLarge",
        )
    return placement


def _prune_or_reuse(
    job: _Job,
) -> tuple[dict[str, torch.Tensor], float | None, float | None]:
    """(masks, dense ppl, pruned ppl): from pruned.pt when a retried run left one, else pruned now."""
    spec, ctx = job.spec, job.ctx
    digest = perp_state.spec_digest(spec)
    saved = perp_state.load_pruned(ctx, digest)
    if saved is not None:
        for layer in job.layers:
            weight = saved["weights"][layer.name]
            pruning.write_matrix(layer.module, weight.to(layer.module.weight.device))
        if job.full_precision is not None:
            job.full_precision.update({k: saved["weights"][k] for k in job.full_precision})
        return saved["masks"], saved["dense_perplexity"], saved["pruned_perplexity"]
    dense_ppl = job.perplexity("dense")
    ctx.reporter.phase("prune")
    config = pruning.PruneConfig(
        criterion=spec.pruning.criterion,
        sparsity=spec.pruning.sparsity,
        nm=job.nm,
        sparsegpt_block_size=spec.pruning.sparsegpt_block_size,
        sparsegpt_damping=spec.pruning.sparsegpt_damping,
        batch_size=spec.retrain.optimization.batch_size,
        should_stop=lambda: distributed.any_rank(ctx.checkpointer.should_stop(), ctx.world),
        full_precision=job.full_precision,
        placement=job.placement,
        world=ctx.world if ctx.world.distributed else None,
    )
    masks = pruning_driver.prune_model(
        job.model,
        job.layers,
        config,
        job.windows.get("calibration"),
        on_block=lambda done, total: ctx.reporter.step(done, total),
    )
    perp_ranks.agree_on_pruning(job.layers, masks, job.full_precision, ctx.world)
    pruned_ppl = job.perplexity("pruned")
    if ctx.world.local_rank == 0:  # one file per node's checkpoint directory
        perp_state.save_pruned(
            ctx, digest, job.layers, masks, job.full_precision, dense_ppl, pruned_ppl
        )
    return masks, dense_ppl, pruned_ppl


def _select_subset(
    job: _Job, masks: dict[str, torch.Tensor]
) -> tuple[perp_peft.RetrainPlan, int, int]:
    """(plan, trainable count, base count): the subset to retrain, everything else frozen."""
    spec, model = job.spec, job.model
    reconstruct = perp_inputs.reconstructs(spec)
    if spec.retrain.full_finetune:
        plan = perp_peft.enable_full_finetune(model, job.layers, masks)
    else:
        plan = perp_peft.select_subset(
            model,
            list(spec.retrain.subset),
            job.layers,
            masks,
            spec.retrain.lora,
            targets=perp_inputs.lora_targets(spec, job.layers),
            train_head=not reconstruct,
        )
    if reconstruct:
        perp_train.freeze_outside_blocks(model)
    trainable = sum(p.numel() for _, p in perp_peft.trainable_parameters(model))
    return plan, trainable, _base_parameter_count(model)


def _retrain(
    job: _Job,
    plan: perp_peft.RetrainPlan,
    masks: dict[str, torch.Tensor],
    dense_blocks: list[nn.Module | None],
) -> tuple[float, int, float | None]:
    """Run (or resume) retraining: (seconds over all attempts, peak memory, last loss)."""
    spec, ctx, model, device = job.spec, job.ctx, job.model, job.device
    ctx.reporter.phase("retrain")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    state = ctx.checkpointer.load()
    if state is not None and state.get("digest") != perp_state.spec_digest(spec):
        state = None
    seconds = state.get("retrain_seconds", 0.0) if state else 0.0
    started = time.monotonic()
    last_loss = None
    if perp_inputs.reconstructs(spec):
        perp_train.train_reconstruction(
            model,
            dense_blocks,
            job.windows["calibration"],
            spec,
            ctx,
            state,
            job.amp,
            job.placement,
        )
    else:
        last_loss = perp_train.train_causal_lm(
            model, plan, job.layers, masks, job.windows["retrain"], spec, ctx, state, job.amp
        )
    seconds += time.monotonic() - started
    return seconds, modelio.peak_memory_bytes(device), last_loss


# -- model helpers -------------------------------------------------------------------


def _alias_tied_head(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A head tied to pruned embeddings shares their mask (it is checked again once untied)."""
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embeddings is None or head.weight is not embeddings.weight:
        return masks
    names = {id(mod): name for name, mod in model.named_modules()}
    head_name, embeddings_name = names[id(head)], names[id(embeddings)]
    if embeddings_name in masks and head_name not in masks:
        return {**masks, head_name: masks[embeddings_name]}
    return masks


def _max_positions(model: nn.Module) -> int:
    config = model.config.get_text_config()
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def _autocast_dtype(model: nn.Module, spec: PruneRetrainSpec) -> torch.dtype | None:
    if spec.model.quantization != "none":
        return torch.bfloat16
    dtype = model.get_input_embeddings().weight.dtype
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


def _base_parameter_count(model: nn.Module) -> int:
    """Parameters of the model itself, adapters excluded (the denominator of the share)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n)


def _dense_block_copies(model: nn.Module, spec: PruneRetrainSpec) -> list[nn.Module | None]:
    """Frozen copies of the dense blocks (on the CPU unless quantized): reconstruction targets."""
    blocks = pruning.find_blocks(model)
    keep_device = spec.model.quantization != "none"
    copies: list[nn.Module | None] = []
    for block in blocks:
        dense = copy.deepcopy(block)
        copies.append(dense if keep_device else dense.cpu())
    return copies


# -- evaluation and results -----------------------------------------------------------


def gap_recovered(
    dense: float | None, pruned: float | None, retrained: float | None
) -> tuple[float | None, bool | None]:
    """(share of the pruning gap recovered, whether retraining beat the dense model).

    (pruned - retrained) / (pruned - dense), at most 1: a retrained model better than the
    dense one (an undertrained dense model learning from the retraining data) used to
    report 8.375 silently; now it reports 1.0 and says `better_than_dense`. None when
    pruning did not hurt (no gap) or a perplexity is missing."""
    if dense is None or pruned is None or retrained is None:
        return None, None
    better = retrained < dense
    if pruned <= dense:
        return None, better
    return min(1.0, (pruned - retrained) / (pruned - dense)), better


# -- lineage ---------------------------------------------------------------------------


def _lineage(spec: PruneRetrainSpec) -> dict[str, Any]:
    retrain = spec.retrain
    calibration = spec.pruning.calibration_data or retrain.data
    return {
        "baseModel": spec.model.uri,
        "criterion": spec.pruning.criterion,
        "pattern": spec.pruning.pattern,
        "sparsity": spec.pruning.sparsity,
        "subset": ["full_finetune"] if retrain.full_finetune else list(retrain.subset),
        "mode": retrain.mode,
        "retrainData": retrain.data.uri if retrain.data else None,
        "calibrationData": calibration.uri if calibration else None,
        "evaluationData": spec.evaluation.data.uri if spec.evaluation.data else None,
        "quantization": spec.model.quantization,
        "seed": spec.seed,
    }
