"""LoRA fine-tuning and Trans-LoRA distillation over 2 CPU processes (gloo, DDP over the
adapter) through the real launcher, against one process with the same global batch.

The ranks take contiguous rows of each global micro-batch and scale their mean loss by
their share of its labelled tokens, so the averaged gradient is the one-process one;
the float sums run in another order (and each rank pads to its own longest row), so
the adapters agree to ADAPTER_TOL, not bitwise. SIGTERM to one rank mid-way through the
distillation, then a retry, ends bitwise where the uninterrupted 2-process run ends.
"""

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.jobs.distributed_harness import (
    finish,
    max_difference,
    run_pod,
    sigterm,
    start_pod,
    weights,
    worker_pid,
)

from modelops_api.meta import EXIT_PERMANENT, EXIT_RETRYABLE
from modelops_jobs import tiny
from modelops_jobs.data import write_jsonl

ADAPTER_TOL = 1e-5
"""Largest |a_2proc - a_1proc| of the adapter weights after the run (measured: ~1e-7)."""
LOSS_TOL = 1e-5
ADAPTER = "adapter_model.safetensors"
TASK = "abcdefgh"


def pair(rng: random.Random) -> dict[str, str]:
    body = " ".join(rng.choice(TASK) for _ in range(rng.randint(2, 6)))  # uneven lengths
    shifted = " ".join(TASK[(TASK.index(c) + 1) % len(TASK)] for c in body.split())
    return {"prompt": f"Shift: {body}\nAnswer:", "completion": f" {shifted}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dist-lora")
    rng = random.Random(0)
    rows = [pair(rng) for _ in range(80)]
    write_jsonl(root / "task.jsonl", rows)
    tokenizer = tiny.train_tokenizer([r["prompt"] + r["completion"] for r in rows], 96)
    model = tiny.tiny_causal_lm(len(tokenizer), "llama", hidden=32, layers=2, heads=2, ffn=64)
    tiny.save_model_dir(model, tokenizer, root / "base")
    return {"root": root}


def finetune(root: Path, out: str, strategy: str = "auto", steps: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelAdaptation",
        "metadata": {"name": "tune", "namespace": "ml"},
        "run": {"number": 1},
        "spec": {
            "strategy": "lora",
            "model": {"uri": f"file://{root / 'base'}"},
            "data": {"uri": f"file://{root / 'task.jsonl'}"},
            "output": {"uri": f"file://{root / out}"},
            "distribution": {"strategy": strategy},
            "optimization": {
                "steps": steps,
                "learningRate": 5e-3,
                "batchSize": 6,
                "gradientAccumulation": 2,
                "sequenceLength": 32,
                "warmupRatio": 0.0,
            },
            "lora": {"lora": {"rank": 4, "alpha": 8}},
        },
    }


def transfer(root: Path, adapter: Path, out: str, steps: int = 40, every: int = 4) -> dict:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "LoRATransfer",
        "metadata": {"name": "move", "namespace": "ml"},
        "spec": {
            "sourceModel": {"uri": f"file://{root / 'base'}"},
            "sourceAdapter": {"uri": f"file://{adapter}"},
            "targetModel": {"uri": f"file://{root / 'base'}"},
            "seeds": [pair(random.Random(i)) for i in range(4)],
            "synthesis": {"samples": 24, "maxAttempts": 64, "maxNewTokens": 10, "filter": "none"},
            "distillation": {"teacherMaxNewTokens": 8, "teacherBatchSize": 16},
            "optimization": {
                "steps": steps,
                "learningRate": 5e-3,
                "batchSize": 4,
                "sequenceLength": 48,
                "warmupRatio": 0.0,
                "checkpointEvery": every,
            },
            "output": {"uri": f"file://{root / out}"},
        },
    }


@pytest.fixture(scope="module")
def single_finetune(world: dict[str, Any]) -> dict[str, Any]:
    root = world["root"]
    run = run_pod(finetune(root, "ft-single"), root / "pod-ft-single", nproc=1)
    assert run.exit_code == 0, run.stderr[-3000:]
    return run.result


