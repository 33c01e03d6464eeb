"""Continual pre-training at CPU scale: re-warming, re-decaying, replay and the union run.

ALGORITHMS.md section 7 "Continual pre-training", issue 5 "Evidence". A tiny OPT model
is pre-trained by this script on D0 (grammar variant 0; 1% warmup, cosine to 0.1 of
the peak LR), then adapted to D1 with the real job (`cpt_job.run`) for each of:
constant eta_min, re-warm + re-decay with 0 / 5 / 25 / 50% compute-equivalent replay,
an infinite schedule continued from the pre-anneal checkpoint of a second base model
pre-trained with the infinite schedule, and a union run from scratch on D0 and D1.
Two shifts: weak (grammar variant 1: new words, shifted rule probabilities) and strong
(the grammar through a letter substitution, with the D0 tokenizer unchanged).

    PYTHONPATH=operator:jobs python benchmarks/cpt.py [--quick] [--workers 2]

Writes docs/benchmarks/cpt.json (raw figures) and docs/benchmarks/cpt.md (tables and
the comparison with the paper's directions).
"""

import argparse
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks"
REPLAYS = (0.0, 0.05, 0.25, 0.5)
INFINITE_REPLAY = {"weak": 0.05, "strong": 0.25}  # the paper's recommended rates
PAPER_TOLERANCE = 0.02  # "matches re-training": average loss within about 0.02


@dataclass(frozen=True)
class Setup:
    """Sizes of one benchmark configuration."""

    steps: int  # updates per dataset (pre-training and each adaptation)
    batch: int
    seq: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    lr: float
    val_sentences: int


FULL = Setup(steps=1000, batch=16, seq=64, hidden=64, layers=2, heads=4, ffn=256, vocab=512,
             lr=2e-3, val_sentences=800)  # fmt: skip
QUICK = Setup(steps=80, batch=8, seq=32, hidden=32, layers=2, heads=2, ffn=64, vocab=256,
              lr=3e-3, val_sentences=300)  # fmt: skip


# -- data and the initial model -----------------------------------------------------
def corpus(name: str, n: int) -> list[str]:
    from modelops_jobs.testing import tiny

    if name == "d0":
        return tiny.grammar_corpus(n, seed=0, variant=0)
    if name == "weak":
        return tiny.grammar_corpus(n, seed=1, variant=1)
    return tiny.substitute(tiny.grammar_corpus(n, seed=2, variant=0), seed=7)


def build_world(root: Path, setup: Setup) -> dict[str, Any]:
    """JSONL files with enough tokens for one pass per run, the tokenizer and the init."""
    from modelops_jobs.data import token_stream, write_jsonl
    from modelops_jobs.testing import tiny

    tokenizer = tiny.train_tokenizer(corpus("d0", 20_000), vocab_size=setup.vocab)
    need = setup.steps * setup.batch * setup.seq  # tokens one run of `steps` consumes
    sizes = {}
    for name in ("d0", "weak", "strong"):
        sample = corpus(name, 500)
        per_sentence = token_stream(tokenizer, sample).numel() / len(sample)
        n = math.ceil(1.03 * need / per_sentence) + setup.val_sentences
        texts = corpus(name, n)
        write_jsonl(root / f"{name}.jsonl", [{"text": t} for t in texts[: -setup.val_sentences]])
        val = [{"text": t} for t in texts[-setup.val_sentences :]]
        write_jsonl(root / f"{name}_val.jsonl", val)
        sizes[name] = {"sentences": n, "tokens_per_sentence": round(per_sentence, 2)}
    model = tiny.tiny_causal_lm(len(tokenizer), hidden=setup.hidden, layers=setup.layers,
                                heads=setup.heads, ffn=setup.ffn, max_positions=setup.seq,
                                seed=0)  # fmt: skip
    tiny.save_model_dir(model, tokenizer, root / "init")
    return {"tokens_per_dataset": need, "data": sizes}


# -- one run of the real job --------------------------------------------------------
@dataclass(frozen=True)
class Task:
    label: str
    model: str  # directory under root
    data: str  # d0 / weak / strong
    steps: int
    replay: float
    schedule: dict[str, Any]
    validation_new: str


