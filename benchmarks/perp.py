"""PERP on a CPU-sized model: does retraining a tiny subset recover a pruned LM, and at what cost?

The script trains its own tiny OPT-style LM on the standard library's docstrings (held-out
docstrings for perplexity), prunes its block linears (magnitude; 50% and 70% unstructured,
and 2:4), and retrains each subset for the same number of steps with the job's own
training loop (`perp_train.train_causal_lm`) and merge (`perp_peft.merge`). Baselines in the
same run: masked full fine-tuning with the same steps, and the dense model trained the
same extra steps. It also reports Wanda and SparseGPT at 50% (before and after PERP),
block-wise reconstruction (per-block MSE), and the cost of PERP against full fine-tuning
(step time, peak memory). Writes docs/benchmarks/perp.json and docs/benchmarks/perp.md.

    PYTHONPATH=operator:jobs python benchmarks/perp.py           # full run (~10 min, 2 cores)
    PYTHONPATH=operator:jobs python benchmarks/perp.py --quick   # smoke run (~1 min)
"""

import argparse
import copy
import ctypes
import gc
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
from pathlib import Path
from typing import Any

import torch

from modelops_api.common import LoRAConfig, Optimization
from modelops_api.prune_retrain import PruneRetrainSpec, pattern_nm
from modelops_jobs import data
from modelops_jobs.algorithms import perp_eval, perp_peft, perp_train, pruning, pruning_driver
from modelops_jobs.checkpoint import seed_everything
from modelops_jobs.context import RunContext
from modelops_jobs.reporting import ProgressEvent, Reporter
from modelops_jobs.testing import tiny

FULL = {
    "vocab": 768,
    "hidden": 96,
    "layers": 3,
    "heads": 4,
    "ffn": 384,
    "seq": 64,
    "pretrain_steps": 2400,
    "pretrain_lr": 3e-3,
    "batch": 16,
    "steps": 200,
    "retrain_batch": 16,
    "peft_lr": 1e-2,
    "full_lr": 1e-3,
    "rank": 4,
    "eval_windows": 160,
    "calibration": 32,
}
QUICK = {
    **FULL,
    "vocab": 512,
    "hidden": 64,
    "layers": 2,
    "ffn": 256,
    "pretrain_steps": 300,
    "steps": 40,
    "eval_windows": 48,
    "calibration": 16,
}
SETTINGS = [("unstructured", 0.5), ("unstructured", 0.7), ("2:4", 0.5)]
SUBSETS = {
    "biases+norms": ["biases", "norms"],
    "+head LoRA": ["biases", "norms", "head"],
    "MaskLoRA": ["biases", "norms", "head", "masklora"],
    "ScaleLoRA": ["biases", "norms", "head", "scalelora"],
    "lora_prune": ["biases", "norms", "head", "lora_prune"],
    "plain LoRA (merged)": ["biases", "norms", "head", "lora"],
    "masked full FT": [],
}


# -- memory: peak RSS of one phase (Linux: /proc/self/clear_refs resets the high-water mark)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def start_peak() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _rss_kib("VmRSS:")


def peak_increase_bytes(baseline_kib: int) -> int:
    return max(0, _rss_kib("VmHWM:") - baseline_kib) * 1024


# -- model and data -----------------------------------------------------------------


def build_corpus(cfg: dict[str, Any]) -> tuple[Any, torch.Tensor, torch.Tensor]:
    texts = tiny.stdlib_docstrings()
    held_out = texts[::10]
    train = [t for i, t in enumerate(texts) if i % 10]
    tokenizer = tiny.train_tokenizer(train, cfg["vocab"])
    train_windows = data.lm_windows(data.token_stream(tokenizer, train), cfg["seq"])
    eval_windows = data.lm_windows(
        data.token_stream(tokenizer, held_out), cfg["seq"], cfg["eval_windows"]
    )
    return tokenizer, train_windows, eval_windows


