"""The PruneRetrain job: PERP end to end (arXiv:2312.15230).

Load a causal LM, measure its perplexity, prune the block linears (`pruning`), measure
again, retrain a small subset (`perp_peft`) with the causal-LM loss or block-wise
reconstruction, merge with a rule that keeps the mask, check that the zeros are exactly
the stored masks (and the N:M pattern), measure again and `save_pretrained`.

Resumable: after pruning, the pruned weights, masks and the dense/pruned perplexities
go to `pruned.pt` in the checkpoint directory; training state (trainable parameters,
AdamW, schedule, RNG, step) goes to the checkpointer on SIGTERM and every
`checkpointEvery` steps. A resumed run loads both and ends bit-identical to an
uninterrupted run. A 4/8-bit base (QLoRA style) is pruned in full precision from the
checkpoint's weights, re-quantized for retraining, and merged into the full-precision
pruned weights, so the output is a plain sparse model whose zeros are exactly the mask. Batches are drawn from seeded per-epoch permutations, so
the data order needs no state. `reconstruction` mode trains `retrain.optimization.steps`
steps per block on the calibration windows and never trains the head or the final norm.
"""

import contextlib
import copy
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelops_api.prune_retrain import PruneRetrainSpec, pattern_nm
from modelops_jobs import data, modelio
from modelops_jobs.algorithms import perp_peft, pruning
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.errors import PermanentError, Preempted

PRUNED_FILE = "pruned.pt"


def run(spec: PruneRetrainSpec, ctx: RunContext) -> AlgorithmResult:
    """Prune, retrain, merge, verify and save; results validate against PruneRetrainResults."""
    opt = spec.retrain.optimization
    ctx.checkpointer.every = opt.checkpoint_every
    _validate(spec)
    ctx.reporter.phase("load")
    model_dir = ctx.resolve(spec.model.uri, must_exist=False)
    model = modelio.load_causal_lm(model_dir, spec.model.dtype, spec.model.quantization, ctx.device)
    tokenizer = modelio.load_tokenizer(model_dir)
    device = next(model.parameters()).device
    nm = pattern_nm(spec.pruning.pattern)
    layers = pruning.prunable_layers(model, spec.pruning.prune_embeddings_and_head)
    pruning.check_pattern(layers, nm)
    seq_len = min(opt.sequence_length, _max_positions(model))
    windows = _load_windows(spec, ctx, tokenizer, seq_len)
    amp = _autocast_dtype(model, spec)
    digest = _spec_digest(spec)
    reconstruct = _reconstructs(spec)
    dense_blocks = _dense_block_copies(model, spec) if reconstruct else []

    quantized = spec.model.quantization != "none"
    full_precision = pruning.checkpoint_weights(model_dir, layers) if quantized else None
    saved = _load_pruned(ctx, digest)
    if saved is not None:
        masks = saved["masks"]
        for layer in layers:
            pruning.write_matrix(layer.module, saved["weights"][layer.name].to(device))
        if full_precision is not None:
            full_precision.update({k: saved["weights"][k] for k in full_precision})
        dense_ppl, pruned_ppl = saved["dense_perplexity"], saved["pruned_perplexity"]
    else:
        dense_ppl = _maybe_perplexity(model, windows.get("eval"), opt.batch_size, amp, ctx, "dense")
        ctx.reporter.phase("prune")
        config = pruning.PruneConfig(
            criterion=spec.pruning.criterion,
            sparsity=spec.pruning.sparsity,
            nm=nm,
            sparsegpt_block_size=spec.pruning.sparsegpt_block_size,
            sparsegpt_damping=spec.pruning.sparsegpt_damping,
            batch_size=opt.batch_size,
            should_stop=ctx.checkpointer.should_stop,
            full_precision=full_precision,
        )
        masks = pruning.prune_model(
            model,
            layers,
            config,
            windows.get("calibration"),
            on_block=lambda done, total: ctx.reporter.step(done, total),
        )
        pruned_ppl = _maybe_perplexity(
            model, windows.get("eval"), opt.batch_size, amp, ctx, "pruned"
        )
        _save_pruned(ctx, digest, layers, masks, full_precision, dense_ppl, pruned_ppl)

    masks = _alias_tied_head(model, masks)
    if spec.retrain.full_finetune:
        plan = perp_peft.enable_full_finetune(model, layers, masks)
    else:
        plan = perp_peft.select_subset(
            model,
            list(spec.retrain.subset),
            layers,
            masks,
            spec.retrain.lora,
            targets=_lora_targets(spec, layers),
            train_head=not reconstruct,
        )
    if reconstruct:
        freeze_outside_blocks(model)
    trainable = sum(p.numel() for _, p in perp_peft.trainable_parameters(model))
    total = _base_parameter_count(model)

    ctx.reporter.phase("retrain")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    state = ctx.checkpointer.load()
    if state is not None and state.get("digest") != digest:
        state = None
    seconds = state.get("retrain_seconds", 0.0) if state else 0.0
    started = time.monotonic()
    if reconstruct:
        train_reconstruction(model, dense_blocks, windows["calibration"], spec, ctx, state, amp)
    else:
        train_causal_lm(model, plan, layers, masks, windows["retrain"], spec, ctx, state, amp)
    seconds += time.monotonic() - started
    peak = modelio.peak_memory_bytes(device)
    unmerged_ppl = _maybe_perplexity(
        model, windows.get("eval"), opt.batch_size, amp, ctx, "unmerged"
    )

    ctx.reporter.phase("merge")
    densified = perp_peft.merge(model, plan, full_precision)
    perp_peft.dequantize_remaining(model, layers, full_precision)
    layers = pruning.prunable_layers(model, spec.pruning.prune_embeddings_and_head)
    report = pruning.verify_masks(layers, masks, nm)
    retrained_ppl = _maybe_perplexity(
        model, windows.get("eval"), opt.batch_size, amp, ctx, "retrained"
    )

    ctx.reporter.phase("save")
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    _remove_pruned(ctx)
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
            "sequenceLength": seq_len,
        },
    )


