"""Models larger than one device: the offloaded (block-by-block) paths of pruning, perplexity
and reconstruction retraining give what the all-in-memory paths give, and a 4/8-bit base
goes to the local rank's GPU.

There is no GPU here, so the execution device is the CPU too: the offloaded code paths
run for real (blocks visited one at a time through `offload.block_on`, accelerate's
`cpu_offload_with_hook` on every block for evaluation, counted below), only the copies
between devices are no-ops. On CPU both paths do the same float operations, so the
comparisons are bitwise.
"""

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from modelops_api.prune_retrain import PruneRetrainSpec
from modelops_jobs import data, modelio, offload
from modelops_jobs.algorithms import perp_eval, perp_job, perp_train, pruning, pruning_driver
from modelops_jobs.checkpoint import Checkpointer, seed_everything
from modelops_jobs.context import RunContext
from modelops_jobs.errors import PermanentError
from modelops_jobs.testing import tiny

SEQ = 16
CPU = offload.Placement(execution=torch.device("cpu"))


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return tiny.stdlib_docstrings()[:300]


@pytest.fixture(scope="module")
def tokenizer(texts: list[str]) -> Any:
    return tiny.train_tokenizer(texts, vocab_size=128)


@pytest.fixture(scope="module")
def windows(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    return data.lm_windows(data.token_stream(tokenizer, texts), SEQ)[:24]


def model_for(arch: str, tokenizer: Any) -> torch.nn.Module:
    return tiny.tiny_causal_lm(
        len(tokenizer), arch, hidden=32, layers=3, heads=4, ffn=64, max_positions=64, seed=1
    ).eval()


@pytest.fixture
def visits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Ids of the blocks that `offload.block_on` moved, in order."""
    seen: list[int] = []
    real = offload.block_on

    def spy(block: torch.nn.Module, placement: offload.Placement) -> Any:
        seen.append(id(block))
        return real(block, placement)

    monkeypatch.setattr(offload, "block_on", spy)
    return seen


PRUNE_CASES = {
    "opt-magnitude": ("opt", "magnitude", None),
    "opt-wanda-2:4": ("opt", "wanda", (2, 4)),
    "opt-sparsegpt": ("opt", "sparsegpt", None),
    "llama-wanda": ("llama", "wanda", None),
    "llama-sparsegpt-2:4": ("llama", "sparsegpt", (2, 4)),
}


@pytest.mark.parametrize("case", list(PRUNE_CASES), ids=list(PRUNE_CASES))
def test_offloaded_pruning_equals_in_memory(
    case: str, tokenizer: Any, windows: torch.Tensor, visits: list[int]
) -> None:
    arch, criterion, nm = PRUNE_CASES[case]
    dense = model_for(arch, tokenizer)
    results = {}
    for name, placement in (("memory", None), ("offloaded", CPU)):
        model = copy.deepcopy(dense)
        layers = pruning.prunable_layers(model, embeddings_and_head=True)
        config = pruning.PruneConfig(criterion=criterion, sparsity=0.5, nm=nm, batch_size=4)
        config.placement = placement
        masks = pruning_driver.prune_model(model, layers, config, windows[:8])
        results[name] = (masks, {k: v.clone() for k, v in model.state_dict().items()})
        if placement is not None:
            assert visits == [id(b) for b in pruning.find_blocks(model)], "one visit per block"
    masks, weights = results["memory"]
    masks_off, weights_off = results["offloaded"]
    assert masks.keys() == masks_off.keys()
    for name in masks:
        assert torch.equal(masks[name], masks_off[name]), name
        assert masks_off[name].device == CPU.offload
    for name in weights:
        assert torch.equal(weights[name], weights_off[name]), name


@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_offloaded_perplexity_equals_in_memory(
    arch: str, tokenizer: Any, windows: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accelerate.hooks import CpuOffload

    model = model_for(arch, tokenizer)
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head.weight is embeddings.weight
    params = {name: id(p) for name, p in model.named_parameters()}
    calls: list[int] = []
    real = CpuOffload.pre_forward

    def counting(self: CpuOffload, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls.append(id(module))
        return real(self, module, *args, **kwargs)

    monkeypatch.setattr(CpuOffload, "pre_forward", counting)
    in_memory = perp_eval.perplexity(model, windows, 8)
    assert calls == []
    offloaded = perp_eval.perplexity(model, windows, 8, placement=CPU)
    assert offloaded == in_memory
    blocks = pruning.find_blocks(model)
    batches = -(-windows.shape[0] // 8)
    assert calls == [id(b) for b in blocks] * batches, "each block's hook fires once per batch"
    assert all(not hasattr(b, "_hf_hook") for b in blocks), "hooks removed afterwards"
    assert {name: id(p) for name, p in model.named_parameters()} == params
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied


def test_offloaded_reconstruction_retraining_equals_in_memory(
    tokenizer: Any, windows: torch.Tensor, tmp_path: Path, visits: list[int]
) -> None:
    spec = PruneRetrainSpec.model_validate(
        {
            "model": {"uri": "file:///unused"},
            "pruning": {"criterion": "wanda", "sparsity": 0.5},
            "retrain": {
                "mode": "reconstruction",
                "subset": ["biases", "norms"],
                "optimization": {"steps": 3, "batchSize": 4, "sequenceLength": SEQ},
            },
            "output": {"uri": "file:///unused-out"},
        }
    )
    dense = model_for("opt", tokenizer)
    finals = []
    for placement in (None, CPU):
        model = copy.deepcopy(dense)
        dense_blocks = [copy.deepcopy(b) for b in pruning.find_blocks(model)]
        layers = pruning.prunable_layers(model)
        config = pruning.PruneConfig(criterion="wanda", sparsity=0.5, batch_size=4)
        pruning_driver.prune_model(model, layers, config, windows[:8])
        for name, param in model.named_parameters():
            param.requires_grad_(name.endswith("bias") or "layer_norm" in name)
        perp_train.freeze_outside_blocks(model)
        seed_everything(0)
        ctx = RunContext(output_dir=tmp_path)
        perp_train.train_reconstruction(
            model, dense_blocks, windows[:8], spec, ctx, placement=placement
        )
        finals.append({k: v.clone() for k, v in model.state_dict().items()})
    assert len(visits) == len(pruning.find_blocks(dense)), "one visit per block while retraining"
    for name, tensor in finals[0].items():
        assert torch.equal(tensor, finals[1][name]), name


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any, texts: list[str]) -> Path:
    root = tmp_path_factory.mktemp("offload")
    tiny.save_model_dir(model_for("opt", tokenizer), tokenizer, root / "model")
    data.write_jsonl(root / "train.jsonl", [{"text": t} for t in texts[:200]])
    data.write_jsonl(root / "eval.jsonl", [{"text": t} for t in texts[200:]])
    return root


def perp_spec(root: Path, mode: str) -> PruneRetrainSpec:
    return PruneRetrainSpec.model_validate(
        {
            "model": {"uri": f"file://{root}/model"},
            "pruning": {"criterion": "sparsegpt", "sparsity": 0.5, "calibrationSamples": 8},
            "retrain": {
                "mode": mode,
                "subset": ["biases", "norms", "masklora"],
                "lora": {"rank": 2, "alpha": 4},
                "data": {"uri": f"file://{root}/train.jsonl"},
                "optimization": {"steps": 3, "batchSize": 4, "sequenceLength": SEQ},
            },
            "evaluation": {"data": {"uri": f"file://{root}/eval.jsonl"}, "maxWindows": 8},
            "output": {"uri": f"file://{root}/out"},
        }
    )


def test_perp_job_offloaded_equals_in_memory(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole job, with the placement decision forced to "offload" (the only stand-in)."""
    spec = perp_spec(workspace, "reconstruction")
    outcomes = {}
    for name in ("memory", "offloaded"):
        if name == "offloaded":
            monkeypatch.setattr(offload, "choose_placement", lambda *_: CPU)
        ctx = RunContext(output_dir=tmp_path / name, checkpointer=Checkpointer(None))
        ctx.output_dir.mkdir()
        seed_everything(spec.seed)
        outcomes[name] = perp_job.run(spec, ctx)
    memory, offloaded = outcomes["memory"], outcomes["offloaded"]
    assert offloaded.metrics["offloaded"] and not memory.metrics["offloaded"]
    for key in ("dense_perplexity", "pruned_perplexity", "retrained_perplexity", "sparsity"):
        assert offloaded.results[key] == memory.results[key], key
    assert offloaded.results["mask_preserved"]
    weights = load_file(tmp_path / "memory" / "model.safetensors")
    weights_off = load_file(tmp_path / "offloaded" / "model.safetensors")
    for key, tensor in weights.items():
        assert torch.equal(tensor, weights_off[key]), key


def test_causal_lm_retraining_of_a_too_large_model_is_refused(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offload, "choose_placement", lambda *_: CPU)
    ctx = RunContext(output_dir=tmp_path)
    with pytest.raises(PermanentError) as err:
        perp_job.run(perp_spec(workspace, "causal_lm"), ctx)
    assert err.value.reason == "ModelTooLarge" and "retrain.mode" in str(err.value)


GIB = 2**30
PLACEMENTS = {
    "cpu-never-offloads": (500 * GIB, "cpu", None, False),
    "fits": (10 * GIB, "cuda:0", 80 * GIB, False),
    "at-the-share": (64 * GIB, "cuda:0", 80 * GIB, False),
    "over-the-share": (65 * GIB, "cuda:1", 80 * GIB, True),
    "far-too-large": (140 * GIB, "cuda:0", 80 * GIB, True),
}


@pytest.mark.parametrize("case", list(PLACEMENTS), ids=list(PLACEMENTS))
def test_choose_placement(case: str) -> None:
    size, device, capacity, offloads = PLACEMENTS[case]
    placement = offload.choose_placement(size, torch.device(device), capacity)
    assert (placement is not None) == offloads
    if placement is not None:
        assert placement.execution == torch.device(device)
        assert placement.offload == torch.device("cpu")


DEVICE_MAPS = {
    "one-process": (None, {}, 0),
    "local-rank-3": (None, {"LOCAL_RANK": "3"}, 3),
    "rank-device-wins": (torch.device("cuda", 2), {"LOCAL_RANK": "0"}, 2),
    "cpu-device-uses-local-rank": (torch.device("cpu"), {"LOCAL_RANK": "1"}, 1),
}


@pytest.mark.parametrize("case", list(DEVICE_MAPS), ids=list(DEVICE_MAPS))
def test_quantized_base_goes_to_the_local_ranks_gpu(case: str) -> None:
    device, env, index = DEVICE_MAPS[case]
    assert modelio.quantized_device_map(device, env) == {"": index}


@pytest.mark.parametrize("raw", ["-1", "gpu0", ""], ids=["negative", "name", "empty"])
def test_bad_local_rank_is_a_clear_error(raw: str) -> None:
    with pytest.raises(PermanentError) as err:
        modelio.quantized_device_map(None, {"LOCAL_RANK": raw})
    assert err.value.reason == "InvalidEnvironment" and "LOCAL_RANK" in str(err.value)
