"""Unlearning at CPU scale: S3T exact deletion against SISA and retraining, and SSD.

ALGORITHMS.md section 7 ("S3T and SISA", "SSD"), issue 4 "Evidence". Everything runs
through the real jobs: stores are trained by the ModelAdaptation runner (strategy s3t),
deletions are UnlearnRequests (`unlearn_s3t.run`), served models come from `s3t.load`.

S3T part. A tiny OPT (4 blocks, one LoRA group per slice) learns "label = majority
letter of a random sequence". Systems on the same data and seeds: a single model (one
shard, one slice: LoRA on all blocks, all data), SISA-like B = 1, S3T B = L = 4 cyclic,
and the full budget B = 24, each with m = 3 shards and L = 4 slices. Measured:
- time to serve one deletion: S3T deactivation (a new version), SISA retraining of the
  affected shard from its checkpoint (`retrainAffected` on the B = 1 store), and full
  retraining (the whole B = 1 system, and the single model);
- deletions until failure: the combinatorial simulation (uniform over shard x slice,
  as in the paper's code) next to mL*H_m ~ 22 and mL*H_{mL} ~ 37, and the same count
  on the real stores with real sample IDs (slices of unequal size);
- test accuracy against deletions served (random sample IDs, the same sequences for
  every system; each served configuration evaluated with the stored checkpoints).
SSD part. An MLP on 10 Gaussian classes; forget one class with SSD (alpha 10, lambda 1)
and compare with retraining from scratch without it: forget / retain / test accuracy,
the loss-threshold membership score (AUC of forget-set loss below held-out loss of the
same class; 0.5 = looks unseen) and wall time; then the alpha x lambda sweep.

    PYTHONPATH=operator:jobs python benchmarks/unlearning.py [--quick] [--threads 1]
    PYTHONPATH=operator:jobs python benchmarks/unlearning.py --report-only  # Markdown from the JSON

Writes docs/benchmarks/unlearning.json (raw figures) and docs/benchmarks/unlearning.md.
"""

import argparse
import copy
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelops_api.unlearn_request import UnlearnRequestSpec
from modelops_jobs import runner, unlearn_eval
from modelops_jobs.algorithms import s3t, s3t_orders, s3t_store, ssd, unlearn_s3t
from modelops_jobs.context import RunContext
from modelops_jobs.data import write_jsonl
from modelops_jobs.testing import tiny

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks"
SHARDS, SLICES = 3, 4
SYSTEMS = {  # name: (shards, slices, orders, selection)
    "single": (1, 1, 1, "cyclic"),
    "sisa_B1": (SHARDS, SLICES, 1, "cyclic"),
    "s3t_B4_cyclic": (SHARDS, SLICES, 4, "cyclic"),
    "full_B24": (SHARDS, SLICES, 24, "full"),
}
SSD_SPREAD = 0.7  # overlapping classes: the MLP memorises its training set (membership signal)
SSD_ALPHAS = (10.0, 5.0)  # the section 7 default, and one step more aggressive
EXPECTED_FAILURE = {"sisa_B1": 22.0, "s3t_B4_cyclic": 37.0, "full_B24": 37.0}


@dataclass(frozen=True)
class Setup:
    train: int
    test: int
    letters: str
    length: int
    hidden: int
    epochs: int
    lr: float
    curve_trials: int
    curve_points: tuple[int, ...]
    timing_deletions: int
    failure_trials: int
    ssd_train: int
    ssd_epochs: int
    ssd_classes: tuple[int, ...]


FULL = Setup(600, 300, "abcdef", 13, 64, 2, 3e-3, 6, (0, 3, 6, 9, 12, 15, 20, 25, 30, 40, 50),
             5, 400, 1000, 60, tuple(range(10)))  # fmt: skip
QUICK = Setup(240, 120, "abcdef", 13, 32, 1, 3e-3, 2, (0, 5, 10, 20), 2, 50, 500, 10, (0,))


# -- data and systems ---------------------------------------------------------------------