def spec_for(root: Path, setup: Setup, task: Task) -> Any:
    from modelops_api.model_adaptation import ModelAdaptationSpec

    cpt: dict[str, Any] = {
        "replayRatio": task.replay,
        "schedule": task.schedule,
        "validationOld": {"uri": f"file://{root / 'd0_val.jsonl'}"},
        "validationNew": {"uri": f"file://{root / (task.validation_new + '_val.jsonl')}"},
    }
    if task.data != "d0":
        cpt["replayData"] = {"uri": f"file://{root / 'd0.jsonl'}"}
    return ModelAdaptationSpec.model_validate(
        {
            "model": {"uri": f"file://{root / task.model}"},
            "data": {"uri": f"file://{root / (task.data + '.jsonl')}"},
            "optimization": {
                "steps": task.steps,
                "learningRate": setup.lr,
                "batchSize": setup.batch,
                "sequenceLength": setup.seq,
                "checkpointEvery": 10**6,
            },
            "cpt": cpt,
            "output": {"uri": f"file://{root / 'versions'}"},
        }
    )


def init_worker() -> None:
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    from transformers import AutoModelForCausalLM, OPTForCausalLM  # noqa: F401 - warm imports


def execute(root: Path, setup: Setup, task: Task) -> dict[str, Any]:
    """Run one task with the real job; its results, curve and wall time."""
    from modelops_jobs.algorithms import cpt_job
    from modelops_jobs.context import RunContext

    out = root / task.label
    out.mkdir(parents=True)
    started, cpu_started = time.perf_counter(), time.process_time()
    outcome = cpt_job.run(spec_for(root, setup, task), RunContext(output_dir=out))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "label": task.label,
        "results": outcome.results,
        "curve": outcome.metrics["curve"],
        "lineage": outcome.lineage,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
    }


def run_all(root: Path, setup: Setup, tasks: list[Task], workers: int) -> dict[str, Any]:
    if workers <= 1:
        return {t.label: execute(root, setup, t) for t in tasks}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
        futures = [pool.submit(execute, root, setup, t) for t in tasks]
        return {t.label: f.result() for t, f in zip(tasks, futures, strict=True)}


def schedules(setup: Setup) -> dict[str, dict[str, Any]]:
    return {
        "cosine": {"kind": "rewarm_cosine", "warmupRatio": 0.01, "minLrRatio": 0.1},
        "constant": {"kind": "constant", "minLrRatio": 0.1},
        "infinite": {"kind": "infinite", "warmupRatio": 0.01, "minLrRatio": 0.1,
                     "cooldownRatio": 0.6, "constantLrRatio": 0.55, "annealRatio": 0.1},
    }  # fmt: skip


def plan(setup: Setup) -> tuple[list[Task], list[Task]]:
    """(pre-training tasks, adaptation tasks)."""
    s, n = schedules(setup), setup.steps
    bases = [
        Task("base-cosine", "init", "d0", n, 0.0, s["cosine"], "d0"),
        Task("base-infinite", "init", "d0", n, 0.0, s["infinite"], "d0"),
    ]
    runs = []
    for shift in ("weak", "strong"):
        runs.append(Task(f"{shift}/union", "init", shift, 2 * n, 0.5, s["cosine"], shift))
        runs.append(Task(f"{shift}/constant", "base-cosine", shift, n, 0.0, s["constant"], shift))
        for ratio in REPLAYS:
            label = f"{shift}/rewarm-{round(ratio * 100)}"
            runs.append(Task(label, "base-cosine", shift, n, ratio, s["cosine"], shift))
        inf = INFINITE_REPLAY[shift]
        runs.append(Task(f"{shift}/infinite-{round(inf * 100)}", "base-infinite", shift, n, inf,
                         s["infinite"], shift))  # fmt: skip
    return bases, runs


# -- analysis -------------------------------------------------------------------------
def loss_at(curve: list[dict[str, float]], fraction: float, key: str) -> float:
    """The curve's `key` at the point nearest `fraction` of the run."""
    last = curve[-1]["step"]
    return min(curve, key=lambda p: abs(p["step"] - fraction * last))[key]