# -- inputs ---------------------------------------------------------------------------


def _validate(spec: PruneRetrainSpec) -> None:
    retrain = spec.retrain
    if retrain.lora.use_dora:
        raise PermanentError(
            "retrain.lora.useDora is not supported by the PERP adapter variants", "Unsupported"
        )
    if retrain.full_finetune and spec.model.quantization != "none":
        raise PermanentError(
            "retrain.fullFinetune needs an unquantized base (model.quantization: none)",
            "InvalidSpec",
        )
    if retrain.data is None and (retrain.mode == "causal_lm" or retrain.full_finetune):
        raise PermanentError("retrain.data is required for causal_lm retraining", "DataMissing")
    if retrain.data is None and spec.pruning.calibration_data is None:
        raise PermanentError("reconstruction needs retrain.data or calibrationData", "DataMissing")


def _reconstructs(spec: PruneRetrainSpec) -> bool:
    """Block-wise reconstruction retraining (full fine-tuning always uses the causal-LM loss)."""
    return spec.retrain.mode == "reconstruction" and not spec.retrain.full_finetune


def _texts(ref: Any, ctx: RunContext) -> list[str]:
    path = ctx.resolve(ref.uri)
    records = data.read_records(path, ref.max_samples)
    return [str(t) for t in data.field_values(records, ref.text_field, ref.uri)]


def _load_windows(
    spec: PruneRetrainSpec, ctx: RunContext, tokenizer: Any, seq_len: int
) -> dict[str, torch.Tensor]:
    """Token windows: retrain (causal_lm), calibration (Wanda/SparseGPT/reconstruction), eval."""
    out: dict[str, torch.Tensor] = {}
    retrain = spec.retrain
    if retrain.data is not None and not _reconstructs(spec):
        out["retrain"] = data.lm_windows(
            data.token_stream(tokenizer, _texts(retrain.data, ctx)), seq_len
        )
    if spec.pruning.criterion != "magnitude" or _reconstructs(spec):
        ref = spec.pruning.calibration_data or retrain.data
        stream = data.token_stream(tokenizer, _texts(ref, ctx))
        if stream.numel() < seq_len:
            raise PermanentError(
                f"calibration data too short: {stream.numel()} tokens at {ref.uri}, "
                f"need at least one window of {seq_len}",
                "DataTooShort",
            )
        generator = torch.Generator().manual_seed(spec.seed)
        starts = torch.randint(
            0,
            stream.numel() - seq_len + 1,
            (spec.pruning.calibration_samples,),
            generator=generator,
        )
        out["calibration"] = torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
    if spec.evaluation.data is not None:
        stream = data.token_stream(tokenizer, _texts(spec.evaluation.data, ctx))
        out["eval"] = data.lm_windows(stream, seq_len, spec.evaluation.max_windows)
    return out