def pretrain(
    cfg: dict[str, Any], model: torch.nn.Module, windows: torch.Tensor, eval_windows: torch.Tensor
) -> list[dict[str, float]]:
    """AdamW, 2% warmup, cosine to 10%; returns the held-out perplexity curve."""
    steps, lr = cfg["pretrain_steps"], cfg["pretrain_lr"]
    warmup = max(1, steps // 50)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(0)
    curve = []
    started = time.monotonic()
    for step in range(steps):
        model.train()
        ids = torch.randint(0, windows.shape[0], (cfg["batch"],), generator=generator)
        loss = model(input_ids=windows[ids], labels=windows[ids]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % max(1, steps // 6) == 0 or step + 1 == steps:
            ppl = perp_eval.perplexity(model, eval_windows, 32)
            curve.append(
                {"step": step + 1, "perplexity": ppl, "seconds": time.monotonic() - started}
            )
            print(f"  pretrain step {step + 1}/{steps}: held-out ppl {ppl:.2f}", file=sys.stderr)
    model.eval()
    return curve


def spec_for(cfg: dict[str, Any], subset: list[str], lr: float, full: bool) -> PruneRetrainSpec:
    return PruneRetrainSpec.model_validate(
        {
            "model": {"uri": "file:///unused"},
            "output": {"uri": "file:///unused-out"},
            "retrain": {
                "subset": subset or ["biases"],
                "fullFinetune": full,
                "lora": {"rank": cfg["rank"], "alpha": 2 * cfg["rank"]},
                "optimization": Optimization(
                    steps=cfg["steps"],
                    learning_rate=lr,
                    batch_size=cfg["retrain_batch"],
                    sequence_length=cfg["seq"],
                    warmup_ratio=0.1,
                ).to_wire(),
            },
        }
    )


def retrain(
    cfg: dict[str, Any],
    model: torch.nn.Module,
    masks: dict[str, torch.Tensor],
    nm: tuple[int, int] | None,
    subset: list[str],
    windows: torch.Tensor,
    eval_windows: torch.Tensor,
) -> dict[str, Any]:
    """One retraining run with the job's loop; perplexity before and after the merge."""
    seed_everything(0)
    full = not subset
    layers = pruning.prunable_layers(model)
    total = sum(p.numel() for p in model.parameters())
    if full:
        plan = perp_peft.enable_full_finetune(model, layers, masks)
    else:
        plan = perp_peft.select_subset(
            model, subset, layers, masks, LoRAConfig(rank=cfg["rank"], alpha=2 * cfg["rank"])
        )
    trainable = sum(p.numel() for _, p in perp_peft.trainable_parameters(model))
    spec = spec_for(cfg, subset, cfg["full_lr"] if full else cfg["peft_lr"], full)
    ctx = RunContext(output_dir=Path("."), reporter=Reporter())
    baseline = start_peak()
    started = time.monotonic()
    perp_train.train_causal_lm(model, plan, layers, masks, windows, spec, ctx)
    seconds = time.monotonic() - started
    peak = peak_increase_bytes(baseline)
    unmerged = perp_eval.perplexity(model, eval_windows, 32)
    densified = perp_peft.merge(model, plan)
    report = pruning.verify_masks(pruning.prunable_layers(model), masks, nm) if masks else None
    return {
        "trainable": trainable,
        "trainable_share": trainable / total,
        "unmerged_perplexity": unmerged,
        "retrained_perplexity": perp_eval.perplexity(model, eval_windows, 32),
        "sparsity_after_merge": report.sparsity if report else 0.0,
        "mask_preserved": bool(report and report.mask_preserved and report.pattern_holds),
        "dense_after_merge": bool(densified),
        "seconds": seconds,
        "step_ms": 1000 * seconds / cfg["steps"],
        "peak_rss_increase_bytes": peak,
        "optimizer_state_bytes": trainable * 4 * 4,
    }


def prune(
    cfg: dict[str, Any],
    dense: torch.nn.Module,
    criterion: str,
    pattern: str,
    sparsity: float,
    calibration: torch.Tensor,
) -> tuple[torch.nn.Module, dict]:
    model = copy.deepcopy(dense)
    config = pruning.PruneConfig(criterion=criterion, sparsity=sparsity, nm=pattern_nm(pattern))
    masks = pruning_driver.prune_model(model, pruning.prunable_layers(model), config, calibration)
    return model, masks


def gap(dense: float, pruned: float, retrained: float) -> float:
    return (pruned - retrained) / (pruned - dense)


# -- the run: pre-train here, retrain in a pool of single-threaded worker processes ------

_WORKER: dict[str, Any] = {}


def _init_worker(shared_path: str, threads: int) -> None:
    torch.set_num_threads(threads)
    shared = torch.load(shared_path, weights_only=False)
    cfg = shared["cfg"]
    dense = tiny.tiny_causal_lm(
        shared["vocab_size"],
        "opt",
        hidden=cfg["hidden"],
        layers=cfg["layers"],
        heads=cfg["heads"],
        ffn=cfg["ffn"],
        max_positions=cfg["seq"],
    )
    dense.load_state_dict(shared["dense_state"])
    dense.eval()
    _WORKER.update(shared, dense=dense, pruned={})


def _pruned(criterion: str, pattern: str, sparsity: float) -> tuple[torch.nn.Module, dict, float]:
    """The pruned model of this setting (pruned once per worker) and its perplexity."""
    key = (criterion, pattern, sparsity)
    if key not in _WORKER["pruned"]:
        started = time.monotonic()
        model, masks = prune(
            _WORKER["cfg"], _WORKER["dense"], criterion, pattern, sparsity, _WORKER["calibration"]
        )
        seconds = time.monotonic() - started
        ppl = perp_eval.perplexity(model, _WORKER["eval_windows"], 32)
        _WORKER["pruned"][key] = (model, masks, ppl, seconds)
    model, masks, ppl, seconds = _WORKER["pruned"][key]
    return copy.deepcopy(model), masks, ppl, seconds


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """One table entry, computed in a worker."""
    cfg, windows, eval_windows = _WORKER["cfg"], _WORKER["windows"], _WORKER["eval_windows"]
    if task["kind"] == "extra":
        return retrain(cfg, copy.deepcopy(_WORKER["dense"]), {}, None, [], windows, eval_windows)
    if task["kind"] == "reconstruction":
        return reconstruction_demo(cfg, _WORKER["dense"], _WORKER["calibration"], eval_windows)
    model, masks, pruned_ppl, prune_seconds = _pruned(
        task["criterion"], task["pattern"], task["sparsity"]
    )
    print(
        f"  {task['criterion']} {task['pattern']} {task['sparsity']:.0%}: {task['subset']}",
        file=sys.stderr,
        flush=True,
    )
    out = retrain(
        cfg,
        model,
        masks,
        pattern_nm(task["pattern"]),
        SUBSETS[task["subset"]],
        windows,
        eval_windows,
    )
    dense_ppl = _WORKER["dense_perplexity"]
    return {
        **task,
        "dense_perplexity": dense_ppl,
        "pruned_perplexity": pruned_ppl,
        "prune_seconds": prune_seconds,
        "gap_recovered": gap(dense_ppl, pruned_ppl, out["retrained_perplexity"]),
        **out,
    }


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished workers."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke configuration")
    parser.add_argument("--out", default="docs/benchmarks", help="directory for perp.{json,md}")
    parser.add_argument("--workers", type=int, default=2, help="retraining processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--render", metavar="JSON", help="only re-render perp.md from a JSON")
    args = parser.parse_args()
    if args.render:
        (Path(args.out) / "perp.md").write_text(markdown(json.loads(Path(args.render).read_text())))
        return
    cfg = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    seed_everything(0)
    wall = time.monotonic()
    load_start = os.getloadavg()

    print("corpus and tokenizer", file=sys.stderr)
    tokenizer, windows, eval_windows = build_corpus(cfg)
    dense = tiny.tiny_causal_lm(
        len(tokenizer),
        "opt",
        hidden=cfg["hidden"],
        layers=cfg["layers"],
        heads=cfg["heads"],
        ffn=cfg["ffn"],
        max_positions=cfg["seq"],
    )
    print("pretraining", file=sys.stderr)
    curve = pretrain(cfg, dense, windows, eval_windows)
    pretrain_seconds = time.monotonic() - wall
    dense_ppl = perp_eval.perplexity(dense, eval_windows, 32)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(windows.shape[0], generator=generator)
    calibration = windows[order[: cfg["calibration"]]]

    tasks: list[dict[str, Any]] = [{"kind": "extra"}, {"kind": "reconstruction"}]
    for pattern, sparsity in SETTINGS:
        for label in SUBSETS:
            tasks.append(
                {
                    "kind": "row",
                    "criterion": "magnitude",
                    "pattern": pattern,
                    "sparsity": sparsity,
                    "subset": label,
                }
            )
    for criterion in ("wanda", "sparsegpt"):
        tasks.append(
            {
                "kind": "row",
                "criterion": criterion,
                "pattern": "unstructured",
                "sparsity": 0.5,
                "subset": "MaskLoRA",
            }
        )
    with tempfile.TemporaryDirectory() as tmp:
        shared_path = str(Path(tmp) / "shared.pt")
        torch.save(
            {
                "cfg": cfg,
                "vocab_size": len(tokenizer),
                "dense_state": dense.state_dict(),
                "windows": windows,
                "eval_windows": eval_windows,
                "calibration": calibration,
                "dense_perplexity": dense_ppl,
            },
            shared_path,
        )
        print(f"retraining: {len(tasks)} runs on {args.workers} workers", file=sys.stderr)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            args.workers, context, _init_worker, (shared_path, args.threads)
        ) as pool:
            done = list(pool.map(run_task, tasks))

    rows = [
        r
        for t, r in zip(tasks, done, strict=True)
        if t["kind"] == "row" and r["criterion"] == "magnitude"
    ]
    criteria = [
        r
        for t, r in zip(tasks, done, strict=True)
        if t["kind"] == "row"
        and r["subset"] == "MaskLoRA"
        and r["pattern"] == "unstructured"
        and r["sparsity"] == 0.5
    ]
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "command": "PYTHONPATH=operator:jobs python benchmarks/perp.py"
        + (" --quick" if args.quick else ""),
        "workers": args.workers,
        "threads": args.threads,
        "config": cfg,
        "parameters": sum(p.numel() for p in dense.parameters()),
        "embedding_parameters": dense.get_input_embeddings().weight.numel(),
        "pretrain_curve": curve,
        "pretrain_seconds": pretrain_seconds,
        "dense_perplexity": dense_ppl,
        "dense_extra_steps": done[0],
        "rows": rows,
        "criteria": criteria,
        "reconstruction": done[1],
        "wall_seconds": time.monotonic() - wall,
        "cpu_seconds": cpu_seconds(),
        "load_average_start_end": [load_start, os.getloadavg()],
    }
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "perp.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "perp.md").write_text(markdown(results))
    print(
        f"wrote {out_dir}/perp.json and perp.md in {results['wall_seconds']:.0f}s", file=sys.stderr
    )