def majority_records(n: int, seed: int, prefix: str, setup: Setup) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        tokens = [rng.choice(setup.letters) for _ in range(setup.length)]
        counts = [tokens.count(c) for c in setup.letters]
        if sorted(counts)[-1] == sorted(counts)[-2]:
            continue
        label = counts.index(max(counts))
        out.append({"id": f"{prefix}-{len(out):05d}", "text": " ".join(tokens), "label": label})
    return out


def build_world(setup: Setup, work: Path) -> dict[str, Any]:
    (work / "warm-up").mkdir()
    tok = tiny.train_tokenizer(
        tiny.grammar_corpus(300, seed=1) + [" ".join(setup.letters)] * 10, 300
    )
    lm = tiny.tiny_causal_lm(
        len(tok),
        hidden=setup.hidden,
        layers=4,
        heads=4,
        ffn=4 * setup.hidden,
        max_positions=64,
        seed=0,
    )
    tiny.save_model_dir(lm, tok, work / "base")
    train = majority_records(setup.train, 0, "train", setup)
    write_jsonl(work / "data.jsonl", train)
    return {"train": train, "test": majority_records(setup.test, 5, "test", setup)}


def train_system(name: str, setup: Setup, work: Path) -> tuple[Path, float]:
    """Train one system into <work>/<name>/run-0001; (store, wall seconds)."""
    shards, slices, orders, selection = SYSTEMS[name]
    base = work.parent if work.name == "warm-up" else work
    doc = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelAdaptation",
        "metadata": {"name": name},
        "run": {"number": 1},
        "spec": {
            "strategy": "s3t",
            "seed": 0,
            "model": {"uri": f"file://{base}/base"},
            "data": {"uri": f"file://{base}/data.jsonl"},
            "output": {"uri": f"file://{work}/{name}"},
            "optimization": {
                "learningRate": setup.lr,
                "batchSize": 16,
                "sequenceLength": 32,
                "warmupRatio": 0.0,
            },
            "s3t": {
                "shards": shards,
                "slices": slices,
                "orders": orders,
                "orderSelection": selection,
                "task": "classification",
                "numLabels": len(setup.letters),
                "epochsPerStep": setup.epochs,
                "lora": {"rank": 8, "alpha": 16},
            },
        },
    }
    started = time.perf_counter()
    outcome = runner.execute(doc)
    if outcome.exit_code != 0:
        raise RuntimeError(f"{name}: {outcome.result}")
    return work / name / "run-0001", time.perf_counter() - started


class Evaluator:
    """Test accuracy of any served configuration of a store, cached by what is served."""

    def __init__(self, store: Path, test: list[dict[str, Any]]) -> None:
        self.store, self.cache = store, {}
        self.base = s3t.load(store)
        self.ids, self.mask = self.base.encode([r["text"] for r in test])
        self.labels = torch.tensor([r["label"] for r in test])

    def accuracy(self, manifest: dict[str, Any]) -> float | None:
        served = tuple(
            (e["shard"], tuple(o["order"]), o["live"]) if (o := s3t_store.served_order(e)) else None
            for e in manifest["shards"]
        )
        if all(s is None for s in served):
            return None
        if served not in self.cache:
            view = s3t.S3TEnsemble(
                self.base.model,
                self.base.config,
                {**manifest, "version": "sim"},
                self.store,
                self.base.tokenizer,
                self.base.device,
            )
            predictions = view.logits(self.ids, self.mask).argmax(-1)
            self.cache[served] = float((predictions == self.labels).float().mean())
        return self.cache[served]


# -- S3T measurements ---------------------------------------------------------------------


def accuracy_curves(stores: dict[str, Path], world: dict[str, Any], setup: Setup) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    ids = [r["id"] for r in world["train"]]
    for name in ("sisa_B1", "s3t_B4_cyclic", "full_B24"):
        evaluator = Evaluator(stores[name], world["test"])
        start = s3t_store.read_version(stores[name])
        index = s3t_store.read_json(stores[name] / "index.json")["entries"]
        per_point: dict[int, list[float | None]] = {d: [] for d in setup.curve_points}
        for trial in range(setup.curve_trials):
            order = random.Random(100 + trial).sample(ids, max(setup.curve_points))
            for d in setup.curve_points:
                hashed = [s3t_orders.hash_id(i) for i in order[:d]]
                shards, _ = s3t_store.truncate_shards(start, s3t_store.hits_of(hashed, index))
                per_point[d].append(evaluator.accuracy({"shards": shards}))
        curves[name] = {
            str(d): {
                "accuracy": round(statistics.mean(a for a in accs if a is not None), 4)
                if any(a is not None for a in accs)
                else None,
                "failed_trials": sum(a is None for a in accs),
                "trials": len(accs),
            }
            for d, accs in per_point.items()
        }
    return curves