def _lora_targets(spec: PruneRetrainSpec, layers: list[pruning.PrunableLayer]) -> list[str] | None:
    wanted = list(spec.retrain.lora.target_modules)
    if not wanted:
        return None
    names = [lay.name for lay in layers if pruning.matches_targets(lay.name, wanted)]
    if not names:
        raise PermanentError(
            f"retrain.lora.targetModules {wanted} match no pruned linear", "InvalidSpec"
        )
    return names


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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _spec_digest(spec: PruneRetrainSpec) -> str:
    body = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def _base_parameter_count(model: nn.Module) -> int:
    """Parameters of the model itself, adapters excluded (the denominator of the share)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n)


def freeze_outside_blocks(model: nn.Module) -> None:
    inside = {id(p) for p in pruning.find_blocks(model).parameters()}
    for param in model.parameters():
        if id(param) not in inside:
            param.requires_grad_(False)


def _dense_block_copies(model: nn.Module, spec: PruneRetrainSpec) -> list[nn.Module | None]:
    """Frozen copies of the dense blocks (on the CPU unless quantized): reconstruction targets."""
    blocks = pruning.find_blocks(model)
    keep_device = spec.model.quantization != "none"
    copies: list[nn.Module | None] = []
    for block in blocks:
        dense = copy.deepcopy(block)
        copies.append(dense if keep_device else dense.cpu())
    return copies


# -- evaluation -----------------------------------------------------------------------


def perplexity(
    model: nn.Module, windows: torch.Tensor, batch_size: int, amp: torch.dtype | None = None
) -> float:
    """exp(mean next-token NLL) over non-overlapping windows."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll = 0.0
    count = 0
    with torch.no_grad(), _autocast(device, amp):
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
    return math.exp(nll / count)


def _maybe_perplexity(
    model: nn.Module,
    windows: torch.Tensor | None,
    batch_size: int,
    amp: torch.dtype | None,
    ctx: RunContext,
    label: str,
) -> float | None:
    if windows is None:
        return None
    value = perplexity(model, windows, batch_size, amp)
    ctx.reporter.metric(f"{label}_perplexity", value)
    return value


# -- training -------------------------------------------------------------------------


def _sample_order(n: int, seed: int) -> Iterator[int]:
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


def _restore(model: nn.Module, state: dict[str, Any]) -> None:
    params = dict(perp_peft.trainable_parameters(model))
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)


def _checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    ctx: RunContext,
    extra: dict[str, Any],
) -> None:
    ctx.checkpointer.save(
        {
            "trainable": {n: p.detach().clone() for n, p in perp_peft.trainable_parameters(model)},
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            **extra,
        }
    )


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
    stop = ctx.checkpointer.should_stop()
    if stop or ctx.checkpointer.due(step):
        _checkpoint(model, optimizer, schedule, ctx, extra)
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
) -> None:
    """Next-token loss on the retraining windows; AdamW, warmup then linear decay."""
    opt = spec.retrain.optimization
    device = next(model.parameters()).device
    params = [p for _, p in perp_peft.trainable_parameters(model)]
    optimizer, schedule = _optimizer(params, spec)
    per_step = opt.batch_size * opt.gradient_accumulation
    start = 0
    if state is not None:
        _restore(model, state)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = int(state["step"])
    order = _skip(_sample_order(windows.shape[0], spec.seed), start * per_step)
    started = time.monotonic()
    elapsed_before = state.get("retrain_seconds", 0.0) if state else 0.0
    model.train()
    for step in range(start, opt.steps):
        total_loss = 0.0
        for _ in range(opt.gradient_accumulation):
            ids = torch.tensor([next(order) for _ in range(opt.batch_size)])
            batch = windows[ids].to(device)
            with _autocast(device, amp):
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            (loss / opt.gradient_accumulation).backward()
            total_loss += loss.item() / opt.gradient_accumulation
        torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if plan.full_finetune:
            perp_peft.apply_masks(layers, masks)
        done = step + 1
        ctx.reporter.step(
            done, opt.steps, loss=total_loss, tokens=(done - start) * per_step * windows.shape[1]
        )
        seconds = elapsed_before + time.monotonic() - started
        extra = {"digest": _spec_digest(spec), "step": done, "retrain_seconds": seconds}
        _after_step(done, opt.steps, model, optimizer, schedule, ctx, extra)
    model.eval()