def rows_for(shift: str, runs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """arm name -> the figures of one table row."""
    union = runs[f"{shift}/union"]
    out = {}
    for label, run in runs.items():
        if not label.startswith(shift + "/"):
            continue
        r, curve = run["results"], run["curve"]
        early = [p["old_loss"] for p in curve if p["step"] <= 0.05 * curve[-1]["step"]]
        out[label.split("/", 1)[1]] = {
            "old_loss": r["old_loss"],
            "new_loss": r["new_loss"],
            "avg_loss": r["avg_loss"],
            "forgetting": r["forgetting"],
            "old_loss_start": curve[0]["old_loss"],
            "old_loss_2pct": loss_at(curve, 0.02, "old_loss"),
            "old_loss_peak_5pct": max(early),
            "tokens": r["tokens"],
            "compute_vs_union": r["tokens"] / union["results"]["tokens"],
            "cpu_vs_union": run["cpu_seconds"] / union["cpu_seconds"],
            "cpu_seconds": run["cpu_seconds"],
            "wall_seconds": run["wall_seconds"],
        }
    return out


def verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def percent(ratio: float | None) -> str:
    return "none up to 50%" if ratio is None else f"{ratio:.0%}"


def least_matching_replay(arms: dict[str, dict[str, Any]]) -> float | None:
    """The least replay rate whose average loss is within the paper's 0.02 of the union's."""
    target = arms["union"]["avg_loss"] + PAPER_TOLERANCE
    matched = [x for x in REPLAYS if arms[f"rewarm-{round(x * 100)}"]["avg_loss"] <= target]
    return matched[0] if matched else None


def shift_comparison(shift: str, arms: dict[str, dict[str, Any]]) -> list[str]:
    """The paper's directions (ALGORITHMS.md section 7) for one shift, measured."""
    const, r0, union = arms["constant"], arms["rewarm-0"], arms["union"]
    replay_arms = [arms[f"rewarm-{round(x * 100)}"] for x in REPLAYS]
    olds = [a["old_loss"] for a in replay_arms]
    news = [a["new_loss"] for a in replay_arms]
    inf_name = next(name for name in arms if name.startswith("infinite"))
    inf, same = arms[inf_name], arms[f"rewarm-{inf_name.split('-')[1]}"]
    others = [const, *replay_arms[1:]]  # every arm but 0% replay (and the union)

    def series(values: list[float]) -> str:
        return " / ".join(f"{v:.3f}" for v in values)

    def rise(arm: dict[str, Any]) -> float:
        return arm["old_loss_peak_5pct"] - arm["old_loss_start"]

    return [
        f"**{shift.capitalize()} shift**",
        "",
        "- Constant eta_min forgets least and adapts worst. Against re-warming without "
        f"replay: D0 rise {const['forgetting']:+.3f} vs {r0['forgetting']:+.3f}, D1 loss "
        f"{const['new_loss']:.3f} vs {r0['new_loss']:.3f}: forgets less "
        f"{verdict(const['forgetting'] < r0['forgetting'])}, adapts worse "
        f"{verdict(const['new_loss'] > r0['new_loss'])}.",
        f"- 0% replay adapts best (D1 {r0['new_loss']:.3f}, best of the other arms "
        f"{min(a['new_loss'] for a in others):.3f}): "
        f"{verdict(r0['new_loss'] <= min(a['new_loss'] for a in others))}; forgets most "
        f"(D0 rise {r0['forgetting']:+.3f}, most of the arms "
        f"{max(a['forgetting'] for a in others):+.3f}): "
        f"{verdict(r0['forgetting'] >= max(a['forgetting'] for a in others))}. D0 loss right "
        f"after re-warming: {r0['old_loss_start']:.3f} at the start, {r0['old_loss_2pct']:.3f} "
        f"at 2% of the run, peak {r0['old_loss_peak_5pct']:.3f} in the first 5%.",
        f"- D0 loss falls monotonically with replay (0/5/25/50%: {series(olds)}): "
        f"{verdict(all(a >= b for a, b in itertools.pairwise(olds)))}; D1 loss rises slightly "
        f"({series(news)}): {verdict(all(a <= b for a, b in itertools.pairwise(news)))}.",
        f"- Union run from scratch (twice the tokens): avg {union['avg_loss']:.3f} "
        f"(D0 {union['old_loss']:.3f}, D1 {union['new_loss']:.3f}); least replay within "
        f"{PAPER_TOLERANCE} of it: {percent(least_matching_replay(arms))}; best CPT avg "
        f"{min(a['avg_loss'] for a in replay_arms):.3f}.",
        f"- Infinite schedule from the pre-anneal checkpoint ({inf_name}) vs re-warm at the "
        f"same replay: D0 rise in the first 5% {rise(inf):+.3f} vs {rise(same):+.3f} (smaller "
        f"{verdict(rise(inf) < rise(same))}); final avg {inf['avg_loss']:.3f} vs "
        f"{same['avg_loss']:.3f}.",
        "",
    ]


def comparisons(rows: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = [line for shift, arms in rows.items() for line in shift_comparison(shift, arms)]
    weak, strong = (least_matching_replay(rows[s]) for s in ("weak", "strong"))
    more = weak is not None and (strong is None or strong > weak)
    lines.append(
        "**Both shifts.** The strong shift needs more replay than the weak one for its "
        f"average loss to reach the union run's: weak {percent(weak)}, strong "
        f"{percent(strong)}: {verdict(more)}."
    )
    return lines


def table(arms: dict[str, dict[str, Any]]) -> list[str]:
    out = [
        "| run | D0 loss | D1 loss | avg | D0 rise | D0 start -> peak in first 5% "
        "| tokens | tokens vs union | CPU s | CPU vs union |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in arms.items():
        scratch = name == "union"  # a fresh model: no D0 loss to rise from
        rise = "n/a (scratch)" if scratch else f"{r['forgetting']:+.3f}"
        spike = "n/a" if scratch else f"{r['old_loss_start']:.3f} -> {r['old_loss_peak_5pct']:.3f}"
        out.append(
            f"| {name} | {r['old_loss']:.3f} | {r['new_loss']:.3f} | {r['avg_loss']:.3f} | "
            f"{rise} | {spike} | {r['tokens']:,} | {r['compute_vs_union']:.2f} | "
            f"{r['cpu_seconds']:.0f} | {r['cpu_vs_union']:.2f} |"
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    setup, machine, bases = report["setup"], report["machine"], report["pretraining"]
    lines = [
        "## Continual pre-training: re-warming, re-decaying and replay (CPU scale)",
        "",
        f"Machine: `{machine['platform']}`, {machine['cpus']} CPUs, torch {machine['torch']}; "
        f"{report['workers']} worker processes with 1 thread each. Wall time "
        f"{report['wall_seconds']:.0f} s, CPU time {report['cpu_seconds']:.0f} s (the CPUs were "
        "shared with other work while this ran, so wall times are upper bounds; CPU seconds "
        "are the fairer cost figure).",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Model: tiny OPT, {setup['layers']} layers, hidden {setup['hidden']}, {setup['heads']} "
        f"heads, FFN {setup['ffn']}, {report['parameters']:,} parameters; byte-level BPE "
        f"({setup['vocab']} tokens) trained on D0 only and unchanged across the shift. Each "
        f"dataset holds one pass of {report['tokens_per_dataset']:,} tokens ({setup['steps']} "
        f"updates of {setup['batch']} x {setup['seq']} tokens); peak LR {setup['lr']}; AdamW "
        "(0.9, 0.95), fresh per run. Losses: mean next-token cross-entropy on held-out D0 and D1.",
        "",
        "D0 = grammar variant 0. Weak shift: D1 = grammar variant 1 (new words, shifted rule "
        "probabilities). Strong shift: D1 = grammar variant 0 through a fixed letter "
        "substitution. Every adaptation starts from a base pre-trained on D0 with 1% warmup "
        f"and cosine to 0.1 x peak (D0 loss {bases['base-cosine']['new_loss']:.3f}), except "
        "the infinite run: it continues, without re-warming, from the pre-anneal checkpoint of "
        "a second base pre-trained with the infinite schedule (1% warmup, cosine cooldown over "
        "60% to 0.55 x peak, constant, linear anneal over the last 10%; annealed D0 loss "
        f"{bases['base-infinite']['new_loss']:.3f}). The union run trains a fresh model on "
        "D0 and D1 half and half for twice the updates, with the base's schedule. "
        "'tokens vs union' is the run's tokens over the union run's (the FLOPs ratio: same "
        "model, same sequence length); the base's pre-training, the other half of the union's "
        "compute, is not counted, as in the paper. 'D0 rise' is the D0 loss change over the run.",
        "",
    ]
    for shift in ("weak", "strong"):
        lines += [f"### {shift.capitalize()} shift", "", *table(report["rows"][shift]), ""]
    lines += ["### Against ALGORITHMS.md section 7", "", *report["comparison"], ""]
    lines += ["### Where the tiny setting differs", "", *report["notes"], ""]
    return "\n".join(lines)


NOTES = [
    "- Scale: a ~0.1M-parameter model on ~1M tokens per dataset of a ~40-word grammar, "
    "instead of 405M / 10B parameters on 300B tokens. Within one pass the grammar's loss "
    "floor is nearly reached, so giving up D1 tokens for replay costs little on D1, and a "
    "little replay restores D0 almost fully: replay looks cheaper here than in the paper.",
    "- The strong shift is a letter substitution read with the D0 tokenizer: D1 shares "
    "almost no tokens with D0 (its words fall apart into letters and rare merges), so "
    "without replay nothing in D1 keeps up the probability of D0's word tokens and the D0 "
    "loss explodes far beyond the paper's rise (3.56 from 2.44 on the Pile for English -> "
    "German, whose tokens overlap with English). Any replay removes most of it.",
    "- The union run here has as many D1 tokens as the 0%-replay run but spends them "
    "over a schedule twice as long from scratch; on the strong shift its D1 loss is lower "
    "than any CPT arm's, so no replay rate reaches its average within 0.02, unlike the "
    "paper's German runs where 25% replay matches the union. The direction (the strong "
    "shift needs more replay than the weak one) is what the benchmark checks.",
    "- One seed per arm; the paper averages the last 100 iterations on large validation "
    "sets. Differences of a few thousandths (the weak shift's replay arms) are within the "
    "noise of a single seed.",
    "- The infinite schedule is run with the paper's recommended replay for each shift (5% "
    "weak, 25% strong) so it can be compared with the re-warm arm at the same replay; the "
    "paper tested it only without a shift. Its continuation runs at eta_const = 0.55 x peak "
    "from the first update, so the D0 loss still rises early from the shift itself; what "
    "it avoids is the extra rise of re-warming to the full peak.",
]


def notes(rows: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """NOTES, plus an explanation where constant eta_min forgot more than re-warming."""
    out = list(NOTES)
    for shift, arms in rows.items():
        const, r0 = arms["constant"], arms["rewarm-0"]
        if const["forgetting"] >= r0["forgetting"]:
            out.append(
                f"- {shift.capitalize()} shift: constant eta_min ends with more D0 forgetting "
                "than re-warming without replay although its early D0 rise is much smaller "
                f"(peak {const['old_loss_peak_5pct']:.3f} vs {r0['old_loss_peak_5pct']:.3f}): "
                "the re-warmed run's D0 loss spikes and then recovers during the re-decay (the "
                "structure D0 shares with D1 is relearned at a falling LR), while the constant "
                "arm drifts slowly and never anneals. The paper's ordering holds early in the "
                "run here, not at its end."
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke-test configuration")
    parser.add_argument("--workers", type=int, default=2, help="parallel runs (1 thread each)")
    parser.add_argument("--out", type=Path, default=DOCS, help="where cpt.{json,md} go")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL
    init_worker()
    import torch

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cpt-bench-") as tmp:
        root = Path(tmp)
        world = build_world(root, setup)
        bases, adaptations = plan(setup)
        runs = run_all(root, setup, bases, args.workers)
        runs |= run_all(root, setup, adaptations, args.workers)
    wall = time.perf_counter() - started
    rows = {shift: rows_for(shift, runs) for shift in ("weak", "strong")}
    command = "PYTHONPATH=operator:jobs python benchmarks/cpt.py" + (
        " --quick" if args.quick else ""
    )
    if args.workers != 2:
        command += f" --workers {args.workers}"
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
        "command": command,
        "workers": args.workers,
        "setup": asdict(setup),
        "parameters": runs["base-cosine"]["results"]["parameters"],
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu_seconds(), 1),
        **world,
        "pretraining": {k: runs[k]["results"] for k in ("base-cosine", "base-infinite")},
        "rows": rows,
        "runs": runs,
        "comparison": comparisons(rows),
        "notes": notes(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpt.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "cpt.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished worker processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    sys.exit(main())