def deletions_until_failure(
    stores: dict[str, Path], world: dict[str, Any], setup: Setup
) -> dict[str, Any]:
    out = {}
    ids = [r["id"] for r in world["train"]]
    for name, expected in EXPECTED_FAILURE.items():
        orders = [tuple(o) for o in s3t_store.read_config(stores[name])["orders"]]
        simulated = s3t_orders.deletions_until_failure(SHARDS, orders, trials=10_000, seed=1)
        start = s3t_store.read_version(stores[name])
        index = s3t_store.read_json(stores[name] / "index.json")["entries"]
        real = []
        for trial in range(setup.failure_trials):
            manifest = start
            for count, sample_id in enumerate(random.Random(trial).sample(ids, len(ids)), start=1):
                shards, _ = s3t_store.truncate_shards(
                    manifest, s3t_store.hits_of([s3t_orders.hash_id(sample_id)], index)
                )
                manifest = {"shards": shards}
                if all(s3t_store.served_order(e) is None for e in shards):
                    real.append(count)
                    break
        out[name] = {
            "expected_section7": expected,
            "coupon_collector": round(
                s3t_orders.expected_deletions_until_failure(SHARDS, SLICES, orders), 2
            ),
            "simulated_mean": round(statistics.mean(simulated), 2),
            "simulated_std": round(statistics.stdev(simulated), 2),
            "real_store_mean": round(statistics.mean(real), 2),
            "real_store_trials": len(real),
        }
    return out


def deletion_timing(
    stores: dict[str, Path],
    train_seconds: dict[str, float],
    world: dict[str, Any],
    setup: Setup,
    work: Path,
) -> dict[str, Any]:
    victims = random.Random(7).sample([r["id"] for r in world["train"]], setup.timing_deletions)

    def serve(store: Path, retrain: bool) -> list[float]:
        times = []
        for victim in victims:
            spec = UnlearnRequestSpec.model_validate(
                {
                    "model": {"uri": f"file://{store}"},
                    "sampleIds": [victim],
                    "retrainAffected": retrain,
                }
            )
            started = time.perf_counter()
            unlearn_s3t.run(spec, RunContext(output_dir=Path(".")))
            times.append(time.perf_counter() - started)
        return times

    s3t_copy = Path(shutil.copytree(stores["s3t_B4_cyclic"], work / "timing-s3t"))
    sisa_copy = Path(shutil.copytree(stores["sisa_B1"], work / "timing-sisa"))
    s3t_times, sisa_times = serve(s3t_copy, False), serve(sisa_copy, True)
    s3t_mean = statistics.mean(s3t_times)
    rows = {
        "s3t_deactivation": s3t_mean,
        "sisa_retrain_affected_shard": statistics.mean(sisa_times),
        "full_retrain_sisa_system": train_seconds["sisa_B1"],
        "full_retrain_single_model": train_seconds["single"],
    }
    return {
        k: {"seconds": round(v, 4), "ratio_to_s3t": round(v / s3t_mean, 1)} for k, v in rows.items()
    }


# -- SSD ----------------------------------------------------------------------------------


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centers = torch.randn(10, 16, generator=torch.Generator().manual_seed(0)) * SSD_SPREAD
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return centers[y] + torch.randn(n, 16, generator=g), y


def batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]


def ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def train_mlp(x: torch.Tensor, y: torch.Tensor, epochs: int) -> tuple[nn.Module, float]:
    started = time.perf_counter()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for batch in batches(x[perm], y[perm]):
            opt.zero_grad()
            ce(model, batch).backward()
            opt.step()
    return model, time.perf_counter() - started


