"""The launcher (`python -m modelops_jobs.launch`) and the pure parts of the runtime.

Tables: the builder's environment -> launch plan (bad values name the variable), the
workers' exit codes -> the pod's, rank sharding of a global batch and its loss scale,
and the auto strategy. End to end: the real torchrun agent starts 2 workers, one of
which exits early with a chosen code (a sitecustomize on that worker's path does it,
standing in for a rank that fails), and the pod's exit code follows the mapping.
"""

import json
from pathlib import Path

import pytest
import torch
from tests.jobs.distributed_harness import run_pod

from modelops_api.meta import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE
from modelops_jobs import launch
from modelops_jobs.distributed import (
    World,
    choose_strategy,
    loss_scale,
    shard_slice,
    training_bytes,
    transformer_blocks,
)

PLANS = [
    ("defaults", {}, (1, 1, 0, None)),
    ("one-node-two-gpus", {"MODELOPS_NPROC_PER_NODE": "2"}, (1, 2, 0, None)),
    (
        "jobset-pod-1",
        {
            "MODELOPS_NNODES": "2",
            "MODELOPS_NPROC_PER_NODE": "2",
            "JOB_COMPLETION_INDEX": "1",
            "MODELOPS_RDZV_ENDPOINT": "run-0-0.run:29500",
        },
        (2, 2, 1, "run-0-0.run:29500"),
    ),
    (
        "node-rank-beats-completion-index",
        {
            "MODELOPS_NNODES": "3",
            "MODELOPS_NODE_RANK": "2",
            "JOB_COMPLETION_INDEX": "0",
            "MODELOPS_RDZV_ENDPOINT": "h:1",
        },
        (3, 1, 2, "h:1"),
    ),
]


@pytest.mark.parametrize(("env", "expected"), [p[1:] for p in PLANS], ids=[p[0] for p in PLANS])
def test_launch_plan_from_the_builders_environment(env: dict[str, str], expected: tuple) -> None:
    plan = launch.plan_from_env(env)
    assert (plan.nnodes, plan.nproc_per_node, plan.node_rank, plan.rdzv_endpoint) == expected
    assert plan.in_process == (expected[:2] == (1, 1))


BAD_PLANS = [
    ("zero-processes", {"MODELOPS_NPROC_PER_NODE": "0"}, "MODELOPS_NPROC_PER_NODE"),
    ("not-a-number", {"MODELOPS_NNODES": "two"}, "MODELOPS_NNODES"),
    ("no-endpoint-across-nodes", {"MODELOPS_NNODES": "2"}, "MODELOPS_RDZV_ENDPOINT"),
    (
        "rank-outside",
        {"MODELOPS_NNODES": "2", "MODELOPS_NODE_RANK": "2", "MODELOPS_RDZV_ENDPOINT": "h:1"},
        "MODELOPS_NODE_RANK",
    ),
]


@pytest.mark.parametrize(
    ("env", "named"), [p[1:] for p in BAD_PLANS], ids=[p[0] for p in BAD_PLANS]
)
def test_a_bad_launch_environment_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        launch.plan_from_env(env)


CONFIGS = [
    ("one-node", {"MODELOPS_NPROC_PER_NODE": "2"}, ("localhost:0", None, 1)),
    (
        "pod-0-hosts-the-store",
        {"MODELOPS_NNODES": "2", "MODELOPS_NODE_RANK": "0", "MODELOPS_RDZV_ENDPOINT": "h:1234"},
        ("h:1234", True, 2),
    ),
    (
        "pod-1-default-port",
        {"MODELOPS_NNODES": "2", "JOB_COMPLETION_INDEX": "1", "MODELOPS_RDZV_ENDPOINT": "h"},
        ("h:29500", False, 2),
    ),
]


