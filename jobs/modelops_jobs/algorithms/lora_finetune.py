"""LoRA / QLoRA fine-tuning on prompt -> completion task data (ModelAdaptation `lora`).

The source side of Trans-LoRA (arXiv:2405.17258): train an adapter on the task data
while that data exists, and with `transferReady` also train the discriminator and keep
a few seed examples, so that a later LoRATransfer needs no task data
(`translora.build_discriminator`).

The pieces here are shared with the transfer's distillation: `encode_pairs` (the loss
covers the completion tokens only), `attach_lora` (LoRA or DoRA; QLoRA when the base
was loaded 4- or 8-bit, which needs a GPU: `modelio` raises `NeedsGPU` on CPU),
`train_adapter` (AdamW, linear schedule, clipping, accumulation; resumable) and
`RunState`, the named pieces of a multi-phase run saved through the Checkpointer, so
that a SIGTERM in any phase resumes there and ends as an uninterrupted run would.

Output: the adapter in PEFT's format (`save_pretrained`) in the run's version directory;
with `transferReady` also `discriminator/` (a second PEFT adapter on the same base) and
`seeds.jsonl`. Results: train loss, eval loss on a held-out tenth when the data has at
least 20 samples, and the discriminator's held-out accuracy.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_jobs.checkpoint import Checkpointer
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.data import field_values, read_records
from modelops_jobs.errors import PermanentError, Preempted
from modelops_jobs.modelio import count_parameters, load_causal_lm, load_tokenizer

EVAL_SHARE = 0.1
MIN_SAMPLES_FOR_EVAL = 20
LossFn = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class Example:
    """One tokenized sequence; labels are -100 where no loss is taken (the prompt)."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class TrainOutcome:
    first_loss: float
    final_loss: float
    steps: int


