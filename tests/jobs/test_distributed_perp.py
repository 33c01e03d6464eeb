"""PERP retraining and S3T shard training spread over 2 CPU processes (gloo) by the real launcher.

Each case runs `python -m modelops_jobs.launch` as a pod would (MODELOPS_NPROC_PER_NODE=2)
and compares what it publishes with the one-process run of the same spec (same global
batch). DDP averages the two ranks' gradients, so sums are taken in another order than on
one process: weights and losses agree to a tolerance (WEIGHT_TOL, LOSS_TOL), not bitwise.
What must be exact is exact: the pruned weights are zero, exactly the masks, on every rank
(the masks and the pruned base are those of one process); S3T's sample -> (shard, slice)
assignment and every step's content address are identical. A run stopped by SIGTERM to
one rank and resumed ends bitwise where the uninterrupted run of the same world size ends.
"""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.jobs.distributed_harness import (
    finish,
    max_difference,
    run_pod,
    sigterm,
    start_pod,
    wait_for_file,
    worker_pid,
)

from modelops_api.meta import EXIT_RETRYABLE
from modelops_jobs.data import write_jsonl
from modelops_jobs.testing import tiny

WEIGHT_TOL = 2e-5
"""Largest |w_2proc - w_1proc| allowed after 12 AdamW steps (measured on this machine:
5.4e-6 masklora, 6.5e-6 full fine-tuning, 0 replicated reconstruction, 1.1e-7 S3T steps)."""
LOSS_TOL = 1e-5
SEQ = 16


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny OPT model (untrained), retraining and evaluation text."""
    root = tmp_path_factory.mktemp("dist-perp")
    texts = tiny.stdlib_docstrings()[:400]
    tokenizer = tiny.train_tokenizer(texts, vocab_size=128)
    model = tiny.tiny_causal_lm(
        len(tokenizer), hidden=32, layers=2, heads=4, ffn=64, max_positions=64, seed=0
    )
    tiny.save_model_dir(model, tokenizer, root / "base")
    write_jsonl(root / "train.jsonl", [{"text": t} for t in texts[:300]])
    write_jsonl(root / "eval.jsonl", [{"text": t} for t in texts[300:]])
    return root


def perp_document(
    root: Path, out: str, steps: int = 12, criterion: str = "wanda", **retrain: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "PruneRetrain",
        "metadata": {"name": "perp-dist", "namespace": "ml"},
        "spec": {
            "model": {"uri": f"file://{root / 'base'}"},
            "pruning": {"criterion": criterion, "sparsity": 0.5, "calibrationSamples": 8},
            "retrain": {
                "subset": ["biases", "norms", "head", "masklora"],
                "lora": {"rank": 2, "alpha": 4},
                "data": {"uri": f"file://{root / 'train.jsonl'}"},
                "optimization": {
                    "steps": steps,
                    "batchSize": 4,
                    "gradientAccumulation": 2,
                    "sequenceLength": SEQ,
                    "learningRate": 3e-3,
                    "checkpointEvery": 1000,
                },
                **retrain,
            },
            "evaluation": {"data": {"uri": f"file://{root / 'eval.jsonl'}"}, "maxWindows": 8},
            "output": {"uri": f"file://{root / out}"},
        },
    }


def manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def zeros(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v == 0 for k, v in load_file(directory / "model.safetensors").items()}


PERP_CASES = {
    "masklora": {},
    "full-finetune-sparsegpt": {"fullFinetune": True, "criterion": "sparsegpt"},
    "reconstruction-replicated": {"mode": "reconstruction", "subset": ["biases", "norms"]},
}


@pytest.mark.parametrize("case", list(PERP_CASES), ids=list(PERP_CASES))
def test_perp_two_processes_match_one(root: Path, case: str) -> None:
    runs = {}
    for nproc in (1, 2):
        out = f"perp-{case}-{nproc}"
        doc = perp_document(root, out, **PERP_CASES[case])
        run = run_pod(doc, root / f"pod-{out}", nproc=nproc)
        assert run.exit_code == 0, run.stderr[-3000:]
        assert ('"rank": 1' in run.stderr) == (nproc == 2), "rank 1 ran (and only then)"
        runs[nproc] = (run.result["results"], root / out)
    (one, one_dir), (two, two_dir) = runs[1], runs[2]
    assert two["maskPreserved"] and one["maskPreserved"]
    assert two["sparsity"] == one["sparsity"] == 0.5, "sparsity exactly kept"
    difference = max_difference(
        load_file(one_dir / "model.safetensors"), load_file(two_dir / "model.safetensors")
    )
    assert difference < WEIGHT_TOL, difference
    two_zeros, one_zeros = zeros(two_dir), zeros(one_dir)
    pruned = [k for k in one_zeros if k.endswith("proj.weight") or ".fc" in k]
    assert pruned and all(torch.equal(one_zeros[k], two_zeros[k]) for k in pruned)
    loss_one = manifest(one_dir)["metrics"]["retrainLoss"]
    loss_two = manifest(two_dir)["metrics"]["retrainLoss"]
    if loss_one is None:  # reconstruction reports no causal-LM loss
        assert loss_two is None and case.startswith("reconstruction")
    else:
        assert loss_two == pytest.approx(loss_one, abs=LOSS_TOL)
    for key in ("densePerplexity", "prunedPerplexity", "retrainedPerplexity"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    ranks = manifest(two_dir)["distributed"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["worldSize"] == 2 for r in ranks)
    expected = ["cuda:0", "cuda:1"] if torch.cuda.is_available() else ["cpu", "cpu"]
    assert [r["device"] for r in ranks] == expected


def test_perp_sigterm_to_one_rank_then_resume_ends_where_the_uninterrupted_run_ends(
    root: Path,
) -> None:
    steps, every = 40, 4
    straight = run_pod(
        _with_checkpoints(perp_document(root, "perp-straight", steps), every),
        root / "pod-perp-straight",
        nproc=2,
    )
    assert straight.exit_code == 0, straight.stderr[-3000:]

    doc = _with_checkpoints(perp_document(root, "perp-resumed", steps), every)
    ckpt = root / "ckpt-perp"
    proc, termination = start_pod(doc, root / "pod-perp-first", 2, ckpt)
    wait_for_file(ckpt / "state-rank00001.pt")  # the first periodic checkpoint
    sigterm(worker_pid(proc.pid, rank=1))
    first = finish(proc, termination)
    assert first.exit_code == EXIT_RETRYABLE, first.stderr[-3000:]
    assert first.result["reason"] == "Preempted", first.result
    stopped = torch.load(ckpt / "state.pt", weights_only=False)["step"]
    other = torch.load(ckpt / "state-rank00001.pt", weights_only=False)["step"]
    assert every <= stopped < steps and other == stopped, "both ranks stopped at one step"
    assert (ckpt / "pruned.pt").exists(), "the retry reuses the pruned model"

    retry = run_pod(doc, root / "pod-perp-retry", 2, ckpt)
    assert retry.exit_code == 0, retry.stderr[-3000:]
    a = load_file(root / "perp-straight" / "model.safetensors")
    b = load_file(root / "perp-resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert retry.result["results"]["sparsity"] == 0.5
    assert (
        manifest(root / "perp-resumed")["metrics"]["retrainLoss"]
        == (manifest(root / "perp-straight")["metrics"]["retrainLoss"])
    )


def _with_checkpoints(doc: dict[str, Any], every: int) -> dict[str, Any]:
    doc["spec"]["retrain"]["optimization"]["checkpointEvery"] = every
    return doc


def test_perp_batch_smaller_than_the_processes_names_the_field(root: Path) -> None:
    doc = perp_document(root, "perp-tiny-batch")
    doc["spec"]["retrain"]["optimization"]["batchSize"] = 1
    run = run_pod(doc, root / "pod-perp-tiny-batch", nproc=2)
    assert run.exit_code == 3, run.stderr[-3000:]
    assert "retrain.optimization.batchSize" in run.result["message"]


# -- S3T ---------------------------------------------------------------------------


def s3t_document(root: Path, out: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelAdaptation",
        "metadata": {"name": "s3t-dist", "namespace": "ml"},
        "run": {"number": 1},
        "spec": {
            "strategy": "s3t",
            "seed": 3,
            "model": {"uri": f"file://{root / 'base'}"},
            "data": {"uri": f"file://{root / 's3t.jsonl'}"},
            "output": {"uri": f"file://{root / out}"},
            "optimization": {"learningRate": 0.01, "batchSize": 5, "sequenceLength": SEQ},
            "s3t": {
                "shards": 2,
                "slices": 2,
                "orders": 2,
                "task": "classification",
                "numLabels": 2,
                "lora": {"rank": 2, "alpha": 4},
            },
        },
    }


def test_s3t_two_processes_match_one_and_keep_the_slices(root: Path) -> None:
    texts = tiny.stdlib_docstrings()[:30]
    records = [{"id": f"s-{i:03d}", "text": t, "label": i % 2} for i, t in enumerate(texts)]
    write_jsonl(root / "s3t.jsonl", records)
    stores = {}
    for nproc in (1, 2):
        out = f"s3t-{nproc}"
        run = run_pod(s3t_document(root, out), root / f"pod-{out}", nproc=nproc)
        assert run.exit_code == 0, run.stderr[-3000:]
        assert ('"rank": 1' in run.stderr) == (nproc == 2), "rank 1 ran (and only then)"
        assert run.result["results"]["sealed"], run.result
        stores[nproc] = root / out / "run-0001"
    one, two = stores[1], stores[2]
    index = json.loads((one / "index.json").read_text())
    assert index == json.loads((two / "index.json").read_text()), "same sample -> shard, slice"
    for shard in (0, 1):
        orders_one = json.loads((one / "shards" / str(shard) / "shard.json").read_text())
        orders_two = json.loads((two / "shards" / str(shard) / "shard.json").read_text())
        keys_one = [[s["key"] for s in o["steps"]] for o in orders_one["orders"]]
        keys_two = [[s["key"] for s in o["steps"]] for o in orders_two["orders"]]
        assert keys_one == keys_two, "the same steps trained on the same slices"
        for key in {k for order in keys_one for k in order}:
            a = load_file(one / "shards" / str(shard) / "steps" / f"{key}.safetensors")
            b = load_file(two / "shards" / str(shard) / "steps" / f"{key}.safetensors")
            assert max_difference(a, b) < WEIGHT_TOL, key