@pytest.mark.parametrize(("env", "expected"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_torchrun_launch_config(env: dict[str, str], expected: tuple) -> None:
    config = launch.launch_config(launch.plan_from_env(env), env)
    endpoint, is_host, nodes = expected
    assert config.rdzv_backend == "c10d" and config.rdzv_endpoint == endpoint
    assert config.rdzv_configs.get("is_host") == is_host
    assert config.min_nodes == config.max_nodes == nodes
    assert config.max_restarts == 0, "the Job or JobSet restarts the pod, not torchrun"


EXIT_CODES = [
    ("all-succeed", [0, 0, 0, 0], EXIT_OK),
    ("one-permanent", [0, EXIT_PERMANENT, 0, 0], EXIT_PERMANENT),
    ("permanent-beats-retryable", [EXIT_RETRYABLE, EXIT_PERMANENT], EXIT_PERMANENT),
    ("one-retryable", [0, EXIT_RETRYABLE], EXIT_RETRYABLE),
    ("crash", [1, 0], EXIT_RETRYABLE),
    ("killed-by-signal", [-9, 0], EXIT_RETRYABLE),
]


@pytest.mark.parametrize(
    ("codes", "expected"), [c[1:] for c in EXIT_CODES], ids=[c[0] for c in EXIT_CODES]
)
def test_workers_exit_codes_map_to_the_pods(codes: list[int], expected: int) -> None:
    assert launch.pod_exit_code(codes) == expected


def test_a_bad_launch_environment_fails_permanently_with_a_message(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    env = {"MODELOPS_NNODES": "2"}
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = launch.main(["--spec", "/nonexistent", "--termination-log", str(log)])
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert code == EXIT_PERMANENT
    result = json.loads(log.read_text())
    assert result["reason"] == "InvalidLaunch" and "MODELOPS_RDZV_ENDPOINT" in result["message"]


SHARDS = [
    ("even", 8, 2, [(0, 4), (4, 8)]),
    ("uneven", 7, 3, [(0, 3), (3, 5), (5, 7)]),
    ("one-row-each", 2, 2, [(0, 1), (1, 2)]),
]


@pytest.mark.parametrize(
    ("rows", "size", "expected"), [s[1:] for s in SHARDS], ids=[s[0] for s in SHARDS]
)
def test_ranks_split_a_global_batch_into_contiguous_parts(
    rows: int, size: int, expected: list[tuple[int, int]]
) -> None:
    parts = [shard_slice(rows, World(rank=r, world_size=size)) for r in range(size)]
    assert [(p.start, p.stop) for p in parts] == expected


def test_a_batch_smaller_than_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be split"):
        shard_slice(1, World(rank=0, world_size=2))


def test_scaled_rank_gradients_average_to_the_one_process_gradient() -> None:
    """Rows of unequal weight (tokens): the mean of the ranks' scaled gradients equals
    the gradient of the mean over all items, as DDP's averaging computes it."""
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    items = torch.randn(7, 3)
    (items @ w).square().mean().backward()
    expected = w.grad.clone()
    grads = []
    for rank in range(3):
        world = World(rank=rank, world_size=3)
        part = items[shard_slice(7, world)]
        w.grad = None
        ((part @ w).square().mean() * loss_scale(len(part), 7, world)).backward()
        grads.append(w.grad.clone())
    assert torch.allclose(sum(grads) / 3, expected, atol=1e-6)


STRATEGIES = [
    ("cpu-auto-is-ddp", "auto", 10**12, None, "ddp"),
    ("fits", "auto", 10 * 2**30, 80 * 2**30, "ddp"),
    ("does-not-fit", "auto", 112 * 10**9, 80 * 2**30, "fsdp"),
    ("asked-ddp", "ddp", 10**12, 80 * 2**30, "ddp"),
    ("asked-fsdp", "fsdp", 1, 80 * 2**30, "fsdp"),
]


@pytest.mark.parametrize(
    ("requested", "needed", "memory", "expected"),
    [s[1:] for s in STRATEGIES],
    ids=[s[0] for s in STRATEGIES],
)
def test_strategy_choice(requested: str, needed: int, memory: int | None, expected: str) -> None:
    assert choose_strategy(requested, needed, memory) == expected


def test_training_bytes_count_weights_grads_and_adamw_state_of_the_trainable_part() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.Linear(10, 10))
    model[0].requires_grad_(False)
    # frozen: 110 float32 weights; trainable: 110 x (4 weight + 4 grad + 8 AdamW)
    assert training_bytes(model) == 110 * 4 + 110 * 16


def test_fsdp_shards_each_transformer_block() -> None:
    from modelops_jobs import tiny

    model = tiny.tiny_causal_lm(64, hidden=16, layers=3, heads=2, ffn=32)
    assert [type(b).__name__ for b in transformer_blocks(model)] == ["OPTDecoderLayer"] * 3


EARLY_EXITS = [("rank1-exits-3", 3, EXIT_PERMANENT), ("rank1-crashes", 1, EXIT_RETRYABLE)]


@pytest.mark.parametrize(
    ("code", "expected"), [e[1:] for e in EARLY_EXITS], ids=[e[0] for e in EARLY_EXITS]
)
def test_one_failing_rank_sets_the_pods_exit_code(tmp_path: Path, code: int, expected: int) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        f"import os\nif os.environ.get('RANK') == '1':\n    os._exit({code})\n"
    )
    from tests.jobs.distributed_harness import PYTHONPATH

    document = {"kind": "ModelAdaptation", "spec": {}}  # rank 0 never gets past the group
    run = run_pod(document, tmp_path / "pod", nproc=2, env={"PYTHONPATH": f"{hook}:{PYTHONPATH}"})
    assert run.exit_code == expected, run.stderr[-3000:]
