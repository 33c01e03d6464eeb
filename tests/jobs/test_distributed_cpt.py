"""Continual pre-training spread over 2 CPU processes (gloo) through the real launcher.

Each case runs `python -m modelops_jobs.launch` as a pod would, with
MODELOPS_NPROC_PER_NODE=2, and compares the published model with the one process run
of the same spec (same global batch). DDP and FSDP2 average the ranks' gradients, so
the sums are taken in another order than on one process: the weights agree to a
tolerance (WEIGHT_TOL, 5e-5; measured about 1e-5), not bitwise. A run stopped by
SIGTERM and resumed from its torch.distributed.checkpoint shards ends bitwise where
the uninterrupted run of the same world size ends.
"""

import json
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
    wait_for_file,
    weights,
    worker_pid,
)

from modelops_api.meta import EXIT_RETRYABLE
from modelops_jobs.data import write_jsonl
from modelops_jobs.testing import tiny

WEIGHT_TOL = 5e-5
"""Largest |w_2proc - w_1proc| allowed after STEPS AdamW steps. Measured: 7.5e-6 (DDP),
9.3e-6 (FSDP2); AdamW's division by sqrt(v) magnifies the last-bit differences of the
gradient sums for weights whose gradients are tiny. The losses differ by ~1e-8."""
LOSS_TOL = 1e-5
STEPS = 40
EVERY = 4
"""Periodic checkpoints do not change the result: every run of the module saves every 4
steps, so the SIGTERM test's uninterrupted run is the 2-process run of the same spec."""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny OPT model (untrained) and D0 / D1 text files."""
    root = tmp_path_factory.mktemp("dist-cpt")
    d0 = tiny.grammar_corpus(400, seed=0, variant=0)
    d1 = tiny.grammar_corpus(400, seed=1, variant=1)
    for name, texts in (("d0", d0), ("d1", d1)):
        write_jsonl(root / f"{name}.jsonl", [{"text": t} for t in texts[:360]])
        write_jsonl(root / f"{name}_val.jsonl", [{"text": t} for t in texts[360:]])
    tokenizer = tiny.train_tokenizer(d0, vocab_size=128)
    model = tiny.tiny_causal_lm(len(tokenizer), hidden=32, layers=2, heads=2, ffn=64, seed=0)
    tiny.save_model_dir(model, tokenizer, root / "base")
    return {"root": root}


def document(root: Path, out: str, strategy: str = "auto", **optimization: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelAdaptation",
        "metadata": {"name": "keep-current", "namespace": "ml"},
        "run": {"number": 1},
        "spec": {
            "strategy": "cpt",
            "model": {"uri": f"file://{root / 'base'}"},
            "data": {"uri": f"file://{root / 'd1.jsonl'}"},
            "output": {"uri": f"file://{root / out}"},
            "distribution": {"strategy": strategy},
            "optimization": {
                "steps": STEPS,
                "learningRate": 3e-3,
                "batchSize": 4,
                "gradientAccumulation": 2,
                "sequenceLength": 16,
                "checkpointEvery": EVERY,
                **optimization,
            },
            "cpt": {
                "replayData": {"uri": f"file://{root / 'd0.jsonl'}"},
                "validationOld": {"uri": f"file://{root / 'd0_val.jsonl'}"},
                "validationNew": {"uri": f"file://{root / 'd1_val.jsonl'}"},
                "replayRatio": 0.25,
                "schedule": {"kind": "infinite", "cooldownRatio": 0.3, "annealRatio": 0.2},
            },
        },
    }


def published(root: Path, out: str) -> Path:
    return root / out / "run-0001"


@pytest.fixture(scope="module")
def single(world: dict[str, Any]) -> dict[str, Any]:
    root = world["root"]
    run = run_pod(document(root, "single"), root / "pod-single", nproc=1)
    assert run.exit_code == 0, run.stderr[-3000:]
    return run.result


@pytest.fixture(scope="module")
def pods(world: dict[str, Any]) -> Any:
    """Run each (output, strategy) pod once per module."""
    done: dict[str, Any] = {}

    def get(out: str, strategy: str) -> Any:
        if out not in done:
            root = world["root"]
            done[out] = run_pod(document(root, out, strategy), root / f"pod-{out}", nproc=2)
        return done[out]

    return get


def manifest(root: Path, out: str) -> dict[str, Any]:
    return json.loads((published(root, out) / "manifest.json").read_text())


CASES = [("ddp", "ddp"), ("fsdp", "fsdp"), ("auto-on-cpu-is-ddp", "auto")]


@pytest.mark.parametrize(("out", "strategy"), CASES, ids=[c[0] for c in CASES])
def test_two_processes_match_one(
    world: dict[str, Any], single: dict[str, Any], pods: Any, out: str, strategy: str
) -> None:
    root = world["root"]
    run = pods(out, strategy)
    assert run.exit_code == 0, run.stderr[-3000:]
    difference = max_difference(weights(published(root, "single")), weights(published(root, out)))
    assert difference < WEIGHT_TOL, difference
    for key in ("newLoss", "oldLoss", "tokens", "replayTokens"):
        assert run.result["results"][key] == pytest.approx(single["results"][key], abs=LOSS_TOL)
    found = manifest(root, out)
    assert found["metrics"]["strategy"] == ("ddp" if strategy == "auto" else strategy)
    # "N processes use N devices": each rank reported its own rank and device
    ranks = found["distributed"]["ranks"]
    assert found["distributed"]["worldSize"] == 2
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["worldSize"] == 2 for r in ranks)
    expected = ["cuda:0", "cuda:1"] if torch.cuda.is_available() else ["cpu", "cpu"]
    assert [r["device"] for r in ranks] == expected


def test_fsdp_holds_half_the_training_state_per_rank(world: dict[str, Any], pods: Any) -> None:
    """Parameters + gradients + AdamW state per rank: FSDP2 about 1/N of DDP's."""
    root = world["root"]
    for out in ("ddp", "fsdp"):
        assert pods(out, out).exit_code == 0
    ddp = manifest(root, "ddp")["metrics"]["rankStateBytes"]
    fsdp = manifest(root, "fsdp")["metrics"]["rankStateBytes"]
    assert ddp[0] == ddp[1]
    assert all(0.45 * ddp[0] <= b <= 0.55 * ddp[0] for b in fsdp), (ddp, fsdp)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_pre_anneal_checkpoint_is_the_one_process_one(
    world: dict[str, Any], single: dict[str, Any], pods: Any, strategy: str
) -> None:
    """The infinite schedule's un-annealed model and AdamW state, written by rank 0 from
    full (gathered) states in the one-process format, so any later run continues them."""
    root = world["root"]
    assert pods(strategy, strategy).exit_code == 0
    one = published(root, "single") / "pre_anneal"
    two = published(root, strategy) / "pre_anneal"
    assert max_difference(weights(one), weights(two)) < WEIGHT_TOL
    a = torch.load(one / "optimizer.pt", weights_only=False)
    b = torch.load(two / "optimizer.pt", weights_only=False)
    assert a["param_groups"][0]["params"] == b["param_groups"][0]["params"]
    assert a["state"].keys() == b["state"].keys()
    for index, moments in a["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(moments[name], b["state"][index][name], atol=WEIGHT_TOL)


# SIGTERM to one rank is tried under FSDP, to the pod under DDP: between them both
# strategies' checkpoints and both signal paths (ddp-rank1 added 30 s and nothing new).
SIGTERMS = [("fsdp", "rank1"), ("ddp", "pod")]


@pytest.mark.parametrize(("strategy", "target"), SIGTERMS, ids=[f"{s}-{t}" for s, t in SIGTERMS])
def test_sigterm_then_resume_ends_where_the_uninterrupted_run_ends(
    world: dict[str, Any], pods: Any, strategy: str, target: str
) -> None:
    """SIGTERM to rank 1 only, or to the pod's main process (the launcher, as the
    kubelet sends it), which torchrun's agent forwards to every worker."""
    root = world["root"]
    straight = pods(strategy, strategy)
    assert straight.exit_code == 0, straight.stderr[-3000:]

    name = f"{strategy}-{target}"
    doc = document(root, f"resumed-{name}", strategy)
    ckpt = root / f"ckpt-{name}"
    proc, termination = start_pod(doc, root / f"pod-first-{name}", 2, ckpt)
    wait_for_file(ckpt / "dcp")  # the first periodic checkpoint: training is under way
    sigterm(worker_pid(proc.pid, rank=1) if target == "rank1" else proc.pid)
    first = finish(proc, termination)
    assert first.exit_code == EXIT_RETRYABLE, first.stderr[-3000:]
    assert first.result["reason"] == "Preempted", first.result
    stopped = torch.load(ckpt / "state.pt", weights_only=False)["train"]["step"]
    assert EVERY <= stopped < STEPS
    other = torch.load(ckpt / "state-rank00001.pt", weights_only=False)["train"]["step"]
    assert other == stopped, "both ranks stopped at the same step"

    retry = run_pod(doc, root / f"pod-retry-{name}", 2, ckpt)
    assert retry.exit_code == 0, retry.stderr[-3000:]
    a = weights(published(root, strategy))
    b = weights(published(root, f"resumed-{name}"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert retry.result["results"]["newLoss"] == straight.result["results"]["newLoss"]
    assert not ckpt.exists(), "the finished run discards its checkpoint"