def train_reconstruction(
    model: nn.Module,
    dense_blocks: list[nn.Module | None],
    calibration: torch.Tensor,
    spec: PruneRetrainSpec,
    ctx: RunContext,
    state: dict[str, Any] | None = None,
    amp: torch.dtype | None = None,
) -> None:
    """Block by block: fit each pruned block's subset to the dense block's output (MSE)."""
    opt = spec.retrain.optimization
    device = next(model.parameters()).device
    blocks = pruning.find_blocks(model)
    start_block, start_step = 0, 0
    started = time.monotonic()
    elapsed_before = state.get("retrain_seconds", 0.0) if state else 0.0
    if state is not None:
        _restore(model, state)
        start_block, start_step = int(state["block"]), int(state["step"])
    with _autocast(device, amp):
        inputs = pruning.capture_block_inputs(model, calibration, opt.batch_size)
    total = len(blocks) * opt.steps
    for index, block in enumerate(blocks):
        params = [p for p in block.parameters() if p.requires_grad]
        if index >= start_block and params:
            with torch.no_grad(), _autocast(device, amp):
                dense = dense_blocks[index]
                assert dense is not None
                dense = dense.to(device)
                targets = [pruning.run_block(dense, h, kw).float() for h, kw in inputs]
            dense_blocks[index] = None  # each dense block is needed once
            optimizer, schedule = _optimizer(params, spec)
            first = 0
            if index == start_block and state is not None:
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state["schedule"])
                first = start_step
            order = _skip(
                _sample_order(len(inputs), spec.seed + index),
                first * opt.gradient_accumulation,
            )
            block.train()
            for step in range(first, opt.steps):
                for _ in range(opt.gradient_accumulation):
                    chunk = next(order)
                    hidden, kwargs = inputs[chunk]
                    with _autocast(device, amp):
                        out = pruning.run_block(block, hidden, kwargs)
                    loss = F.mse_loss(out.float(), targets[chunk]) / opt.gradient_accumulation
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(params, opt.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                ctx.reporter.step(index * opt.steps + step + 1, total, loss=loss.item())
                extra = {
                    "digest": _spec_digest(spec),
                    "block": index,
                    "step": step + 1,
                    "retrain_seconds": elapsed_before + time.monotonic() - started,
                }
                _after_step(step + 1, opt.steps, model, optimizer, schedule, ctx, extra)
            block.eval()
        with torch.no_grad(), _autocast(device, amp):
            inputs = [(pruning.run_block(block, h, kw), kw) for h, kw in inputs]


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


# -- pruned-state file, quantization clean-up, lineage --------------------------------


def _pruned_path(ctx: RunContext) -> Path | None:
    directory = ctx.checkpointer.directory
    return None if directory is None else directory / PRUNED_FILE


def _save_pruned(
    ctx: RunContext,
    digest: str,
    layers: list[pruning.PrunableLayer],
    masks: dict[str, torch.Tensor],
    full_precision: dict[str, torch.Tensor] | None,
    dense_ppl: float | None,
    pruned_ppl: float | None,
) -> None:
    path = _pruned_path(ctx)
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


def _load_pruned(ctx: RunContext, digest: str) -> dict[str, Any] | None:
    path = _pruned_path(ctx)
    if path is None or not path.exists():
        return None
    body: dict[str, Any] = torch.load(path, weights_only=False)
    return body if body.get("digest") == digest else None


def _remove_pruned(ctx: RunContext) -> None:
    path = _pruned_path(ctx)
    if path is not None and path.exists():
        path.unlink()


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