@torch.no_grad()
def figures(model: nn.Module, data: dict[str, Any], c: int) -> dict[str, float]:
    x, y, tx, ty = data["x"], data["y"], data["tx"], data["ty"]
    acc = lambda a, b: round(float((model(a).argmax(1) == b).float().mean()), 4)  # noqa: E731
    loss = lambda a, b: nn.functional.cross_entropy(model(a), b, reduction="none").numpy()  # noqa: E731
    return {
        "forget_acc": acc(x[y == c], y[y == c]),
        "retain_acc": acc(x[y != c], y[y != c]),
        "test_acc": acc(tx[ty != c], ty[ty != c]),
        "test_forget_class_acc": acc(tx[ty == c], ty[ty == c]),
        "membership_auc": round(
            unlearn_eval.membership_auc(loss(x[y == c], y[y == c]), loss(tx[ty == c], ty[ty == c])),
            4,
        ),
    }


def ssd_benchmark(setup: Setup) -> dict[str, Any]:
    x, y = blobs(setup.ssd_train, 1)
    tx, ty = blobs(setup.ssd_train, 2)
    data = {"x": x, "y": y, "tx": tx, "ty": ty}
    original, train_seconds = train_mlp(x, y, setup.ssd_epochs)
    started = time.perf_counter()
    full = ssd.fisher_importance(original, batches(x, y), ce)
    importance_seconds = time.perf_counter() - started
    per_class = []
    for c in setup.ssd_classes:
        forget = batches(x[y == c], y[y == c])
        row: dict[str, Any] = {"class": c, "original": figures(original, data, c)}
        for alpha in SSD_ALPHAS:
            model = copy.deepcopy(original)
            started = time.perf_counter()
            report = ssd.selective_synaptic_dampening(
                model, forget, full.__getitem__, ce, alpha, 1.0
            )
            seconds = round(time.perf_counter() - started, 4)
            row[f"ssd_alpha{alpha:g}"] = {
                **figures(model, data, c),
                "seconds": seconds,
                "dampened": report.dampened,
            }
        retrained, retrain_seconds = train_mlp(x[y != c], y[y != c], setup.ssd_epochs)
        row["retrain"] = {**figures(retrained, data, c), "seconds": round(retrain_seconds, 3)}
        per_class.append(row)
    sweep = []
    for alpha in (1.0, 5.0, 10.0, 50.0):
        for lambda_ in (0.1, 1.0):
            model = copy.deepcopy(original)
            report = ssd.selective_synaptic_dampening(
                model, batches(x[y == 0], y[y == 0]), full.__getitem__, ce, alpha, lambda_
            )
            sweep.append(
                {
                    "alpha": alpha,
                    "lambda": lambda_,
                    "dampened": report.dampened,
                    **figures(model, data, 0),
                }
            )
    return {
        "train_seconds": round(train_seconds, 3),
        "full_importance_seconds": round(importance_seconds, 4),
        "parameters": sum(p.numel() for p in original.parameters()),
        "per_class": per_class,
        "sweep_class0": sweep,
    }


# -- report -------------------------------------------------------------------------------


def mean_of(rows: list[dict[str, Any]], who: str, key: str) -> float:
    return round(statistics.mean(r[who][key] for r in rows), 4)


