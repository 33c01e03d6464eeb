"""Trans-LoRA: a transfer-ready LoRA fine-tune (ModelAdaptation `lora`) and a LoRATransfer
between two tiny bases built in this module.

The Llama-style bases differ in depth, width and tokenizer (source: 2 x 64, BPE 320;
target: 3 x 96, BPE 384). Both are pre-trained briefly on lists of noisy
"Shift: <letters>\\nAnswer:" prompts, "Copy" exercises and grammar sentences, so that
the target base, continuing a list of seed prompts, generates a mix of valid and
off-format task prompts. The task: shift each of six letters from a-h one step
forward, h wrapping to a (exact match).
"""

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from modelops_api.lora_transfer import LoRATransferResults, LoRATransferSpec
from modelops_api.model_adaptation import ModelAdaptationSpec
from modelops_jobs import tiny
from modelops_jobs.algorithms import lora_finetune, lora_training, translora, translora_job
from modelops_jobs.checkpoint import Checkpointer, seed_everything
from modelops_jobs.context import RunContext
from modelops_jobs.errors import PermanentError, Preempted
from modelops_jobs.modelio import load_causal_lm, load_tokenizer
from modelops_jobs.reporting import ProgressEvent, Reporter

TASK = "abcdefgh"
OTHER = "ijklmnopqrstuvwxyz"
VALID = re.compile(r"^Shift: [a-h]( [a-h]){5}\nAnswer:$")
PRETRAIN_STEPS = 300


def letters(rng: random.Random, n: int, alphabet: str) -> str:
    return " ".join(rng.choice(alphabet) for _ in range(n))


def shift_pair(rng: random.Random) -> dict[str, str]:
    body = letters(rng, 6, TASK)
    shifted = " ".join(TASK[(TASK.index(c) + 1) % len(TASK)] for c in body.split())
    return {"prompt": f"Shift: {body}\nAnswer:", "completion": f" {shifted}"}


def off_format_prompt(rng: random.Random) -> str:
    body = rng.choice([letters(rng, 6, OTHER), " ".join(str(rng.randrange(10)) for _ in range(6)),
                       letters(rng, rng.choice([3, 9]), TASK)])  # fmt: skip
    return f"Shift: {body}\nAnswer:"


def noisy_prompt(rng: random.Random) -> str:
    return (
        f"Shift: {letters(rng, 6, TASK)}\nAnswer:" if rng.random() < 0.5 else off_format_prompt(rng)
    )


def corpus(seed: int) -> list[str]:
    """Lists of noisy Shift prompts (35%), Copy exercises (55%), grammar (10%)."""
    rng = random.Random(seed)
    sentences = tiny.grammar_corpus(400, seed=seed)
    docs = []
    for _ in range(3000):
        r, k = rng.random(), rng.randint(2, 4)
        if r < 0.35:
            docs.append("\n\n".join(noisy_prompt(rng) for _ in range(k)))
        elif r < 0.9:
            bodies = [letters(rng, 6, TASK + "ijkl") for _ in range(k)]
            docs.append("\n\n".join(f"Copy: {b}\nAnswer: {b}" for b in bodies))
        else:
            docs.append(" ".join(rng.sample(sentences, 3)))
    return docs


