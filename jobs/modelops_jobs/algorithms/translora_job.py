"""LoRATransfer: move a LoRA adapter to a new base model with Trans-LoRA.

Order of work, failing on bad input before any expensive step:
1. Seeds: the source adapter's `seeds.jsonl` plus `spec.seeds` (none: NoSeeds).
2. Tokenizers; `distillation.mode: token` needs identical ones (TokenizerMismatch).
3. The teacher: source base + source adapter, loaded with plain PEFT (AdapterMismatch
   when the adapter does not fit that base); the stored discriminator, when present,
   becomes a second adapter of the same model. No discriminator (or `filter: none`):
   the run goes on unfiltered and reports `filtered: false`.
4. The student: a fresh LoRA/DoRA on the target base (UnsupportedTargetModules when
   the target has none of the requested modules).
5. Synthesis with the generator (the target base by default, its adapter disabled),
   filtered by the discriminator; teacher labels in batches (source adapter enabled);
   distillation into the student (sequence-level cross-entropy on the teacher's text,
   or token-level KL on the teacher's logits).
6. Evaluation on `evaluationData` when given: exact match of greedy completions for
   source + adapter, target base alone and target + transferred adapter; the MMD
   between real and synthetic prompts (kept vs all candidates) goes to the manifest.

Each phase is resumable after SIGTERM (kept prompts, labels, distillation state).
Output: the transferred adapter (PEFT format), `seeds.jsonl` (so it can be
transferred again), `synthetic.jsonl` (kept prompts with the teacher's completions)
and lineage (source adapter, bases, seeds digest, synthetic-set digest).
"""

import json
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from modelops_api.lora_transfer import LoRATransferSpec
from modelops_jobs import distributed
from modelops_jobs.algorithms import translora
from modelops_jobs.algorithms.lora_training import (
    RunState,
    attach_lora,
    check_adapter_strategy,
    cross_entropy_loss,
    encode_pairs,
    read_pairs,
    train_adapter,
)
from modelops_jobs.context import AlgorithmResult, RunContext
from modelops_jobs.data import write_jsonl
from modelops_jobs.errors import PermanentError, Preempted
from modelops_jobs.modelio import count_parameters, load_causal_lm, load_tokenizer

METRIC = "exact_match"
MMD_SAMPLES = 250
SYNTHETIC_FILE = "synthetic.jsonl"


def adapter_keys(adapter_dir: Path) -> set[str]:
    weights = adapter_dir / "adapter_model.safetensors"
    if weights.exists():
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as fh:
            return set(fh.keys())
    return set(torch.load(adapter_dir / "adapter_model.bin", weights_only=True))


def load_adapter(model: Any, adapter_dir: Path, adapter_name: str = "default") -> Any:
    """Load a PEFT adapter onto a base (or as another adapter of a PeftModel).

    PermanentError(AdapterMismatch) when PEFT cannot load it or when its weights do
    not cover exactly the modules it created (another base's adapter)."""
    from peft import PeftModel, get_peft_model_state_dict

    if not (adapter_dir / "adapter_config.json").exists():
        raise PermanentError(f"no PEFT adapter at {adapter_dir}", "AdapterNotFound")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(model, PeftModel):
                model.load_adapter(str(adapter_dir), adapter_name=adapter_name)
            else:
                model = PeftModel.from_pretrained(
                    model, str(adapter_dir), adapter_name=adapter_name
                )
        loaded = set(get_peft_model_state_dict(model, adapter_name=adapter_name))
        stored = adapter_keys(adapter_dir)
    except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
        raise PermanentError(
            f"adapter {adapter_dir} does not fit this base model: {exc}"[:900], "AdapterMismatch"
        ) from exc
    if loaded != stored:
        missing = sorted(loaded - stored)[:3]
        extra = sorted(stored - loaded)[:3]
        raise PermanentError(
            f"adapter {adapter_dir} does not fit this base model (missing {missing}, "
            f"unexpected {extra})",
            "AdapterMismatch",
        )
    return model