class RunState:
    """Named pieces of a resumable run (finished phases, a phase in progress), saved
    together as the Checkpointer's one state."""

    def __init__(self, checkpointer: Checkpointer) -> None:
        self.checkpointer = checkpointer
        self.values: dict[str, Any] = checkpointer.load() or {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def put(self, key: str, value: Any) -> None:
        self.values[key] = value
        self.checkpointer.save(self.values)


# -- data --------------------------------------------------------------------------
def read_pairs(path: Path, dataset: Any) -> tuple[list[str], list[str]]:
    """(prompts, completions) from task data; PermanentError naming a bad record."""
    records = read_records(path, dataset.max_samples)
    prompts = field_values(records, dataset.prompt_field, str(path))
    completions = field_values(records, dataset.completion_field, str(path))
    for i, value in enumerate(prompts + completions):
        if not isinstance(value, str):
            raise PermanentError(
                f"{path}: record {i % len(records)} holds a non-string", "InvalidData"
            )
    if not prompts:
        raise PermanentError(f"{path}: no task samples", "InvalidData")
    return prompts, completions


def encode_pairs(
    tokenizer: Any,
    prompts: list[str],
    completions: list[str],
    max_length: int,
    append_eos: bool = True,
) -> list[Example]:
    """Prompt + completion (+ EOS) token IDs with the loss on the completion only.

    Sequences longer than `max_length` are cut on the right; a pair left with no
    completion token is dropped."""
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = tokenizer(prompt)["input_ids"]
        target = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if append_eos and tokenizer.eos_token_id is not None:
            target = [*target, tokenizer.eos_token_id]
        ids = (prompt_ids + target)[:max_length]
        labels = ([-100] * len(prompt_ids) + target)[:max_length]
        if any(x != -100 for x in labels):
            out.append(Example(ids, labels))
    return out


def collate(examples: list[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


# -- adapters ----------------------------------------------------------------------
def peft_lora_config(config: Any) -> Any:
    """PEFT's LoraConfig for our LoRAConfig (empty target modules: every block linear)."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules) or "all-linear",
        use_dora=config.use_dora,
        use_rslora=config.use_rslora,
        task_type="CAUSAL_LM",
    )


def attach_lora(model: Any, config: Any, seed: int, adapter_name: str = "default") -> Any:
    """A fresh trainable adapter on a base model (or a second one on a PeftModel).

    Its random init depends on `seed` only, so a resumed run rebuilds it the same.
    PermanentError(UnsupportedTargetModules) when the base has none of the requested
    modules."""
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    lora = peft_lora_config(config)
    torch.manual_seed(seed)
    try:
        if isinstance(model, PeftModel):
            model.add_adapter(adapter_name, lora)
            return model
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return get_peft_model(model, lora, adapter_name=adapter_name)
    except ValueError as exc:
        arch = type(model).__name__
        raise PermanentError(
            f"cannot attach LoRA to {arch} with targetModules "
            f"{list(config.target_modules) or 'all-linear'}: {exc}",
            "UnsupportedTargetModules",
        ) from exc


# -- training ----------------------------------------------------------------------
def cross_entropy_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def stream_order(n: int, count: int, start: int, seed: int) -> list[int]:
    """Indices start..start+count of an endless stream of seeded per-epoch permutations
    (a function of its arguments only, so a resumed run draws the same batches)."""
    out: list[int] = []
    epoch_cache: dict[int, list[int]] = {}
    for position in range(start, start + count):
        epoch = position // n
        if epoch not in epoch_cache:
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            epoch_cache[epoch] = torch.randperm(n, generator=generator).tolist()
        out.append(epoch_cache[epoch][position % n])
    return out


def train_adapter(
    model: Any,
    examples: list[Example],
    optimization: Any,
    ctx: RunContext,
    state: RunState,
    *,
    phase: str,
    pad_id: int,
    seed: int,
    loss_fn: LossFn = cross_entropy_loss,
) -> TrainOutcome:
    """Train the model's trainable parameters (AdamW, linear warmup then linear decay).

    Resumes from `state` when a checkpoint of this phase exists; on SIGTERM saves and
    raises Preempted. A finished phase stays in `state` so later phases can resume."""
    if not examples:
        raise PermanentError(f"{phase}: no training sequences left after tokenizing", "InvalidData")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [p for _, p in named], lr=optimization.learning_rate, weight_decay=optimization.weight_decay
    )
    total = optimization.steps
    warmup = int(total * optimization.warmup_ratio)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    key = f"train/{phase}"
    losses: list[float] = []
    step = 0
    saved = state.get(key)
    if saved is not None:
        weights = dict(named)
        for name, tensor in saved["weights"].items():
            weights[name].data.copy_(tensor)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step, losses = saved["step"], saved["losses"]

    def snapshot() -> dict[str, Any]:
        return {
            "weights": {n: p.detach().cpu().clone() for n, p in named},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "losses": losses,
        }

    device = next(model.parameters()).device
    per_step = optimization.batch_size * optimization.gradient_accumulation
    tokens = 0
    model.train()
    while step < total:
        if ctx.checkpointer.should_stop():
            state.put(key, snapshot())
            raise Preempted(f"{phase}: stopped after step {step} of {total}; checkpoint saved")
        order = stream_order(len(examples), per_step, step * per_step, seed)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for start in range(0, per_step, optimization.batch_size):
            chunk = [examples[i] for i in order[start : start + optimization.batch_size]]
            batch = collate(chunk, pad_id, device)
            loss = loss_fn(model, batch) / optimization.gradient_accumulation
            loss.backward()
            step_loss += float(loss.detach())
            tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_([p for _, p in named], optimization.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(step_loss)
        ctx.reporter.step(step, total, loss=step_loss, tokens=tokens)
        if ctx.checkpointer.due(step) and step < total:
            state.put(key, snapshot())
    if saved is None or saved["step"] < total:
        state.put(key, snapshot())
    model.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return TrainOutcome(first_loss=losses[0], final_loss=sum(tail) / len(tail), steps=total)


@torch.no_grad()
def mean_loss(model: Any, examples: list[Example], batch_size: int, pad_id: int) -> float:
    """Token-weighted mean cross-entropy on the labelled tokens."""
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], pad_id, device)
        labels = batch.pop("labels")
        logits = model(**batch).logits[:, :-1].float()
        targets = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += int((targets != -100).sum())
    return total / max(1, count)


def split_train_eval(n: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices of a seeded split: a tenth held out when there are at least 20 samples."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = math.ceil(n * EVAL_SHARE) if n >= MIN_SAMPLES_FOR_EVAL else 0
    return sorted(order[held:]), sorted(order[:held])


# -- the ModelAdaptation run -------------------------------------------------------
def run(spec: ModelAdaptationSpec, ctx: RunContext) -> AlgorithmResult:
    """One LoRA fine-tune of `spec.model` on `spec.data` (+ discriminator and seeds)."""
    if spec.data is None:
        raise PermanentError(
            "strategy lora needs spec.data (prompt/completion JSONL)", "MissingData"
        )
    settings = spec.lora
    model_path = ctx.resolve(str(spec.model.uri))
    data_path = ctx.resolve(str(spec.data.uri))
    prompts, completions = read_pairs(data_path, spec.data)
    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, spec.model.dtype, spec.model.quantization, ctx.device)
    model = attach_lora(model, settings.lora, ctx.seed)
    trainable, total = count_parameters(model)
    train_idx, eval_idx = split_train_eval(len(prompts), ctx.seed)
    opt = spec.optimization
    pad_id = tokenizer.pad_token_id

    def encoded(indices: list[int]) -> list[Example]:
        chosen_p = [prompts[i] for i in indices]
        chosen_c = [completions[i] for i in indices]
        return encode_pairs(tokenizer, chosen_p, chosen_c, opt.sequence_length)

    state = RunState(ctx.checkpointer)
    ctx.reporter.phase("train")
    outcome = train_adapter(
        model, encoded(train_idx), opt, ctx, state, phase="adapter", pad_id=pad_id, seed=ctx.seed
    )
    results: dict[str, Any] = {
        "train_loss": outcome.final_loss,
        "train_loss_first": outcome.first_loss,
        "steps": outcome.steps,
        "trainable_parameters": trainable,
        "parameters": total,
    }
    if eval_idx:
        ctx.reporter.phase("evaluate")
        results["eval_loss"] = mean_loss(model, encoded(eval_idx), opt.batch_size, pad_id)
    lineage: dict[str, Any] = {
        "parent": str(spec.model.uri),
        "data": str(spec.data.uri),
        "run": ctx.run.get("number"),
        "transferReady": settings.transfer_ready,
    }
    metrics: dict[str, Any] = {}
    if settings.transfer_ready:
        from modelops_jobs.algorithms import translora

        seeds = translora.pick_seeds(
            [prompts[i] for i in train_idx],
            [completions[i] for i in train_idx],
            settings.seed_examples,
            ctx.seed,
        )
        report = translora.build_discriminator(
            model,
            tokenizer,
            real_prompts=[prompts[i] for i in train_idx],
            seeds=seeds,
            name=translora.dataset_name(str(spec.data.uri)),
            optimization=opt,
            ctx=ctx,
            state=state,
            epochs=settings.discriminator_epochs,
        )
        results["discriminator_accuracy"] = report.accuracy
        metrics["discriminator"] = report.to_metrics()
        lineage["seedsDigest"] = translora.seeds_digest(seeds)
    ctx.reporter.phase("save")
    model.save_pretrained(str(ctx.output_dir))
    if settings.transfer_ready:
        translora.write_transfer_kit(ctx.output_dir, seeds, report)
    for name, value in results.items():
        ctx.reporter.metric(name, value)
    number = int(ctx.run.get("number", 1))
    return AlgorithmResult(
        results=results, lineage=lineage, metrics=metrics, version=f"run-{number:04d}"
    )
