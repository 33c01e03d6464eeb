"""LoRA adapter training shared by the fine-tune (`lora_finetune`) and Trans-LoRA's
discriminator and distillation (`translora`, `translora_job`).

`encode_pairs` (the loss covers the completion tokens only), `attach_lora` (LoRA or
DoRA; QLoRA when the base was loaded 4- or 8-bit, which needs a GPU: `modelio` raises
`NeedsGPU` on CPU), `train_adapter` (AdamW, linear schedule, clipping, accumulation;
resumable) and `RunState`, the named pieces of a multi-phase run saved through the
Checkpointer, so that a SIGTERM in any phase resumes there and ends as an
uninterrupted run would. It lives apart from both algorithms so that they import it,
not each other.

Under torchrun `train_adapter` trains the adapter data-parallel (DDP over the
trainable parameters only; the frozen, possibly quantized base is neither broadcast
nor reduced): every rank draws the same global micro-batches and keeps its contiguous
rows; its mean loss is scaled by (ranks x its labelled tokens / the micro-batch's
labelled tokens), so the averaged gradient is the one-process gradient of the same
global batch. The adapter is replicated, so each rank checkpoints its own copy (with
its RNG) in its own state file; SIGTERM to any rank stops all at the same step.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelops_jobs import distributed
from modelops_jobs.checkpoint import Checkpointer
from modelops_jobs.context import RunContext
from modelops_jobs.data import field_values, read_records
from modelops_jobs.errors import PermanentError, Preempted

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
    world = ctx.world
    saved = state.get(key)
    steps_saved = distributed.gather_objects(saved["step"] if saved else None, world)
    if len(set(steps_saved)) != 1:  # a kill in the middle of the ranks' saves
        saved = None
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
    rows = distributed.batch_rows(optimization.batch_size, world)
    wrapped = distributed.wrap(model, "ddp" if world.distributed else "single", world)
    tokens = 0
    model.train()
    while step < total:
        if distributed.any_rank(ctx.checkpointer.should_stop(), world):
            state.put(key, snapshot())
            raise Preempted(f"{phase}: stopped after step {step} of {total}; checkpoint saved")
        order = stream_order(len(examples), per_step, step * per_step, seed)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for start in range(0, per_step, optimization.batch_size):
            chunk = [examples[i] for i in order[start : start + optimization.batch_size]]
            last = start + optimization.batch_size >= per_step
            with distributed.gradient_sync(wrapped, last):
                loss = shard_loss(wrapped, chunk, rows, pad_id, device, loss_fn, world)
                loss = loss / optimization.gradient_accumulation
                loss.backward()
            step_loss += float(loss.detach())
            tokens += sum(len(e.input_ids) for e in chunk)
        if world.distributed:
            step_loss = distributed.sum_over_ranks([step_loss], world)[0] / world.world_size
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


def labelled(example: Example) -> int:
    """Positions that carry a loss after the one-token shift."""
    return sum(1 for label in example.labels[1:] if label != -100)


def shard_loss(
    model: Any,
    chunk: list[Example],
    rows: slice,
    pad_id: int,
    device: torch.device,
    loss_fn: LossFn,
    world: distributed.World,
) -> torch.Tensor:
    """This rank's loss on its rows of a global micro-batch, scaled so that the ranks'
    averaged gradient is the one-process gradient of the whole micro-batch."""
    if not world.distributed:
        return loss_fn(model, collate(chunk, pad_id, device))
    part = chunk[rows]
    counted, total = sum(labelled(e) for e in part), sum(labelled(e) for e in chunk)
    if counted == 0:  # nothing to learn from here; DDP still needs every gradient
        return sum((p.sum() * 0.0 for p in model.parameters() if p.requires_grad), torch.zeros(()))
    loss = loss_fn(model, collate(part, pad_id, device))
    return loss * distributed.loss_scale(counted, total, world)


def check_adapter_strategy(spec: Any, world: distributed.World) -> None:
    """Adapters train under DDP (the adapter is small; the frozen base is replicated):
    PermanentError naming spec.distribution.strategy when fsdp is asked for."""
    strategy = getattr(getattr(spec, "distribution", None), "strategy", "auto")
    if world.distributed and strategy == "fsdp":
        raise PermanentError(
            "spec.distribution.strategy fsdp is not supported for adapter training "
            "(lora, Trans-LoRA): use ddp or auto",
            "UnsupportedStrategy",
        )


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