def pretrain(model: Any, tokenizer: Any, docs: list[str], seed: int) -> None:
    """AdamW 2e-3, 30 warmup steps then linear decay (the copy skill emerges reliably)."""
    ids = [tokenizer(d + tokenizer.eos_token)["input_ids"][:48] for d in docs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 30) * (1 - step / PRETRAIN_STEPS)
    )
    generator = torch.Generator().manual_seed(seed)
    cpu = torch.device("cpu")
    for _ in range(PRETRAIN_STEPS):
        picks = torch.randint(len(ids), (32,), generator=generator)
        batch = [lora_training.Example(ids[i], ids[i]) for i in picks]
        loss = model(**lora_training.collate(batch, tokenizer.pad_token_id, cpu)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module", autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("translora")
    docs = corpus(0)
    source_tok = tiny.train_tokenizer(docs, 320)
    target_tok = tiny.train_tokenizer(corpus(1), 384)
    source = tiny.tiny_causal_lm(
        len(source_tok), "llama", hidden=64, layers=2, heads=4, ffn=256, seed=1
    )
    target = tiny.tiny_causal_lm(
        len(target_tok), "llama", hidden=96, layers=3, heads=4, ffn=384, seed=2
    )
    pretrain(source, source_tok, docs, seed=0)
    pretrain(target, target_tok, docs, seed=1)
    rng = random.Random(3)
    return {
        "root": root,
        "source": tiny.save_model_dir(source, source_tok, root / "source"),
        "target": tiny.save_model_dir(target, target_tok, root / "target"),
        "train": write_jsonl(root / "shift.jsonl", [shift_pair(rng) for _ in range(250)]),
        "heldout": write_jsonl(root / "heldout.jsonl", [shift_pair(rng) for _ in range(100)]),
    }


def finetune_spec(world: dict[str, Path], out: str, **overrides: Any) -> ModelAdaptationSpec:
    body: dict[str, Any] = {
        "strategy": "lora",
        "model": {"uri": f"file://{world['source']}"},
        "data": {"uri": f"file://{world['train']}"},
        "optimization": {"steps": 200, "learningRate": 3e-3, "batchSize": 16,
                         "sequenceLength": 64, "warmupRatio": 0.0},
        "lora": {"lora": {"rank": 8, "alpha": 16}, "transferReady": True,
                 "discriminatorEpochs": 5},
        "output": {"uri": f"file://{world['root'] / out}"},
    }  # fmt: skip
    for key, value in overrides.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return ModelAdaptationSpec.model_validate(body)


@pytest.fixture(scope="module")
def source_run(world: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    out = world["root"] / "adapter"
    out.mkdir()
    result = lora_finetune.run(finetune_spec(world, "adapter"), RunContext(output_dir=out, seed=0))
    return out, result.results


def transfer_spec(world: dict[str, Path], adapter: Path, **overrides: Any) -> LoRATransferSpec:
    body: dict[str, Any] = {
        "sourceModel": {"uri": f"file://{world['source']}"},
        "sourceAdapter": {"uri": f"file://{adapter}"},
        "targetModel": {"uri": f"file://{world['target']}"},
        "synthesis": {"samples": 150, "maxAttempts": 1500, "maxNewTokens": 24},
        "distillation": {"teacherMaxNewTokens": 12, "teacherBatchSize": 64},
        "optimization": {"steps": 150, "learningRate": 3e-3, "batchSize": 16,
                         "sequenceLength": 64, "warmupRatio": 0.0},
        "evaluationData": {"uri": f"file://{world['heldout']}"},
        "output": {"uri": "file:///unused"},
    }  # fmt: skip
    for key, value in overrides.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return LoRATransferSpec.model_validate({k: v for k, v in body.items() if v is not None})


def run_transfer(spec: LoRATransferSpec, out: Path) -> Any:
    out.mkdir(parents=True)
    return translora_job.run(spec, RunContext(output_dir=out, seed=0))


@pytest.fixture(scope="module")
def transfer_run(world: dict[str, Path], source_run: tuple[Path, dict[str, Any]]) -> Any:
    out = world["root"] / "transferred"
    return out, run_transfer(transfer_spec(world, source_run[0]), out)


# -- the source side ---------------------------------------------------------------
def test_finetune_writes_adapter_discriminator_and_seeds(
    source_run: tuple[Path, dict[str, Any]],
) -> None:
    out, results = source_run
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert (out / "adapter_model.safetensors").exists()
    assert (out / "discriminator" / "adapter_model.safetensors").exists()
    meta = json.loads((out / "discriminator" / "translora.json").read_text())
    assert meta["template"] == "{sample}\nIs the above question from {name} dataset?"
    assert meta["name"] == "shift"
    seeds = [json.loads(x) for x in (out / "seeds.jsonl").read_text().splitlines()]
    assert len(seeds) == 5 and all(VALID.match(s["prompt"]) for s in seeds)
    assert results["train_loss"] < 0.5 * results["train_loss_first"]
    assert results["eval_loss"] < 1.0
    assert results["trainable_parameters"] < 0.2 * results["parameters"]


def test_discriminator_separates_real_from_synthetic_prompts(
    world: dict[str, Path], source_run: tuple[Path, dict[str, Any]]
) -> None:
    out, results = source_run
    # Held-out real vs base-generated prompts: about half of what the base generates is a
    # valid task prompt, indistinguishable from a real one, so this is capped near 0.75.
    assert results["discriminator_accuracy"] > 0.6
    tokenizer = load_tokenizer(world["source"])
    teacher = translora_job.load_adapter(load_causal_lm(world["source"]), out)
    discriminator = translora_job.load_discriminator(teacher, tokenizer, out)
    assert discriminator is not None
    rng = random.Random(11)
    real = [json.loads(x)["prompt"] for x in world["heldout"].read_text().splitlines()][:60]
    fake = [off_format_prompt(rng) for _ in range(60)]
    verdicts = discriminator.accepts(real + fake)
    accuracy = (sum(verdicts[:60]) + 60 - sum(verdicts[60:])) / 120
    assert accuracy > 0.75


def test_finetune_resumes_after_sigterm_to_the_same_adapter(world: dict[str, Path]) -> None:
    overrides = {
        "optimization": {"steps": 12, "checkpointEvery": 5},
        "lora": {"transferReady": False},
    }

    def weights(out: str, checkpointer: Checkpointer | None = None, stop_at: int = 0) -> Any:
        seed_everything(0)  # what the runner does before every run
        ctx = RunContext(output_dir=world["root"] / out, seed=0)
        ctx.output_dir.mkdir(exist_ok=True)
        if checkpointer is not None:
            ctx.checkpointer = checkpointer

            def stop(event: ProgressEvent) -> None:
                if event.step == stop_at:
                    checkpointer.request_stop()

            ctx.reporter = Reporter(stop)
        lora_finetune.run(finetune_spec(world, out, **overrides), ctx)
        return load_file(ctx.output_dir / "adapter_model.safetensors")

    straight = weights("straight")
    checkpointer = Checkpointer(world["root"] / "ckpt", every=5)
    with pytest.raises(Preempted):
        weights("first", checkpointer, stop_at=7)
    resumed = weights("resumed", Checkpointer(world["root"] / "ckpt", every=5))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


# -- the transfer ------------------------------------------------------------------
def test_transfer_beats_the_untuned_target(transfer_run: tuple[Path, Any]) -> None:
    out, result = transfer_run
    results = LoRATransferResults.model_validate(result.results)
    assert results.filtered is True
    assert results.kept_samples == 150
    assert 0 < results.acceptance_rate < 1  # the discriminator rejected some candidates
    assert results.metric == "exact_match"
    assert results.target_base_score < 0.05
    assert results.source_score > 0.8
    assert results.transferred_score >= results.target_base_score + 0.4
    kept = [json.loads(x)["prompt"] for x in (out / "synthetic.jsonl").read_text().splitlines()]
    assert sum(bool(VALID.match(p)) for p in kept) / len(kept) > 0.6
    assert result.metrics["mmd_kept"] < result.metrics["mmd_candidates"]
    assert result.lineage["seedsDigest"].startswith("sha256:")
    assert result.lineage["syntheticDigest"].startswith("sha256:")


def test_transferred_adapter_loads_with_plain_peft(
    world: dict[str, Path], transfer_run: tuple[Path, Any]
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, result = transfer_run
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world["target"]), out)
    tokenizer = load_tokenizer(world["target"])
    rows = [json.loads(x) for x in world["heldout"].read_text().splitlines()]
    completions = translora.greedy_completions(
        model, tokenizer, [r["prompt"] for r in rows], 12, 64
    )
    score = translora.exact_match(completions, [r["completion"] for r in rows])
    assert score == pytest.approx(result.results["transferred_score"])


@pytest.mark.parametrize(
    "phase", ["synthesize", "distill"], ids=["in-synthesis", "in-distillation"]
)
def test_transfer_resumes_after_sigterm_to_the_same_adapter(
    world: dict[str, Path], source_run: tuple[Path, dict[str, Any]], phase: str
) -> None:
    spec = transfer_spec(world, source_run[0], synthesis={"samples": 80},
                         optimization={"steps": 12, "checkpointEvery": 5},
                         evaluationData=None)  # fmt: skip
    root = world["root"] / f"resume-{phase}"

    def adapter(name: str, checkpointer: Checkpointer | None = None) -> dict[str, torch.Tensor]:
        seed_everything(0)  # what the runner does before every run
        ctx = RunContext(output_dir=root / name, seed=0)
        ctx.output_dir.mkdir(parents=True)
        if checkpointer is not None:
            ctx.checkpointer = checkpointer

            def stop(event: ProgressEvent) -> None:
                if event.phase == phase and event.step is not None and name == "first":
                    checkpointer.request_stop()

            ctx.reporter = Reporter(stop)
        translora_job.run(spec, ctx)
        return load_file(ctx.output_dir / "adapter_model.safetensors")

    straight = adapter("straight")
    with pytest.raises(Preempted):
        adapter("first", Checkpointer(root / "ckpt", every=5))
    resumed = adapter("resumed", Checkpointer(root / "ckpt", every=5))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_without_a_discriminator_the_transfer_runs_unfiltered(
    world: dict[str, Path], source_run: tuple[Path, dict[str, Any]]
) -> None:
    bare = world["root"] / "bare-adapter"
    shutil.copytree(source_run[0], bare, ignore=shutil.ignore_patterns("discriminator"))
    spec = transfer_spec(world, bare, synthesis={"samples": 20}, optimization={"steps": 10},
                         evaluationData=None)  # fmt: skip
    result = run_transfer(spec, world["root"] / "unfiltered")
    assert result.results["filtered"] is False
    assert result.results["kept_samples"] == 20
    assert result.lineage["discriminator"] is None


def test_token_level_distillation_with_a_shared_tokenizer(
    world: dict[str, Path], source_run: tuple[Path, dict[str, Any]]
) -> None:
    spec = transfer_spec(world, source_run[0], targetModel={"uri": f"file://{world['source']}"},
                         synthesis={"samples": 30}, distillation={"mode": "token"},
                         optimization={"steps": 30}, evaluationData=None)  # fmt: skip
    result = run_transfer(spec, world["root"] / "token-kl")
    assert result.metrics["distill_loss_final"] < 0.5 * result.metrics["distill_loss_first"]


# -- bad input ---------------------------------------------------------------------
def no_seeds(world: dict[str, Path], adapter: Path) -> LoRATransferSpec:
    seedless = world["root"] / "seedless-adapter"
    if not seedless.exists():
        shutil.copytree(adapter, seedless, ignore=shutil.ignore_patterns("seeds.jsonl"))
    return transfer_spec(world, seedless)


BAD_INPUTS = {
    # the target (3 x 96) as the source base: the 2 x 64 adapter's shapes do not fit
    "AdapterMismatch": lambda w, a: transfer_spec(
        w, a, sourceModel={"uri": f"file://{w['target']}"}
    ),
    # OPT's MLP names on a Llama-style target
    "UnsupportedTargetModules": lambda w, a: transfer_spec(
        w, a, targetAdapter={"targetModules": ["fc1", "fc2"]}
    ),
    "NoSeeds": no_seeds,
    "TokenizerMismatch": lambda w, a: transfer_spec(w, a, distillation={"mode": "token"}),
    "AcceptanceTooLow": lambda w, a: transfer_spec(
        w, a, synthesis={"minAcceptanceRate": 0.99, "samples": 1000}
    ),
}  # fmt: skip


@pytest.mark.parametrize("reason", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_fails_with_its_reason(
    world: dict[str, Path], source_run: tuple[Path, dict[str, Any]], reason: str
) -> None:
    spec = BAD_INPUTS[reason](world, source_run[0])
    with pytest.raises(PermanentError) as failure:
        run_transfer(spec, world["root"] / f"bad-{reason}")
    assert failure.value.reason == reason


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_qlora_finetune_on_a_4bit_base(world: dict[str, Path]) -> None:
    out = world["root"] / "qlora"
    out.mkdir()
    spec = finetune_spec(world, "qlora", model={"quantization": "4bit"})
    ctx = RunContext(output_dir=out, seed=0, device=torch.device("cuda"))
    results = lora_finetune.run(spec, ctx).results
    assert results["train_loss"] < 0.5 * results["train_loss_first"]
    assert (out / "adapter_model.safetensors").exists()
    assert (out / "discriminator" / "adapter_model.safetensors").exists()


def test_duplicates_within_one_batch_are_kept_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: a stub generator returning 10 candidates, 2 distinct, kept all 10 (and
    the acceptance rate counted them); the docstring promises a candidate equal to one
    already kept is dropped, in the same batch too."""
    batch = ["what is 2+2?"] * 6 + ["name a colour"] * 4
    monkeypatch.setattr(translora, "generator_prefix", lambda tok, seeds: "prefix")
    monkeypatch.setattr(translora, "sample_candidates", lambda gen, tok, prefixes, syn: batch)
    from modelops_api.lora_transfer import SynthesisSpec
    from modelops_jobs.algorithms.lora_training import RunState

    synthesis = SynthesisSpec(samples=10, max_attempts=10, min_acceptance_rate=0.0)
    outcome = translora.synthesize(
        None,
        None,
        [translora.Seed("seed one"), translora.Seed("seed two")],
        synthesis,
        RunContext(output_dir=Path(".")),
        RunState(Checkpointer(None)),
        accept=None,
        exclude=set(),
        key="synthesis",
        seed=0,
    )
    assert outcome.kept == ["what is 2+2?", "name a colour"]
    assert outcome.attempts == 10 and outcome.acceptance_rate == pytest.approx(0.2)