def reconstruction_demo(
    cfg: dict[str, Any],
    dense: torch.nn.Module,
    calibration: torch.Tensor,
    eval_windows: torch.Tensor,
) -> dict[str, Any]:
    """Wanda 50%, then block-wise reconstruction (MaskLoRA + biases + norms) on calibration."""
    print("reconstruction mode (Wanda 50%)", file=sys.stderr)
    seed_everything(0)
    dense_blocks = [copy.deepcopy(b) for b in pruning.find_blocks(dense)]
    model, masks = prune(cfg, dense, "wanda", "unstructured", 0.5, calibration)
    pruned_ppl = perp_eval.perplexity(model, eval_windows, 32)
    layers = pruning.prunable_layers(model)
    subset = ["biases", "norms", "masklora"]
    plan = perp_peft.select_subset(
        model,
        subset,
        layers,
        masks,
        LoRAConfig(rank=cfg["rank"], alpha=2 * cfg["rank"]),
        train_head=False,
    )
    perp_train.freeze_outside_blocks(model)
    losses: dict[int, list[float]] = {}
    steps = cfg["steps"] // 2

    def sink(event: ProgressEvent) -> None:
        if event.step is not None and event.loss is not None:
            losses.setdefault((event.step - 1) // steps, []).append(event.loss)

    spec = spec_for(cfg, subset, cfg["peft_lr"], False)
    spec = spec.model_copy(
        update={
            "retrain": spec.retrain.model_copy(
                update={
                    "optimization": spec.retrain.optimization.model_copy(
                        update={"steps": steps, "batch_size": 8}
                    )
                }
            )
        }
    )
    ctx = RunContext(output_dir=Path("."), reporter=Reporter(sink))
    perp_train.train_reconstruction(model, dense_blocks, calibration, spec, ctx)
    perp_peft.merge(model, plan)
    return {
        "criterion": "wanda",
        "sparsity": 0.5,
        "calibration_windows": len(calibration),
        "steps_per_block": steps,
        "block_mse": [{"block": b, "first": v[0], "last": v[-1]} for b, v in losses.items()],
        "pruned_perplexity": pruned_ppl,
        "reconstructed_perplexity": perp_eval.perplexity(model, eval_windows, 32),
    }


# -- the Markdown fragment ------------------------------------------------------------


def markdown(r: dict[str, Any]) -> str:
    cfg, m = r["config"], r["machine"]
    extra = r["dense_extra_steps"]
    lines = [
        "## PERP: pruning + parameter-efficient retraining (PruneRetrain)",
        "",
        f"Machine: `{m['platform']}`, {m['cpus']} CPUs, torch {m['torch']}, Python {m['python']}. "
        f"Command: `{r['command']}` ({r['wall_seconds']:.0f} s wall: pre-training "
        f"{r['pretrain_seconds']:.0f} s in one process with {r['threads']} thread(s), then the "
        f"retraining runs in {r['workers']} single-threaded worker processes); "
        f"{r['cpu_seconds']:.0f} CPU-seconds in all. Load average at start / end: "
        f"{r['load_average_start_end'][0][0]:.1f} / {r['load_average_start_end'][1][0]:.1f}: "
        "the machine was shared with other jobs, so wall time and step times are inflated "
        "(compare ratios within the run, not absolute times).",
        "",
        f"Model: OPT-style, {cfg['layers']} layers, hidden {cfg['hidden']}, FFN {cfg['ffn']}, "
        f"vocabulary {cfg['vocab']} (byte-level BPE), context {cfg['seq']}; "
        f"{r['parameters']:,} parameters, of which {r['embedding_parameters']:,} "
        f"({r['embedding_parameters'] / r['parameters']:.0%}) are the (tied) token embeddings. "
        f"Trained here for {cfg['pretrain_steps']} steps (batch {cfg['batch']}) on standard-library "
        "docstrings; perplexity on held-out docstrings (every 10th), "
        f"{cfg['eval_windows']} windows. Held-out perplexity during pre-training: "
        + ", ".join(f"{c['step']}: {c['perplexity']:.2f}" for c in r["pretrain_curve"])
        + ".",
        "",
        f"Retraining: {cfg['steps']} AdamW steps, batch {cfg['retrain_batch']}×{cfg['seq']} "
        f"tokens, 10% warmup then linear decay; LR {cfg['peft_lr']:g} for the PEFT subsets, "
        f"{cfg['full_lr']:g} for full fine-tuning; LoRA rank {cfg['rank']}, alpha "
        f"{2 * cfg['rank']}. LoRA variants are trained together with biases, norms and the "
        "head LoRA (the PERP code default). Pruning: magnitude, per matrix, block linears only.",
        "",
        f"Dense perplexity {r['dense_perplexity']:.2f}; the dense model trained the same "
        f"{cfg['steps']} extra steps (full FT): {extra['retrained_perplexity']:.2f}.",
        "",
        "Gap recovered = (pruned − retrained)/(pruned − dense); the column after it uses the dense "
        "model trained the same extra steps as the reference instead. Peak RSS +MiB is the rise of "
        "the worker's resident memory during retraining (Linux high-water mark, reset per run).",
        "",
        "| pattern | subset | trainable | pruned ppl | retrained ppl (merged) | before merge "
        "| gap recovered | vs dense+extra | sparsity after merge | mask kept | step (ms) "
        "| peak RSS +MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    extra_ppl = extra["retrained_perplexity"]
    for row in r["rows"]:
        vs_extra = gap(extra_ppl, row["pruned_perplexity"], row["retrained_perplexity"])
        name = (
            f"{row['pattern']} {row['sparsity']:.0%}"
            if row["pattern"] == "unstructured"
            else row["pattern"]
        )
        lines.append(
            f"| {name} | {row['subset']} | {row['trainable_share']:.2%} "
            f"| {row['pruned_perplexity']:.2f} | {row['retrained_perplexity']:.2f} "
            f"| {row['unmerged_perplexity']:.2f} | {row['gap_recovered']:.0%} | {vs_extra:.0%} "
            f"| {row['sparsity_after_merge']:.1%} | {'yes' if row['mask_preserved'] else 'no'} "
            f"| {row['step_ms']:.0f} | {row['peak_rss_increase_bytes'] / 2**20:.0f} |"
        )
    lines += ["", *verdict(r), "", *expectations(r), ""]
    lines += [
        "Criteria at 50% unstructured (same calibration windows), before and after PERP "
        "(MaskLoRA + biases + norms + head):",
        "",
        "| criterion | pruned ppl | after PERP | prune time (s) |",
        "|---|---|---|---|",
    ]
    for c in r["criteria"]:
        lines.append(
            f"| {c['criterion']} | {c['pruned_perplexity']:.2f} "
            f"| {c['retrained_perplexity']:.2f} | {c['prune_seconds']:.2f} |"
        )
    rec = r["reconstruction"]
    lines += [
        "",
        f"Reconstruction mode (Wanda 50%, {rec['calibration_windows']} calibration windows, "
        f"{rec['steps_per_block']} steps per block, MaskLoRA + biases + norms): per-block MSE "
        + "; ".join(
            f"block {b['block']}: {b['first']:.4g} → {b['last']:.4g}" for b in rec["block_mse"]
        )
        + f". Perplexity {rec['pruned_perplexity']:.2f} pruned → "
        f"{rec['reconstructed_perplexity']:.2f} reconstructed.",
        "",
    ]
    return "\n".join(lines)


def verdict(r: dict[str, Any]) -> list[str]:
    """The comparison with ALGORITHMS.md section 7 and the issue's targets, from the numbers."""
    rows = r["rows"]

    def pick(pattern: str, sparsity: float, subset: str) -> dict[str, Any]:
        return next(
            x
            for x in rows
            if x["pattern"] == pattern and x["sparsity"] == sparsity and x["subset"] == subset
        )

    out = []
    small = [
        x
        for x in rows
        if x["pattern"] == "unstructured"
        and x["sparsity"] == 0.5
        and x["trainable_share"] <= 0.01
        and x["mask_preserved"]
    ]
    best = max(small, key=lambda x: x["gap_recovered"], default=None)
    if best is None:
        out.append("- Target 50%: no subset trains ≤1% of this model's parameters.")
    else:
        met = "met" if best["gap_recovered"] >= 0.9 else "not met"
        out.append(
            f"- Target 50%: ≥90% of the gap with ≤1% trainable — {met}: best subset "
            f"within 1% is {best['subset']} ({best['trainable_share']:.2%}), recovering "
            f"{best['gap_recovered']:.0%}."
        )
    bn = pick("unstructured", 0.7, "biases+norms")
    for name in ("MaskLoRA", "ScaleLoRA"):
        row = pick("unstructured", 0.7, name)
        better = row["retrained_perplexity"] < bn["retrained_perplexity"]
        out.append(
            f"- Target 70%: {name} {'beats' if better else 'does not beat'} biases+norms "
            f"({row['retrained_perplexity']:.2f} vs {bn['retrained_perplexity']:.2f})."
        )
    full = pick("unstructured", 0.5, "masked full FT")
    for name in ("biases+norms", "MaskLoRA"):
        row = pick("unstructured", 0.5, name)
        out.append(
            f"- Cost at 50%, {name} vs masked full FT: step time "
            f"{row['step_ms'] / full['step_ms']:.2f}×, peak RSS increase "
            f"{row['peak_rss_increase_bytes'] / max(1, full['peak_rss_increase_bytes']):.2f}×,"
            f" optimizer+gradient state {row['optimizer_state_bytes'] / full['optimizer_state_bytes']:.3f}×."
        )
    lp = pick("unstructured", 0.7, "lora_prune")
    out.append(
        f"- lora_prune at 70%: {lp['unmerged_perplexity']:.2f} before merge → "
        f"{lp['retrained_perplexity']:.2f} after (train/merge mismatch)."
    )
    plain = [x for x in rows if x["subset"] == "plain LoRA (merged)"]
    out.append(
        "- Plain LoRA merged: sparsity after merge "
        + ", ".join(f"{x['sparsity_after_merge']:.1%}" for x in plain)
        + " — reported as dense; MaskLoRA, ScaleLoRA and lora_prune keep the exact mask."
    )
    return out


def expectations(r: dict[str, Any]) -> list[str]:
    """ALGORITHMS.md section 7 (PERP), item by item, against this run (all from the numbers)."""
    rows, cfg = r["rows"], r["config"]
    settings = [(p, s) for p, s in SETTINGS]

    def pick(pattern: str, sparsity: float, subset: str) -> dict[str, Any]:
        return next(
            x
            for x in rows
            if x["pattern"] == pattern and x["sparsity"] == sparsity and x["subset"] == subset
        )

    def name(pattern: str, sparsity: float) -> str:
        return f"{sparsity:.0%}" if pattern == "unstructured" else pattern

    half = pick("unstructured", 0.5, "biases+norms")
    seventy = pick("unstructured", 0.7, "biases+norms")
    keeping = ("biases+norms", "+head LoRA", "MaskLoRA", "ScaleLoRA", "lora_prune")
    best = {
        name(p, s): min(keeping, key=lambda k, p=p, s=s: pick(p, s, k)["retrained_perplexity"])
        for p, s in settings
    }
    lossy = [
        name(p, s)
        for p, s in settings
        if (x := pick(p, s, "lora_prune")) and x["retrained_perplexity"] > x["unmerged_perplexity"]
    ]
    mask_kept = all(x["mask_preserved"] for x in rows if x["subset"] in keeping)
    lora_share = pick("unstructured", 0.5, "MaskLoRA")["trainable_share"]
    step_ratio = (
        pick("unstructured", 0.5, "MaskLoRA")["step_ms"]
        / pick("unstructured", 0.5, "masked full FT")["step_ms"]
    )
    crit = sorted(r["criteria"], key=lambda c: c["pruned_perplexity"])
    after = [c["retrained_perplexity"] for c in r["criteria"]]
    hidden = cfg["hidden"]
    return [
        "Against the expectations of ALGORITHMS.md section 7:",
        f"- *pruned ≫ dense*: at 70% {seventy['pruned_perplexity']:.1f} vs "
        f"{r['dense_perplexity']:.1f}; at 50% {half['pruned_perplexity']:.1f}.",
        f"- *biases+LN recover a large part at 50%*: {half['gap_recovered']:.0%} of the gap. "
        "PERP's claims are for 2.7B–30B-parameter models, whose pruned matrices keep far more "
        f"redundancy than this {r['parameters'] / 1e6:.1f}M-parameter model with hidden size "
        f"{hidden}.",
        "- *MaskLoRA and ScaleLoRA recover more at 70%*: see the targets above. Best "
        "mask-keeping subset per setting: " + ", ".join(f"{k}: {v}" for k, v in best.items()) + ".",
        "- *after merge MaskLoRA, ScaleLoRA, lora_prune keep the exact mask, plain LoRA ≈ 0% "
        "sparsity*: "
        + ("yes" if mask_kept else "NO")
        + ", checked matrix by matrix against the stored masks.",
        "- *lora_prune loses quality at the merge*: at "
        + (", ".join(lossy) if lossy else "no setting")
        + " (compare the 'before merge' column).",
        f"- *trainable fraction < 5% for PEFT variants*: biases+norms and +head LoRA are below; "
        f"the LoRA variants train {lora_share:.1%} at rank {cfg['rank']}, since a rank-r adapter "
        f"adds r(d_in+d_out)/(d_in·d_out) ≈ {2 * cfg['rank'] / hidden:.0%} to each "
        f"{hidden}-wide matrix (≈0.2% at d = 4096).",
        f"- Cost: MaskLoRA's step takes {step_ratio:.2f}× the masked full fine-tuning step here: "
        "on a CPU at this size the per-step materialisation of W + s·M⊙BA weighs as much as the "
        "optimizer work it saves. The saving PERP targets is the optimizer + gradient state "
        "(ratios above), which dominates memory at LLM scale on a GPU. No GPU was lent to this "
        "session, so there is no GPU table (tokens/s, 4-bit base).",
        "- *With PERP, magnitude pruning becomes competitive with Wanda and SparseGPT*: pruned "
        "perplexity ranks "
        + " < ".join(c["criterion"] for c in crit)
        + f"; after PERP the three are within {(max(after) / min(after) - 1):.1%} of each other.",
    ]


if __name__ == "__main__":
    main()