def _acc(point: dict[str, Any]) -> str:
    return "failed" if point["accuracy"] is None else f"{point['accuracy']:.3f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown(result: dict[str, Any], command: str) -> str:
    m, st, t, s = result["machine"], result["setup"], result["timing"], result["ssd"]
    lines = [
        "## Unlearning: S3T exact deletion and SSD",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs ({m['threads']} torch thread), torch "
        f"{m['torch']}; the machine was shared with other jobs while this ran, so absolute "
        f"times are noisy. Command: `{command}` ({result['wall_seconds']:.0f} s). "
        "Raw figures: `docs/benchmarks/unlearning.json`.",
        "",
        f"Tiny OPT (4 blocks, hidden {st['hidden']}); task: label = majority letter of a random "
        f"sequence ({len(st['letters'])} classes), {st['train']} training / {st['test']} test "
        "sequences; m = 3 shards, L = 4 slices, one LoRA group (r = 8) per slice, top-down; "
        f"{st['epochs']} epoch(s) per cumulative step.",
        "",
    ]
    lines += _table(
        ["system", "orders per shard", "steps trained", "train s", "test accuracy, no deletion"],
        [
            [n, r["orders"], r["steps"], f"{r['train_seconds']:.1f}", f"{r['accuracy']:.3f}"]
            for n, r in result["systems"].items()
        ],
    )
    lines += [
        "",
        f"**Time to serve one deletion** (mean over {st['timing_deletions']} random sample IDs; "
        "S3T and SISA through `UnlearnRequest`):",
        "",
    ]
    lines += _table(
        ["how", "seconds", "× S3T"],
        [[n.replace("_", " "), f"{r['seconds']:.3f}", r["ratio_to_s3t"]] for n, r in t.items()],
    )
    lines += ["", "**Deletions until failure** (no shard left), m = 3, L = 4:", ""]
    lines += _table(
        [
            "system",
            "section 7 expects",
            "coupon collector",
            "simulated, 10 000 trials",
            "real store, sample IDs",
        ],
        [
            [
                n,
                f"≈{r['expected_section7']:.0f}",
                r["coupon_collector"],
                f"{r['simulated_mean']} ± {r['simulated_std']}",
                f"{r['real_store_mean']} ({r['real_store_trials']} trials)",
            ]
            for n, r in result["failure"].items()
        ],
    )
    curves = result["curves"]
    names = list(curves)
    lines += [
        "",
        f"**Test accuracy against deletions served** (mean over the {st['curve_trials']} random "
        "deletion sequences in which the system still serves; the same sequences for every "
        "system; `k dead` = sequences in which it had failed):",
        "",
    ]
    rows = []
    for d in curves[names[0]]:
        cells = [
            _acc(curves[n][d])
            + (f" ({curves[n][d]['failed_trials']} dead)" if curves[n][d]["failed_trials"] else "")
            for n in names
        ]
        rows.append([d, *cells])
    lines += _table(["deletions", *names], rows)
    per_class = s["per_class"]
    lines += [
        "",
        f"**SSD against retraining from scratch** (MLP 16-128-128-10, {s['parameters']} "
        f"parameters, on 10 overlapping Gaussian classes, {st['ssd_train']} training samples, "
        f"{st['ssd_epochs']} epochs: it memorises its training set; forget one class, λ = 1; "
        f"mean over {len(per_class)} class(es)). Membership = AUC of forget-set loss below "
        "held-out loss of the same class (0.5 = looks unseen).",
        "",
    ]
    rows = []
    keys = ("forget_acc", "retain_acc", "test_acc", "membership_auc")
    for who in ("original", "retrain", *(f"ssd_alpha{a:g}" for a in SSD_ALPHAS)):
        if who == "original":
            seconds = f"{s['train_seconds']:.3f} (training)"
        else:
            seconds = f"{statistics.mean(r[who]['seconds'] for r in per_class):.4f}"
        label = who.replace("ssd_alpha", "SSD α = ")
        rows.append([label, *(mean_of(per_class, who, k) for k in keys), seconds])
    lines += _table(
        ["model", "forget acc", "retain acc", "test acc (other classes)", "membership", "seconds"],
        rows,
    )
    lines += ["", "Per class (forget accuracy / membership; dampened parameters for SSD):", ""]
    rows = []
    for r in per_class:
        cells = [r["class"], f"{r['original']['forget_acc']} / {r['original']['membership_auc']}"]
        cells.append(f"{r['retrain']['forget_acc']} / {r['retrain']['membership_auc']}")
        for a in SSD_ALPHAS:
            d = r[f"ssd_alpha{a:g}"]
            cells.append(f"{d['forget_acc']} / {d['membership_auc']} ({d['dampened']})")
        rows.append(cells)
    lines += _table(["class", "original", "retrain", *(f"SSD α = {a:g}" for a in SSD_ALPHAS)], rows)
    lines += [
        "",
        f"Full-data importance (once, at training time): {s['full_importance_seconds']:.3f} s. "
        "Sweep on class 0:",
        "",
    ]
    lines += _table(
        ["α", "λ", "dampened", "forget acc", "retain acc", "test acc", "membership"],
        [
            [
                f"{r['alpha']:g}",
                f"{r['lambda']:g}",
                r["dampened"],
                r["forget_acc"],
                r["retain_acc"],
                r["test_acc"],
                r["membership_auc"],
            ]
            for r in s["sweep_class0"]
        ],
    )
    lines += ["", "**Against ALGORITHMS.md section 7.**", ""]
    return "\n".join(lines + [f"- {c}" for c in result["comparison"]] + [""])


