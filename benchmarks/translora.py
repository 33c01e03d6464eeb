"""Trans-LoRA at CPU scale: move a LoRA between two tiny bases with synthetic data.

ALGORITHMS.md section 7 "Trans-LoRA", issue 6 "Evidence". The script pre-trains two
tiny Llama-style bases that differ in depth, width and tokenizer (source: 2 layers x
64, BPE 320; target: 3 layers x 96, BPE 384), fine-tunes a transfer-ready LoRA on the
source for a task with a checkable answer (shift each of six letters from a-h one step
forward, h wrapping to a), then transfers it with the real jobs (`runner.execute` of a
ModelAdaptation and of LoRATransfers) and scores exact match on held-out task prompts.

Rows: source + adapter, target base, target + transferred adapter (discriminator
filter), and the ablations unfiltered, the 5 seeds only, and random text (grammar
sentences as prompts); filtered vs unfiltered also at shorter distillations.
Diagnostics: acceptance rate, the share of kept prompts that are valid task prompts
(known here because the task is synthetic), and MMD^2 between real and synthetic
prompts (kept vs all candidates).

The generator in this setting: the tiny target base cannot follow instructions. Its
pre-training corpus holds lists of "Shift: <body>\\nAnswer:" prompts whose bodies
are a scripted noisy mix (45% valid six letters from a-h, the rest other lengths,
other letters, words or digits), "Copy" exercises with answers (the bases learn to
copy, not to shift), and grammar sentences.
Prompted with seed prompts joined by blank lines, it continues the list: a learned
noisy sampler, reached through the same code path (few-shot prefix, `generate` with
sampling, cut at the blank line) an instruction-following generator would use.

    PYTHONPATH=operator:jobs python benchmarks/translora.py [--quick]

Writes docs/benchmarks/translora.json and docs/benchmarks/translora.md.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks"
VALID_PROMPT = re.compile(r"^Shift: [a-h]( [a-h]){5}\nAnswer:$")


@dataclass(frozen=True)
class Setup:
    pretrain_steps: int
    source_steps: int
    distill_steps: tuple[int, ...]
    """Distillation lengths swept; the last one is the headline configuration."""
    samples: int
    max_attempts: int
    train_size: int
    eval_size: int
    transfer_seeds: tuple[int, ...]


FULL = Setup(
    pretrain_steps=500,
    source_steps=200,
    distill_steps=(50, 100, 300),
    samples=250,
    max_attempts=3000,
    train_size=250,
    eval_size=200,
    transfer_seeds=(0, 1, 2),
)
QUICK = Setup(
    pretrain_steps=300,
    source_steps=150,
    distill_steps=(50, 150),
    samples=60,
    max_attempts=600,
    train_size=120,
    eval_size=60,
    transfer_seeds=(0,),
)


# -- the tiny world (modelops_jobs.shift_task, shared with the example fixtures) ----
def build_world(root: Path, setup: Setup) -> dict[str, Any]:
    from modelops_jobs import shift_task

    info = shift_task.build_bases(root / "source", root / "target", setup.pretrain_steps)
    shift_task.write_task_data(
        root / "shift.jsonl", root / "heldout.jsonl", setup.train_size, setup.eval_size
    )
    return info


# -- runs --------------------------------------------------------------------------
def execute(document: dict[str, Any]) -> dict[str, Any]:
    from modelops_jobs import runner

    outcome = runner.execute(document)
    if not outcome.result.ok:
        raise RuntimeError(
            f"{document['kind']} failed: {outcome.result.reason} {outcome.result.message}"
        )
    uri = outcome.result.artifact.uri
    manifest = json.loads((Path(uri.removeprefix("file://")) / "manifest.json").read_text())
    return manifest


def train_source(root: Path, setup: Setup) -> dict[str, Any]:
    spec = {
        "strategy": "lora",
        "model": {"uri": f"file://{root}/source"},
        "data": {"uri": f"file://{root}/shift.jsonl"},
        "optimization": {"steps": setup.source_steps, "learningRate": 3e-3, "batchSize": 16,
                         "sequenceLength": 64, "warmupRatio": 0.0},
        "lora": {"lora": {"rank": 8, "alpha": 16}, "transferReady": True, "seedExamples": 5,
                 "discriminatorEpochs": 5},
        "output": {"uri": f"file://{root}/adapter"},
    }  # fmt: skip
    document = {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelAdaptation",
                "metadata": {"name": "shift"}, "spec": spec, "run": {"number": 1}}  # fmt: skip
    return execute(document)


def transfer(root: Path, setup: Setup, filter_: str, steps: int, seed: int) -> dict[str, Any]:
    name = f"transfer-{filter_}-{steps}-{seed}"
    spec = {
        "seed": seed,
        "sourceModel": {"uri": f"file://{root}/source"},
        "sourceAdapter": {"uri": f"file://{root}/adapter/run-0001"},
        "targetModel": {"uri": f"file://{root}/target"},
        "synthesis": {"samples": setup.samples, "maxAttempts": setup.max_attempts,
                      "maxNewTokens": 24, "filter": filter_},
        "distillation": {"teacherMaxNewTokens": 12, "teacherBatchSize": 64},
        "optimization": {"steps": steps, "learningRate": 3e-3, "batchSize": 16,
                         "sequenceLength": 64, "warmupRatio": 0.0},
        "evaluationData": {"uri": f"file://{root}/heldout.jsonl"},
        "output": {"uri": f"file://{root}/{name}"},
    }  # fmt: skip
    document = {"apiVersion": "modelops.dev/v1alpha1", "kind": "LoRATransfer",
                "metadata": {"name": name}, "spec": spec}  # fmt: skip
    started = time.process_time()
    manifest = execute(document)
    kept = [json.loads(x)["prompt"] for x in (root / name / "synthetic.jsonl").open()]
    return {
        **manifest["results"],
        **{k: v for k, v in manifest["metrics"].items() if k.startswith("mmd")},
        "valid_share": sum(bool(VALID_PROMPT.match(p)) for p in kept) / len(kept),
        "cpu_s": time.process_time() - started,
    }


def direct_ablation(root: Path, setup: Setup, prompts: list[str], seed: int) -> float:
    """Distil the teacher's answers on fixed prompts (seeds only, random text), with the
    same target adapter and loop as the job; exact match on the held-out prompts."""
    from modelops_api.common import LoRAConfig, Optimization
    from modelops_jobs.algorithms import lora_training as ft
    from modelops_jobs.algorithms import translora, translora_job
    from modelops_jobs.checkpoint import Checkpointer, seed_everything
    from modelops_jobs.context import RunContext
    from modelops_jobs.modelio import load_causal_lm, load_tokenizer

    seed_everything(seed)
    source_tok, target_tok = load_tokenizer(root / "source"), load_tokenizer(root / "target")
    teacher = translora_job.load_adapter(load_causal_lm(root / "source"), root / "adapter/run-0001")
    student = ft.attach_lora(load_causal_lm(root / "target"), LoRAConfig(rank=8, alpha=16.0), seed)
    labels = translora.greedy_completions(teacher, source_tok, prompts, 12, 64)
    loop = Optimization(steps=setup.distill_steps[-1], learning_rate=3e-3, batch_size=16,
                        sequence_length=64, warmup_ratio=0.0)  # fmt: skip
    examples = ft.encode_pairs(target_tok, prompts, labels, 64)
    ctx = RunContext(output_dir=root)
    ft.train_adapter(student, examples, loop, ctx, ft.RunState(Checkpointer(None)),
                     phase="ablation", pad_id=target_tok.pad_token_id, seed=seed)  # fmt: skip
    rows = [json.loads(x) for x in (root / "heldout.jsonl").open()]
    completions = translora.greedy_completions(
        student, target_tok, [r["prompt"] for r in rows], 12, 64
    )
    return translora.exact_match(completions, [r["completion"] for r in rows])


# -- report ------------------------------------------------------------------------
def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def spread(values: list[float]) -> str:
    if len(values) < 2:
        return f"{mean(values):.3f}"
    return f"{mean(values):.3f} ± {statistics.stdev(values):.3f}"


def markdown(report: dict[str, Any], command: str) -> str:
    setup, rows, source = report["setup"], report["rows"], report["source"]
    main = str(setup["distill_steps"][-1])
    filtered, unfiltered = rows["filtered"][main], rows["unfiltered"][main]
    lines = [
        "## Trans-LoRA: transferring a LoRA between two tiny bases (CPU scale)",
        "",
        f"Machine: `{report['machine']['platform']}`, {report['machine']['cpus']} CPUs, "
        f"torch {report['machine']['torch']}, {report['machine']['threads']} thread. "
        f"Command: `{command}` ({report['wall_seconds']:.0f} s wall, "
        f"{report['cpu_seconds']:.0f} s CPU).",
        "",
        "Bases, both pre-trained by the script: source Llama-style 2 layers x 64, byte-level "
        f"BPE 320 ({report['world']['source_parameters']:,} parameters); target Llama-style "
        f"3 layers x 96, its own BPE 384 ({report['world']['target_parameters']:,} "
        "parameters). Task: shift each of six letters from a-h one step forward (h -> a), "
        f"exact match on {setup['eval_size']} held-out prompts. Source LoRA r=8 trained on "
        f"{setup['train_size']} task samples (a tenth held out); its discriminator's "
        "held-out accuracy (real vs base-generated prompts) is "
        f"{source['discriminatorAccuracy']:.3f}. Each "
        f"transfer keeps {setup['samples']} synthetic prompts and distils them with "
        "sequence-level cross-entropy into a fresh r=8 LoRA on the target; mean ± sd over "
        f"transfer seeds {list(setup['transfer_seeds'])}.",
        "",
        f"| model (distillation: {main} steps) | exact match |",
        "|---|---|",
        f"| source base + source LoRA | {report['sourceScore']:.3f} |",
        f"| target base alone | {report['targetBaseScore']:.3f} |",
        f"| target + transferred LoRA (filtered) | {spread(filtered['score'])} |",
        f"| ablation: unfiltered synthetic prompts | {spread(unfiltered['score'])} |",
        f"| ablation: the 5 seeds only | {spread(rows['seeds_only']['score'])} |",
        f"| ablation: random text (grammar sentences) | {spread(rows['random_text']['score'])} |",
        "",
        "Filtered vs unfiltered synthetic data at shorter distillation (same prompts budget):",
        "",
        "| distillation steps | filtered | unfiltered |",
        "|---|---|---|",
    ]
    for steps in setup["distill_steps"]:
        f_row, u_row = rows["filtered"][str(steps)], rows["unfiltered"][str(steps)]
        lines.append(f"| {steps} | {spread(f_row['score'])} | {spread(u_row['score'])} |")
    lines += [
        "",
        "| synthetic set | acceptance rate | attempts | valid task prompts kept | "
        "MMD² to real prompts |",
        "|---|---|---|---|---|",
    ]
    for name, row in (("filtered", filtered), ("unfiltered", unfiltered)):
        lines.append(
            f"| {name} | {mean(row['acceptance_rate']):.3f} | {mean(row['attempts']):.0f} | "
            f"{mean(row['valid_share']):.3f} | {mean(row['mmd']):.4f} |"
        )
    ratio = mean(filtered["score"]) / max(report["sourceScore"], 1e-9)
    lines += [
        "",
        f"Ratios: transferred / source = {ratio:.2f}; transferred - target base = "
        f"{mean(filtered['score']) - report['targetBaseScore']:+.3f}; MMD² filtered / "
        f"unfiltered = {mean(filtered['mmd']) / mean(unfiltered['mmd']):.2f}.",
        "",
        "Against ALGORITHMS.md section 7 (Trans-LoRA):",
    ]
    lines += [f"- {line}" for line in report["verdicts"]]
    lines += [
        "",
        "What the generator is here: the tiny target base continuing a seed-formatted prefix "
        "(three of the five seed prompts, joined by blank lines). It cannot read "
        "instructions; it imitates the noisy 'Shift:' prompt lists of its pre-training "
        "corpus (45% valid bodies there), "
        "through the same code path an instruction-following generator would use (few-shot "
        "prompt, sampled `generate`, the reply up to the blank line). The discriminator "
        "shares the source base (the paper uses a separate LLM) and is trained for 5 epochs "
        "rather than 1. About half of what these bases generate is a valid task prompt "
        f"({mean(unfiltered['valid_share']):.0%} of the unfiltered set), indistinguishable "
        "from a real one, so the discriminator's held-out accuracy is capped near 0.75, "
        "well below the paper's >90%; it still raises the share of valid kept prompts and "
        "lowers the MMD. The task is easy for the target once it has the copy skill from "
        "pre-training, so with enough distillation steps unfiltered data catches up: here "
        "filtering buys speed of learning more than a final gap.",
        "",
    ]
    return "\n".join(lines)


def verdicts(report: dict[str, Any]) -> list[str]:
    setup, rows = report["setup"], report["rows"]
    main = str(setup["distill_steps"][-1])
    f, u = mean(rows["filtered"][main]["score"]), mean(rows["unfiltered"][main]["score"])
    s, r = mean(rows["seeds_only"]["score"]), mean(rows["random_text"]["score"])
    src, base = report["sourceScore"], report["targetBaseScore"]
    mmd_f, mmd_u = mean(rows["filtered"][main]["mmd"]), mean(rows["unfiltered"][main]["mmd"])
    gaps = {
        steps: mean(rows["filtered"][str(steps)]["score"])
        - mean(rows["unfiltered"][str(steps)]["score"])
        for steps in setup["distill_steps"]
    }
    best = max(gaps, key=lambda k: gaps[k])

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return [
        f"transferred >= source LoRA: {f:.3f} vs {src:.3f}, {mark(f >= src)}",
        f"transferred > target base: {f:.3f} vs {base:.3f}, {mark(f > base)}",
        f"filtered > unfiltered at {main} steps: {f:.3f} vs {u:.3f}, {mark(f > u)}; "
        f"largest gap {gaps[best]:+.3f} at {best} steps",
        f"unfiltered > seeds only: {u:.3f} vs {s:.3f}, {mark(u > s)}",
        f"seeds only ≈ random text: {s:.3f} vs {r:.3f}, {mark(abs(s - r) <= 0.1)}",
        f"MMD lower after filtering: {mmd_f:.4f} vs {mmd_u:.4f}, {mark(mmd_f < mmd_u)}",
    ]


def sweep(root: Path, setup: Setup, filter_: str) -> dict[str, dict[str, list[float]]]:
    """Transfers for each distillation length and seed, as lists per figure."""
    out: dict[str, dict[str, list[float]]] = {}
    for steps in setup.distill_steps:
        runs = [transfer(root, setup, filter_, steps, seed) for seed in setup.transfer_seeds]
        out[str(steps)] = {
            "score": [r["transferredScore"] for r in runs],
            "source_score": [r["sourceScore"] for r in runs],
            "target_base_score": [r["targetBaseScore"] for r in runs],
            "acceptance_rate": [r["acceptanceRate"] for r in runs],
            "attempts": [r["attempts"] for r in runs],
            "valid_share": [r["valid_share"] for r in runs],
            "mmd": [r["mmd_kept"] for r in runs],
            "mmd_all_candidates": [r["mmd_candidates"] for r in runs],
            "cpu_s": [r["cpu_s"] for r in runs],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run for development")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the models here")
    args = parser.parse_args()
    setup = QUICK if args.quick else FULL
    os.environ.setdefault("MODELOPS_THREADS", "1")  # tiny models: threads only add overhead
    torch.set_num_threads(int(os.environ["MODELOPS_THREADS"]))
    started, cpu_started = time.time(), time.process_time()
    from modelops_jobs import tiny

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        world = build_world(root, setup)
        source = train_source(root, setup)
        rows: dict[str, Any] = {
            "filtered": sweep(root, setup, "discriminator"),
            "unfiltered": sweep(root, setup, "none"),
        }
        seeds = [json.loads(x)["prompt"] for x in (root / "adapter/run-0001/seeds.jsonl").open()]
        random_text = tiny.grammar_corpus(setup.samples, seed=11)
        rows["seeds_only"] = {"score": [direct_ablation(root, setup, seeds, s)
                                        for s in setup.transfer_seeds]}  # fmt: skip
        rows["random_text"] = {"score": [direct_ablation(root, setup, random_text, s)
                                         for s in setup.transfer_seeds]}  # fmt: skip
    first = rows["filtered"][str(setup.distill_steps[-1])]
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "setup": asdict(setup),
        "world": world,
        "source": source["results"],
        "sourceScore": first["source_score"][0],
        "targetBaseScore": first["target_base_score"][0],
        "rows": rows,
        "wall_seconds": time.time() - started,
        "cpu_seconds": time.process_time() - cpu_started,
    }
    report["verdicts"] = verdicts(report)
    command = "PYTHONPATH=operator:jobs python benchmarks/translora.py" + (
        " --quick" if args.quick else ""
    )
    out = DOCS if not args.quick else Path(tempfile.gettempdir()) / "translora-quick"
    out.mkdir(parents=True, exist_ok=True)
    (out / "translora.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    (out / "translora.md").write_text(markdown(report, command))
    print(markdown(report, command), file=sys.stderr)


if __name__ == "__main__":
    main()