def test_lora_finetune_on_two_processes_matches_one(
    world: dict[str, Any], single_finetune: dict[str, Any]
) -> None:
    root = world["root"]
    run = run_pod(finetune(root, "ft-ddp", "ddp"), root / "pod-ft-ddp", nproc=2)
    assert run.exit_code == 0, run.stderr[-3000:]
    one, two = root / "ft-single" / "run-0001", root / "ft-ddp" / "run-0001"
    assert max_difference(weights(one, ADAPTER), weights(two, ADAPTER)) < ADAPTER_TOL
    for key in ("trainLoss", "trainLossFirst", "evalLoss"):
        assert run.result["results"][key] == pytest.approx(
            single_finetune["results"][key], abs=LOSS_TOL
        )


def test_lora_refuses_fsdp_naming_the_field(world: dict[str, Any]) -> None:
    root = world["root"]
    run = run_pod(finetune(root, "ft-fsdp", "fsdp"), root / "pod-ft-fsdp", nproc=2)
    assert run.exit_code == EXIT_PERMANENT, run.stderr[-3000:]
    assert run.result["reason"] == "UnsupportedStrategy"
    assert "spec.distribution.strategy" in run.result["message"]


@pytest.fixture(scope="module")
def single_transfer(world: dict[str, Any], single_finetune: dict[str, Any]) -> dict[str, Any]:
    root = world["root"]
    adapter = root / "ft-single" / "run-0001"
    run = run_pod(transfer(root, adapter, "tl-single"), root / "pod-tl-single", nproc=1)
    assert run.exit_code == 0, run.stderr[-3000:]
    return run.result


@pytest.fixture(scope="module")
def transfer_pods(world: dict[str, Any], single_finetune: dict[str, Any]) -> Any:
    done: dict[str, Any] = {}

    def get(out: str) -> Any:
        if out not in done:
            root = world["root"]
            adapter = root / "ft-single" / "run-0001"
            done[out] = run_pod(transfer(root, adapter, out), root / f"pod-{out}", nproc=2)
        return done[out]

    return get


def test_translora_distillation_on_two_processes_matches_one(
    world: dict[str, Any], single_transfer: dict[str, Any], transfer_pods: Any
) -> None:
    root = world["root"]
    run = transfer_pods("tl-ddp")
    assert run.exit_code == 0, run.stderr[-3000:]
    difference = max_difference(
        weights(root / "tl-single", ADAPTER), weights(root / "tl-ddp", ADAPTER)
    )
    assert difference < ADAPTER_TOL, difference
    same = ("keptSamples", "attempts")
    assert {k: run.result["results"][k] for k in same} == {
        k: single_transfer["results"][k] for k in same
    }
    assert (root / "tl-ddp" / "synthetic.jsonl").read_text() == (
        root / "tl-single" / "synthetic.jsonl"
    ).read_text(), "every rank synthesised and labelled the same prompts"


def test_translora_sigterm_to_one_rank_then_resume_ends_where_the_uninterrupted_run_ends(
    world: dict[str, Any], single_finetune: dict[str, Any], transfer_pods: Any
) -> None:
    root = world["root"]
    adapter = root / "ft-single" / "run-0001"
    straight = transfer_pods("tl-ddp")
    assert straight.exit_code == 0, straight.stderr[-3000:]
    doc = transfer(root, adapter, "tl-resumed")
    ckpt = root / "ckpt-tl"
    proc, termination = start_pod(doc, root / "pod-tl-first", 2, ckpt)
    wait_for_probe(lambda: _train_step(ckpt) >= 4)  # distillation is under way
    sigterm(worker_pid(proc.pid, rank=1))
    first = finish(proc, termination)
    assert first.exit_code == EXIT_RETRYABLE, first.stderr[-3000:]
    stopped = [_train_step(ckpt, f) for f in ("state.pt", "state-rank00001.pt")]
    assert stopped[0] == stopped[1] and 4 <= stopped[0] < 40, stopped
    retry = run_pod(doc, root / "pod-tl-retry", 2, ckpt)
    assert retry.exit_code == 0, retry.stderr[-3000:]
    a = weights(root / "tl-ddp", ADAPTER)
    b = weights(root / "tl-resumed", ADAPTER)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _train_step(ckpt: Path, name: str = "state.pt") -> int:
    try:
        state = torch.load(ckpt / name, weights_only=False)
    except (OSError, EOFError, RuntimeError):
        return -1
    return int((state.get("train/distill") or {}).get("step", -1))


def wait_for_probe(probe: Any, timeout: float = 180.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