def load_discriminator(
    teacher: Any, tokenizer: Any, adapter_dir: Path
) -> translora.Discriminator | None:
    """The stored discriminator as adapter "discriminator" of the teacher, or None."""
    directory = adapter_dir / translora.DISCRIMINATOR_ADAPTER
    if not (directory / "adapter_config.json").exists():
        return None
    meta_path = directory / translora.DISCRIMINATOR_META
    if not meta_path.exists():
        raise PermanentError(
            f"{directory} has no {translora.DISCRIMINATOR_META}", "InvalidDiscriminator"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("template") != translora.DISCRIMINATOR_TEMPLATE or meta.get("answers") != list(
        translora.ANSWERS
    ):
        raise PermanentError(f"{directory} uses another template", "InvalidDiscriminator")
    load_adapter(teacher, directory, translora.DISCRIMINATOR_ADAPTER)
    teacher.set_adapter("default")
    return translora.Discriminator(teacher, tokenizer, str(meta["name"]))


def gather_seeds(spec: Any, adapter_dir: Any) -> list[translora.Seed]:
    stored = translora.read_seeds(adapter_dir / translora.SEEDS_FILE)
    extra = [translora.Seed(s.prompt, s.completion) for s in spec.seeds]
    seeds = stored + [s for s in extra if s not in stored]
    if not seeds:
        raise PermanentError(
            "no seed examples: the source adapter has no seeds.jsonl and spec.seeds is empty",
            "NoSeeds",
        )
    return seeds


def label_with_teacher(
    teacher: Any, tokenizer: Any, prompts: list[str], spec: Any, ctx: RunContext, state: RunState
) -> list[str]:
    """The teacher's greedy completions, batch by batch (resumable)."""
    labels: list[str] = state.get("labels") or []
    size = spec.distillation.teacher_batch_size
    teacher.set_adapter("default")
    while len(labels) < len(prompts):
        if distributed.any_rank(ctx.checkpointer.should_stop(), ctx.world):
            state.put("labels", labels)
            raise Preempted(f"labelling stopped after {len(labels)} prompts; saved")
        chunk = prompts[len(labels) : len(labels) + size]
        labels += translora.greedy_completions(
            teacher, tokenizer, chunk, spec.distillation.teacher_max_new_tokens, size
        )
        ctx.reporter.step(len(labels), len(prompts))
    state.put("labels", labels)
    return labels


def evaluate(
    models: dict[str, tuple[Any, Any, Any]], prompts: list[str], refs: list[str], spec: Any
) -> dict[str, float]:
    """Exact match per model; `models` maps a name to (model, tokenizer, context)."""
    scores = {}
    for name, (model, tokenizer, context) in models.items():
        with context:
            completions = translora.greedy_completions(
                model,
                tokenizer,
                prompts,
                spec.distillation.teacher_max_new_tokens,
                spec.distillation.teacher_batch_size,
            )
        scores[name] = translora.exact_match(completions, refs)
    return scores


def mmd_diagnostic(
    teacher: Any, tokenizer: Any, real: list[str], outcome: translora.SynthesisOutcome
) -> dict[str, float]:
    """MMD^2 between real prompts and kept / all candidate prompts (source-base embeddings)."""
    with teacher.disable_adapter():
        embed = translora.prompt_embeddings
        real_emb = embed(teacher, tokenizer, real[:MMD_SAMPLES])
        kept = embed(teacher, tokenizer, outcome.kept[:MMD_SAMPLES])
        candidates = embed(teacher, tokenizer, outcome.candidates[:MMD_SAMPLES])
    return {
        "mmd_kept": translora.mmd_rbf(real_emb, kept),
        "mmd_candidates": translora.mmd_rbf(real_emb, candidates),
    }


@dataclass
class Inputs:
    """What the run reads before loading any model: the adapter, seeds, tokenizers."""

    adapter_uri: str
    adapter_dir: Path
    seeds: list[translora.Seed]
    source_path: Path
    target_path: Path
    source_tok: Any
    target_tok: Any


@dataclass
class Models:
    """The teacher (source + adapter, maybe a discriminator), the student, the generator."""

    teacher: Any
    discriminator: translora.Discriminator | None
    student: Any
    generator: Any
    generator_tok: Any
    generator_ctx: Any


def read_inputs(spec: LoRATransferSpec, ctx: RunContext) -> Inputs:
    """Steps 1-2: the source adapter and seeds; tokenizers (identical for `token` mode)."""
    adapter_uri = str(spec.source_adapter.uri)
    adapter_dir = ctx.resolve(adapter_uri)
    if not (adapter_dir / "adapter_config.json").exists():
        raise PermanentError(f"no PEFT adapter at {adapter_uri}", "AdapterNotFound")
    seeds = gather_seeds(spec, adapter_dir)
    source_path = ctx.resolve(str(spec.source_model.uri))
    target_path = ctx.resolve(str(spec.target_model.uri))
    source_tok, target_tok = load_tokenizer(source_path), load_tokenizer(target_path)
    if spec.distillation.mode == "token":
        translora.check_same_tokenizer(source_tok, target_tok, [s.prompt for s in seeds])
    return Inputs(adapter_uri, adapter_dir, seeds, source_path, target_path, source_tok, target_tok)


def load_teacher(
    spec: LoRATransferSpec, ctx: RunContext, inputs: Inputs
) -> tuple[Any, translora.Discriminator | None]:
    """Step 3: source base + source adapter, and the stored discriminator if asked for."""
    source_model = spec.source_model
    source = load_causal_lm(
        inputs.source_path, source_model.dtype, source_model.quantization, ctx.device
    )
    teacher = load_adapter(source, inputs.adapter_dir)
    discriminator = None
    if spec.synthesis.filter == "discriminator":
        discriminator = load_discriminator(teacher, inputs.source_tok, inputs.adapter_dir)
        if discriminator is None:
            ctx.reporter.log("no discriminator stored with the source adapter: running unfiltered")
    return teacher, discriminator


def load_models(spec: LoRATransferSpec, ctx: RunContext, inputs: Inputs) -> Models:
    """Steps 3-4: the teacher, the student on the target base, and the generator."""
    ctx.reporter.phase("load")
    teacher, discriminator = load_teacher(spec, ctx, inputs)
    target_model = spec.target_model
    target = load_causal_lm(
        inputs.target_path, target_model.dtype, target_model.quantization, ctx.device
    )
    student = attach_lora(target, spec.target_adapter, ctx.seed)
    check_adapter_strategy(spec, ctx.world)
    if spec.synthesis.generator is None:
        generator, generator_tok = student, inputs.target_tok
        generator_ctx: Any = student.disable_adapter()
    else:
        ref = spec.synthesis.generator
        path = ctx.resolve(str(ref.uri))
        generator = load_causal_lm(path, ref.dtype, ref.quantization, ctx.device)
        generator_tok, generator_ctx = load_tokenizer(path), nullcontext()
    return Models(teacher, discriminator, student, generator, generator_tok, generator_ctx)


def synthesize(
    spec: LoRATransferSpec, ctx: RunContext, inputs: Inputs, models: Models, state: RunState
) -> translora.SynthesisOutcome:
    """Step 5a: prompts from the generator, filtered by the discriminator (resumable)."""
    ctx.reporter.phase("synthesize")
    discriminator = models.discriminator
    with models.generator_ctx:
        return translora.synthesize(
            models.generator,
            models.generator_tok,
            inputs.seeds,
            spec.synthesis,
            ctx,
            state,
            accept=discriminator.accepts if discriminator else None,
            exclude={translora.normalise(s.prompt) for s in inputs.seeds},
            key="synthesis/transfer",
            seed=ctx.seed,
        )


def distill(
    spec: LoRATransferSpec,
    ctx: RunContext,
    inputs: Inputs,
    models: Models,
    state: RunState,
    kept: list[str],
    labels: list[str],
) -> Any:
    """Step 5c: train the student on the teacher's text (or its logits, `token` mode)."""
    ctx.reporter.phase("distill")
    target_tok = inputs.target_tok
    examples = encode_pairs(target_tok, kept, labels, spec.optimization.sequence_length)
    loss_fn: translora.LossFn = cross_entropy_loss
    if spec.distillation.mode == "token":
        loss_fn = translora.token_kl_loss(models.teacher, len(inputs.source_tok))
    return train_adapter(
        models.student, examples, spec.optimization, ctx, state,
        phase="distill", pad_id=target_tok.pad_token_id, seed=ctx.seed, loss_fn=loss_fn,
    )  # fmt: skip


def evaluate_transfer(
    spec: LoRATransferSpec,
    ctx: RunContext,
    inputs: Inputs,
    models: Models,
    outcome: translora.SynthesisOutcome,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Step 6 (with `evaluationData`): exact match of the three models, and the MMD."""
    assert spec.evaluation_data is not None
    ctx.reporter.phase("evaluate")
    prompts, refs = read_pairs(ctx.resolve(str(spec.evaluation_data.uri)), spec.evaluation_data)
    teacher, student = models.teacher, models.student
    scores = evaluate(
        {
            "source_score": (teacher, inputs.source_tok, nullcontext()),
            "target_base_score": (student, inputs.target_tok, student.disable_adapter()),
            "transferred_score": (student, inputs.target_tok, nullcontext()),
        },
        prompts,
        refs,
        spec,
    )
    return scores | {"metric": METRIC}, mmd_diagnostic(teacher, inputs.source_tok, prompts, outcome)


def save_output(
    spec: LoRATransferSpec,
    ctx: RunContext,
    inputs: Inputs,
    models: Models,
    kept: list[str],
    labels: list[str],
) -> dict[str, Any]:
    """The transferred adapter, seeds.jsonl and synthetic.jsonl; returns the lineage."""
    ctx.reporter.phase("save")
    models.student.save_pretrained(str(ctx.output_dir))
    write_jsonl(ctx.output_dir / translora.SEEDS_FILE, [asdict(s) for s in inputs.seeds])
    synthetic = [{"prompt": p, "completion": c} for p, c in zip(kept, labels, strict=True)]
    write_jsonl(ctx.output_dir / SYNTHETIC_FILE, synthetic)
    adapter_uri, generator = inputs.adapter_uri, spec.synthesis.generator
    filtered = models.discriminator is not None
    return {
        "sourceAdapter": adapter_uri,
        "sourceModel": str(spec.source_model.uri),
        "targetModel": str(spec.target_model.uri),
        "generator": str(generator.uri) if generator else None,
        "discriminator": f"{adapter_uri.rstrip('/')}/discriminator" if filtered else None,
        "filtered": filtered,
        "distillation": spec.distillation.mode,
        "seedsDigest": translora.seeds_digest(inputs.seeds),
        "syntheticDigest": translora.texts_digest(synthetic),
    }


def run(spec: LoRATransferSpec, ctx: RunContext) -> AlgorithmResult:
    """One Trans-LoRA transfer (see the module docstring for the order of work)."""
    state = RunState(ctx.checkpointer)
    inputs = read_inputs(spec, ctx)
    models = load_models(spec, ctx, inputs)
    outcome = synthesize(spec, ctx, inputs, models, state)
    ctx.reporter.phase("label")
    labels = label_with_teacher(models.teacher, inputs.source_tok, outcome.kept, spec, ctx, state)
    trained = distill(spec, ctx, inputs, models, state, outcome.kept, labels)
    results: dict[str, Any] = {
        "kept_samples": len(outcome.kept),
        "attempts": outcome.attempts,
        "acceptance_rate": outcome.acceptance_rate,
        "filtered": models.discriminator is not None,
    }
    metrics: dict[str, Any] = {
        "distill_loss_first": trained.first_loss,
        "distill_loss_final": trained.final_loss,
        "distill_steps": trained.steps,
        "seeds": len(inputs.seeds),
        "trainable_parameters": count_parameters(models.student)[0],
    }
    if spec.evaluation_data is not None:
        scores, mmd = evaluate_transfer(spec, ctx, inputs, models, outcome)
        results |= scores
        metrics |= mmd
    for name, value in {**results, **metrics}.items():
        if isinstance(value, int | float):
            ctx.reporter.metric(name, value)
    lineage = save_output(spec, ctx, inputs, models, outcome.kept, labels)
    return AlgorithmResult(results=results, lineage=lineage, metrics=metrics)
