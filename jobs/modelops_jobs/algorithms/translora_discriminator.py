"""Trans-LoRA's discriminator training and the transfer kit a transfer-ready run leaves.

Why a module of its own: translora.py synthesises and filters prompts with a trained
discriminator (`translora.Discriminator`, the scorer); this module is how that
discriminator comes to exist — real prompts vs prompts the base generates from the seeds,
balanced, a held-out fifth for its accuracy, trained as a second adapter of the
PeftModel — and the files (seeds.jsonl, discriminator/translora.json) written beside the
adapters. `lora_finetune` calls it when a ModelAdaptation run is `transferReady`.
"""

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelops_api.common import LoRAConfig, Optimization
from modelops_jobs.algorithms.lora_training import (
    RunState,
    attach_lora,
    encode_pairs,
    train_adapter,
)
from modelops_jobs.algorithms.translora import (
    ANSWERS,
    DISCRIMINATOR_ADAPTER,
    DISCRIMINATOR_META,
    DISCRIMINATOR_TEMPLATE,
    SEEDS_FILE,
    Discriminator,
    Seed,
    answer_ids,
    normalise,
    synthesize,
)
from modelops_jobs.context import RunContext
from modelops_jobs.data import write_jsonl

DISCRIMINATOR_LORA = LoRAConfig(rank=8, alpha=16.0)
DISCRIMINATOR_HOLDOUT = 0.2


@dataclass
class DiscriminatorReport:
    name: str
    accuracy: float
    real_accuracy: float
    synthetic_accuracy: float
    train_samples: int
    holdout_samples: int

    def to_metrics(self) -> dict[str, Any]:
        return asdict(self)


def build_discriminator(
    model: Any,
    tokenizer: Any,
    *,
    real_prompts: list[str],
    seeds: list[Seed],
    name: str,
    optimization: Any,
    ctx: RunContext,
    state: RunState,
    samples: int = 250,
    epochs: int = 1,
) -> DiscriminatorReport:
    """Train the discriminator adapter on real prompts vs prompts the base generates
    from the seeds (balanced, `samples` of each at most), as adapter "discriminator" of
    the PeftModel; returns its held-out accuracy. The active adapter is kept."""
    from modelops_api.lora_transfer import SynthesisSpec

    count = min(samples, len(real_prompts))
    real = random.Random(ctx.seed).sample(real_prompts, count)
    settings = SynthesisSpec(samples=count, max_attempts=4 * count, min_acceptance_rate=0.0)
    ctx.reporter.phase("discriminator-data")
    with model.disable_adapter():
        synthetic = synthesize(
            model,
            tokenizer,
            seeds,
            settings,
            ctx,
            state,
            accept=None,
            exclude={normalise(t) for t in real_prompts} | {normalise(s.prompt) for s in seeds},
            key="synthesis/discriminator",
            seed=ctx.seed,
        ).kept
    labelled = [(t, ANSWERS[0]) for t in real] + [(t, ANSWERS[1]) for t in synthetic]
    random.Random(ctx.seed + 1).shuffle(labelled)
    held = max(2, int(len(labelled) * DISCRIMINATOR_HOLDOUT))
    train, holdout = labelled[held:], labelled[:held]
    answer_ids(tokenizer)
    examples = encode_pairs(
        tokenizer,
        [DISCRIMINATOR_TEMPLATE.format(sample=t, name=name) for t, _ in train],
        [a for _, a in train],
        optimization.sequence_length,
        append_eos=False,
    )
    active = model.active_adapter
    if DISCRIMINATOR_ADAPTER not in model.peft_config:
        attach_lora(model, DISCRIMINATOR_LORA, ctx.seed + 1, adapter_name=DISCRIMINATOR_ADAPTER)
    model.set_adapter(DISCRIMINATOR_ADAPTER)
    steps = max(1, math.ceil(epochs * len(examples) / optimization.batch_size))
    loop = Optimization(
        steps=steps,
        learning_rate=optimization.learning_rate,
        warmup_ratio=0.0,
        batch_size=optimization.batch_size,
        sequence_length=optimization.sequence_length,
        max_grad_norm=optimization.max_grad_norm,
        checkpoint_every=optimization.checkpoint_every,
    )
    ctx.reporter.phase("discriminator")
    train_adapter(
        model, examples, loop, ctx, state, phase="discriminator",
        pad_id=tokenizer.pad_token_id, seed=ctx.seed + 1,
    )  # fmt: skip
    model.set_adapter(active)
    verdicts = Discriminator(model, tokenizer, name).accepts([t for t, _ in holdout])
    right = [ok == (a == ANSWERS[0]) for (_, a), ok in zip(holdout, verdicts, strict=True)]
    real_right = [r for r, (_, a) in zip(right, holdout, strict=True) if a == ANSWERS[0]]
    synth_right = [r for r, (_, a) in zip(right, holdout, strict=True) if a == ANSWERS[1]]
    return DiscriminatorReport(
        name=name,
        accuracy=sum(right) / len(right),
        real_accuracy=sum(real_right) / max(1, len(real_right)),
        synthetic_accuracy=sum(synth_right) / max(1, len(synth_right)),
        train_samples=len(train),
        holdout_samples=len(holdout),
    )


def write_transfer_kit(output_dir: Path, seeds: list[Seed], report: DiscriminatorReport) -> None:
    """seeds.jsonl and discriminator/translora.json (template, NAME, answers, accuracy)
    beside the adapters that `save_pretrained` wrote."""
    write_jsonl(output_dir / SEEDS_FILE, [asdict(s) for s in seeds])
    meta = {"template": DISCRIMINATOR_TEMPLATE, "answers": list(ANSWERS), **report.to_metrics()}
    path = output_dir / DISCRIMINATOR_ADAPTER / DISCRIMINATOR_META
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True))
