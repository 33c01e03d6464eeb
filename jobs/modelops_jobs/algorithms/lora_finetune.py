"""LoRA / QLoRA fine-tuning on prompt -> completion task data (ModelAdaptation `lora`).

The source side of Trans-LoRA (arXiv:2405.17258): train an adapter on the task data
while that data exists, and with `transferReady` also train the discriminator and keep
a few seed examples, so that a later LoRATransfer needs no task data
(`translora_discriminator.build_discriminator`).

The training itself (`train_adapter`, `attach_lora`, `RunState`, ...) is shared with the
transfer's distillation and lives in `lora_training`; under torchrun it is data-parallel
(DDP over the adapter, the 4-/8-bit base on the local rank's device).

Output: the adapter in PEFT's format (`save_pretrained`) in the run's version directory;
with `transferReady` also `discriminator/` (a second PEFT adapter on the same base) and
`seeds.jsonl`. Results: train loss, eval loss on a held-out tenth when the data has at
least 20 samples, and the discriminator's held-out accuracy.
"""

import math
import random
from typing import Any

from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_jobs.algorithms import translora, translora_discriminator
from modelops_jobs.algorithms.lora_training import (
    Example,
    RunState,
    attach_lora,
    check_adapter_strategy,
    encode_pairs,
    mean_loss,
    read_pairs,
    train_adapter,
)
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.errors import PermanentError
from modelops_jobs.modelio import count_parameters, load_causal_lm, load_tokenizer

EVAL_SHARE = 0.1
MIN_SAMPLES_FOR_EVAL = 20


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
    check_adapter_strategy(spec, ctx.world)
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
        seeds = translora.pick_seeds(
            [prompts[i] for i in train_idx],
            [completions[i] for i in train_idx],
            settings.seed_examples,
            ctx.seed,
        )
        report = translora_discriminator.build_discriminator(
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
        translora_discriminator.write_transfer_kit(ctx.output_dir, seeds, report)
    for name, value in results.items():
        ctx.reporter.metric(name, value)
    number = int(ctx.run.get("number", 1))
    return AlgorithmResult(
        results=results, lineage=lineage, metrics=metrics, version=f"run-{number:04d}"
    )