def comparison(result: dict[str, Any]) -> list[str]:
    f, t, systems, s = result["failure"], result["timing"], result["systems"], result["ssd"]
    rows = s["per_class"]
    ssd_key = f"ssd_alpha{SSD_ALPHAS[0]:g}"
    ssd_time = statistics.mean(r[ssd_key]["seconds"] for r in rows)
    retrain_time = statistics.mean(r["retrain"]["seconds"] for r in rows)
    forget = [r[ssd_key]["forget_acc"] for r in rows]
    points = list(result["curves"]["sisa_B1"])
    first, last = points[1], points[-1]
    trend = "; ".join(
        f"{n} {_acc(c[first])} → {_acc(c[last])} ({c[last]['failed_trials']}/{c[last]['trials']} dead)"
        for n, c in result["curves"].items()
    )
    sweep = ", ".join(
        f"α {r['alpha']:g}/λ {r['lambda']:g}: {r['dampened']}" for r in s["sweep_class0"]
    )
    return [
        f"Deletions until failure: B = 1 {f['sisa_B1']['simulated_mean']} (expected ≈22), "
        f"B = 4 cyclic {f['s3t_B4_cyclic']['simulated_mean']} and full budget "
        f"{f['full_B24']['simulated_mean']} (expected ≈37, equal to each other). On the real "
        f"stores, with sample IDs and slices of unequal size: {f['sisa_B1']['real_store_mean']}, "
        f"{f['s3t_B4_cyclic']['real_store_mean']}, {f['full_B24']['real_store_mean']}.",
        f"Serving a deletion: S3T deactivation takes {t['s3t_deactivation']['seconds']:.3f} s; "
        f"SISA retraining of the affected shard is {t['sisa_retrain_affected_shard']['ratio_to_s3t']}× "
        f"that, full retraining of the SISA system {t['full_retrain_sisa_system']['ratio_to_s3t']}× "
        f"and of the single model {t['full_retrain_single_model']['ratio_to_s3t']}×. The retraining "
        "figures include loading the base model, a large share at this size.",
        f"Before deletions: single model {systems['single']['accuracy']:.3f}, SISA "
        f"{systems['sisa_B1']['accuracy']:.3f}, S3T B = 4 {systems['s3t_B4_cyclic']['accuracy']:.3f}, "
        f"full budget {systems['full_B24']['accuracy']:.3f} (all three serve the identity order "
        'first, with identical checkpoints). Section 7 expects "close to a single model"; each '
        f"shard sees a third of the {result['setup']['train']} samples.",
        f"Accuracy against deletions ({first} → {last} deletions): {trend}. Larger B keeps "
        "serving longer prefixes, so it degrades more slowly and fails later, as section 7 expects.",
        f"SSD (α = 10, λ = 1): forget accuracy {mean_of(rows, 'original', 'forget_acc')} → "
        f"{mean_of(rows, ssd_key, 'forget_acc')} (retrain {mean_of(rows, 'retrain', 'forget_acc')}; "
        f"per class {min(forget)} to {max(forget)}); retain {mean_of(rows, 'original', 'retain_acc')} → "
        f"{mean_of(rows, ssd_key, 'retain_acc')}; test {mean_of(rows, 'original', 'test_acc')} → "
        f"{mean_of(rows, ssd_key, 'test_acc')} (retrain {mean_of(rows, 'retrain', 'test_acc')}); "
        f"membership {mean_of(rows, 'original', 'membership_auc')} → "
        f"{mean_of(rows, ssd_key, 'membership_auc')} (retrain {mean_of(rows, 'retrain', 'membership_auc')}). "
        f"SSD takes {100 * ssd_time / retrain_time:.2f}% of the retraining time (section 7 expects "
        "< 5%). Section 7 expects forget accuracy near 0 like retraining, retain and test "
        "accuracy near the original with a small drop, and membership moving toward the "
        "retrained model's; compare the table above, and note the spread across classes (the "
        "third-party reproduction in section 5 reports the same high variance).",
        f"Larger α dampens fewer parameters ({sweep}), as expected.",
        "Where SSD falls short of section 7 here: "
        + "; ".join(_ssd_shortfalls(rows, s["sweep_class0"], ssd_key))
        + ".",
    ]


def _ssd_shortfalls(rows: list[dict[str, Any]], sweep: list[dict[str, Any]], key: str) -> list[str]:
    """The ways the SSD figures miss the section 7 expectations, stated from the data."""
    out = []
    drop = mean_of(rows, "original", "retain_acc") - mean_of(rows, key, "retain_acc")
    if drop > 0.02:
        out.append(f"retain accuracy drops by {drop:.3f}, more than a small drop")
    if mean_of(rows, key, "forget_acc") > mean_of(rows, "retrain", "forget_acc") + 0.02:
        out.append(
            f"forget accuracy {mean_of(rows, key, 'forget_acc')} stays above retraining's "
            f"{mean_of(rows, 'retrain', 'forget_acc')}"
        )
    by_alpha = {r["alpha"]: r for r in sweep if r["lambda"] == 1.0}
    low, high = by_alpha[min(by_alpha)], by_alpha[max(by_alpha)]
    if high["forget_acc"] <= low["forget_acc"]:
        out.append(
            f"on class 0 forgetting does not shrink as α grows (forget accuracy {low['forget_acc']} "
            f"at α {min(by_alpha):g}, {high['forget_acc']} at α {max(by_alpha):g}), while membership "
            f"rises to {high['membership_auc']}: accuracy alone overstates forgetting"
        )
    return out or ["nowhere measured"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about a minute)")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the Markdown from the stored JSON"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest for tiny models on a shared machine)",
    )
    args = parser.parse_args()
    command = "PYTHONPATH=operator:jobs python benchmarks/unlearning.py" + (
        " --quick" if args.quick else ""
    )
    if args.report_only:
        result = json.loads((DOCS / "unlearning.json").read_text())
        result["comparison"] = comparison(result)
        (DOCS / "unlearning.md").write_text(markdown(result, command))
        return
    setup = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    os.environ["MODELOPS_THREADS"] = str(args.threads)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="unlearning-bench-"))
    try:
        world = build_world(setup, work)
        train_system("single", setup, work / "warm-up")  # imports and first-call costs, untimed
        stores, train_seconds, systems = {}, {}, {}
        for name in SYSTEMS:
            stores[name], train_seconds[name] = train_system(name, setup, work)
            config = s3t_store.read_config(stores[name])
            steps = sum(
                len(list((stores[name] / "shards" / str(s) / "steps").glob("*.safetensors")))
                for s in range(config["shards"])
            )
            accuracy = Evaluator(stores[name], world["test"]).accuracy(
                s3t_store.read_version(stores[name])
            )
            systems[name] = {
                "orders": len(config["orders"]),
                "steps": steps,
                "train_seconds": round(train_seconds[name], 2),
                "accuracy": accuracy,
            }
            print(f"{name}: {systems[name]}", file=sys.stderr, flush=True)
        result: dict[str, Any] = {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "threads": args.threads,
                "torch": torch.__version__,
            },
            "setup": asdict(setup),
            "systems": systems,
            "timing": deletion_timing(stores, train_seconds, world, setup, work),
            "failure": deletions_until_failure(stores, world, setup),
            "curves": accuracy_curves(stores, world, setup),
            "ssd": ssd_benchmark(setup),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["comparison"] = comparison(result)
    command = "PYTHONPATH=operator:jobs python benchmarks/unlearning.py" + (
        " --quick" if args.quick else ""
    )
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "unlearning.json").write_text(json.dumps(result, indent=1) + "\n")
    (DOCS / "unlearning.md").write_text(markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()
