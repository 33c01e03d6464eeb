"""PERP (PruneRetrain) on tiny models built here: pruning criteria and patterns, mask-keeping
merges, retraining, SIGTERM resume, bad input, and the runner end to end.

One tiny OPT model is pre-trained for a few seconds on standard-library docstrings (module
fixture), so that pruning measurably hurts and retraining measurably helps.
"""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from modelops_api.common import LoRAConfig
from modelops_api.meta import EXIT_OK, EXIT_PERMANENT
from modelops_api.prune_retrain import PruneRetrainResults, PruneRetrainSpec
from modelops_jobs import data
from modelops_jobs.algorithms import perp_job, perp_peft, pruning, pruning_driver, sparsegpt
from modelops_jobs.checkpoint import Checkpointer, seed_everything
from modelops_jobs.context import RunContext
from modelops_jobs.errors import Preempted
from modelops_jobs.reporting import ProgressEvent, Reporter
from modelops_jobs.runner import execute
from modelops_jobs.storage import MANIFEST
from modelops_jobs.testing import tiny

SEQ = 32
CRITERIA = ("magnitude", "wanda", "sparsegpt")
PATTERNS = {"unstructured": None, "2:4": (2, 4)}
VARIANTS = ("masklora", "scalelora", "lora_prune", "lora")


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[str]]:
    texts = tiny.stdlib_docstrings()
    return {"train": texts[:600], "eval": texts[-120:], "tokenizer": texts[:1500]}


@pytest.fixture(scope="module")
def tokenizer(corpus: dict[str, list[str]]) -> Any:
    return tiny.train_tokenizer(corpus["tokenizer"], vocab_size=256)


@pytest.fixture(scope="module")
def train_windows(tokenizer: Any, corpus: dict[str, list[str]]) -> torch.Tensor:
    return data.lm_windows(data.token_stream(tokenizer, corpus["train"]), SEQ)


def pretrain(model: torch.nn.Module, windows: torch.Tensor, steps: int, seed: int = 0) -> None:
    """A short dense pre-training so that pruning hurts and retraining helps."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch = windows[torch.randint(0, windows.shape[0], (16,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def trained(tokenizer: Any, train_windows: torch.Tensor) -> torch.nn.Module:
    model = tiny.tiny_causal_lm(
        len(tokenizer), "opt", hidden=32, layers=2, heads=4, ffn=64, max_positions=64, seed=0
    )
    pretrain(model, train_windows, steps=150)
    return model


@pytest.fixture(scope="module")
def workspace(
    tmp_path_factory: pytest.TempPathFactory,
    trained: torch.nn.Module,
    tokenizer: Any,
    corpus: dict[str, list[str]],
) -> Path:
    root = tmp_path_factory.mktemp("perp")
    tiny.save_model_dir(trained, tokenizer, root / "model")
    data.write_jsonl(root / "train.jsonl", [{"text": t} for t in corpus["train"]])
    data.write_jsonl(root / "eval.jsonl", [{"text": t} for t in corpus["eval"]])
    data.write_jsonl(root / "short.jsonl", [{"text": "Too short."}])
    return root


def document(root: Path, output: str, **overrides: Any) -> dict[str, Any]:
    """A PruneRetrain spec document (camelCase) for the runner, on the workspace files."""
    spec: dict[str, Any] = {
        "model": {"uri": f"file://{root}/model"},
        "pruning": {"criterion": "magnitude", "sparsity": 0.5, "calibrationSamples": 16},
        "retrain": {
            "subset": ["biases", "norms", "head", "masklora"],
            "lora": {"rank": 4, "alpha": 8},
            "data": {"uri": f"file://{root}/train.jsonl"},
            "optimization": {
                "steps": 30,
                "batchSize": 8,
                "sequenceLength": SEQ,
                "learningRate": 3e-3,
                "checkpointEvery": 1000,
            },
        },
        "evaluation": {"data": {"uri": f"file://{root}/eval.jsonl"}, "maxWindows": 24},
        "output": {"uri": f"file://{root}/{output}"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(spec.get(section), dict):
            spec[section] = {**spec[section], **values}
        else:
            spec[section] = values
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "PruneRetrain",
        "metadata": {"name": "t"},
        "spec": spec,
    }


# -- pruning: exact sparsity, and masks kept through merge ---------------------------


@pytest.fixture(scope="module")
def pruned_cache() -> dict[tuple, Any]:
    """Pruned models by (criterion, pattern), pruned once per module."""
    return {}


def pruned(
    cache: dict[tuple, Any],
    model: torch.nn.Module,
    windows: torch.Tensor,
    criterion: str,
    pattern: str,
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    key = (criterion, pattern)
    if key not in cache:
        copy_ = copy.deepcopy(model)
        layers = pruning.prunable_layers(copy_)
        config = pruning.PruneConfig(criterion=criterion, sparsity=0.5, nm=PATTERNS[pattern])
        cache[key] = (copy_, pruning_driver.prune_model(copy_, layers, config, windows[:16]))
    model_, masks = cache[key]
    return copy.deepcopy(model_), masks


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_exact_sparsity_and_mask_through_merge(
    pruned_cache: dict,
    trained: torch.nn.Module,
    train_windows: torch.Tensor,
    criterion: str,
    pattern: str,
    variant: str,
) -> None:
    model, masks = pruned(pruned_cache, trained, train_windows, criterion, pattern)
    layers = pruning.prunable_layers(model)
    nm = PATTERNS[pattern]
    for layer in layers:
        weight = pruning.read_matrix(layer.module)
        assert int((weight == 0).sum()) == round(0.5 * weight.numel()), layer.name
        assert torch.equal(weight == 0, ~masks[layer.name])
    before = {lay.name: pruning.read_matrix(lay.module).clone() for lay in layers}

    plan = perp_peft.select_subset(
        model, ["biases", "norms", "head", variant], layers, masks, LoRAConfig(rank=4, alpha=8)
    )
    params = [p for _, p in perp_peft.trainable_parameters(model)]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for step in range(4):
        batch = train_windows[step * 8 : step * 8 + 8]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    perp_peft.merge(model, plan)
    layers = pruning.prunable_layers(model)
    report = pruning.verify_masks(layers, masks, nm)
    changed = any(
        not torch.equal(pruning.read_matrix(lay.module), before[lay.name]) for lay in layers
    )
    assert changed, "the adapters must have moved the merged weights"
    if variant == "lora":
        assert not report.mask_preserved and report.sparsity < 0.05
    else:
        assert report.mask_preserved and report.pattern_holds
        assert report.sparsity == pytest.approx(0.5, abs=0)


def test_gpt2_conv1d_and_4_8_pattern(tokenizer: Any, train_windows: torch.Tensor) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    layers = pruning.prunable_layers(model)
    assert {lay.name.rsplit(".", 1)[-1] for lay in layers} == {"c_attn", "c_proj", "c_fc"}
    config = pruning.PruneConfig(criterion="sparsegpt", sparsity=0.5, nm=(4, 8))
    masks = pruning_driver.prune_model(model, layers, config, train_windows[:8])
    plan = perp_peft.select_subset(model, ["masklora"], layers, masks, LoRAConfig(rank=2))
    for adapter in plan.adapters.values():
        torch.nn.init.normal_(adapter.lora_B)
    perp_peft.merge(model, plan)
    report = pruning.verify_masks(pruning.prunable_layers(model), masks, (4, 8))
    assert report.mask_preserved and report.pattern_holds and report.sparsity == 0.5


# -- criteria: calibrated saliency reconstructs the layer better ---------------------


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("criterion", ["wanda", "sparsegpt"])
def test_calibrated_criteria_beat_magnitude(
    trained: torch.nn.Module, train_windows: torch.Tensor, criterion: str, pattern: str
) -> None:
    """Same layers, same calibration inputs, same sparsity: lower reconstruction error."""
    model = copy.deepcopy(trained)
    layers = pruning.prunable_layers(model)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        lay.module.register_forward_hook(
            lambda _m, a, _o, n=lay.name: inputs.__setitem__(n, a[0].reshape(-1, a[0].shape[-1]))
        )
        for lay in layers
    ]
    with torch.no_grad():
        model(input_ids=train_windows[:16])
    for hook in hooks:
        hook.remove()
    nm = PATTERNS[pattern]
    errors = {"magnitude": 0.0, criterion: 0.0}
    for lay in layers:
        weight, x = pruning.read_matrix(lay.module).float(), inputs[lay.name]
        magnitude = weight * pruning.select_keep_mask(pruning.magnitude_scores(weight), 0.5, nm)
        if criterion == "wanda":
            keep = pruning.select_keep_mask(pruning.wanda_scores(weight, (x**2).mean(0)), 0.5, nm)
            candidate = weight * keep
        else:
            candidate, keep = sparsegpt.sparsegpt_prune(weight, 2 * x.t() @ x / x.shape[0], 0.5, nm)
        assert int((~keep).sum()) == weight.numel() // 2
        errors["magnitude"] += sparsegpt.reconstruction_error(weight, magnitude, x)
        errors[criterion] += sparsegpt.reconstruction_error(weight, candidate, x)
    assert errors[criterion] < errors["magnitude"], errors


# -- the job: retraining helps, resume is exact, bad input fails clearly -------------


@pytest.mark.parametrize("mode", ["causal_lm", "reconstruction"])
def test_short_retrain_lowers_perplexity(workspace: Path, mode: str) -> None:
    doc = document(workspace, f"retrain-{mode}", pruning={"sparsity": 0.7}, retrain={"mode": mode})
    outcome = execute(doc)
    assert outcome.exit_code == EXIT_OK, outcome.result.message
    results = outcome.result.results
    assert results["prunedPerplexity"] > results["densePerplexity"]
    assert results["retrainedPerplexity"] < results["prunedPerplexity"]
    assert results["maskPreserved"] is True
    assert results["sparsity"] == pytest.approx(0.7, abs=1e-3)


def run_with_stop(spec: PruneRetrainSpec, out: Path, ckpt: Path, stop_at: int | None) -> list[int]:
    """perp_job.run as the runner calls it; a reporter sink asks to stop at step `stop_at`."""
    steps: list[int] = []
    ctx = RunContext(output_dir=out, checkpointer=Checkpointer(ckpt, every=1000), seed=spec.seed)

    def sink(event: ProgressEvent) -> None:
        if event.phase == "retrain" and event.step is not None:
            steps.append(event.step)
            if event.step == stop_at:
                ctx.checkpointer.request_stop()

    ctx.reporter = Reporter(sink)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(spec.seed)
    perp_job.run(spec, ctx)
    return steps


@pytest.mark.parametrize("mode", ["causal_lm", "reconstruction"])
def test_sigterm_resume_is_bit_identical(workspace: Path, tmp_path: Path, mode: str) -> None:
    doc = document(
        workspace,
        "unused",
        pruning={"criterion": "wanda"},
        retrain={
            "mode": mode,
            "subset": ["biases", "norms", "head", "scalelora"],
            "optimization": {
                "steps": 8,
                "batchSize": 4,
                "sequenceLength": SEQ,
                "learningRate": 3e-3,
                "checkpointEvery": 3,
            },
        },
    )
    spec = PruneRetrainSpec.model_validate(doc["spec"])
    run_with_stop(spec, tmp_path / "straight", tmp_path / "ckpt-a", None)
    with pytest.raises(Preempted):
        run_with_stop(spec, tmp_path / "stopped", tmp_path / "ckpt-b", stop_at=5)
    resumed_steps = run_with_stop(spec, tmp_path / "resumed", tmp_path / "ckpt-b", None)
    assert resumed_steps[0] == 6, "the second run must resume after step 5, not restart"
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name


BAD_INPUTS = {
    "missing-model": ({"model": {"uri": "file:///nonexistent/perp-model"}}, "ModelNotFound"),
    "not-causal-lm": ({"model": {"uri": "file://{root}/t5"}}, "NotACausalLM"),
    "nm-width": (
        {"model": {"uri": "file://{root}/width36"}, "pruning": {"pattern": "4:8", "sparsity": 0.5}},
        "PatternMismatch",
    ),
    "calibration-short": (
        {
            "pruning": {
                "criterion": "wanda",
                "calibrationData": {"uri": "file://{root}/short.jsonl"},
            }
        },
        "DataTooShort",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_fails_permanently(workspace: Path, tokenizer: Any, case: str) -> None:
    from transformers import T5Config

    if not (workspace / "t5").exists():
        T5Config(vocab_size=64, d_model=16, num_layers=1, num_heads=2).save_pretrained(
            workspace / "t5"
        )
        odd = tiny.tiny_causal_lm(len(tokenizer), "opt", hidden=36, layers=1, heads=4, ffn=64)
        tiny.save_model_dir(odd, tokenizer, workspace / "width36")
    overrides, reason = BAD_INPUTS[case]
    text = json.dumps(overrides).replace("{root}", str(workspace))
    outcome = execute(document(workspace, f"bad-{case}", **json.loads(text)))
    assert outcome.exit_code == EXIT_PERMANENT
    assert outcome.result.reason == reason, outcome.result.message
    if case == "nm-width":
        assert "self_attn.q_proj" in outcome.result.message
    assert not (workspace / f"bad-{case}").exists()


E2E = {
    "opt-wanda-2:4-masklora": ("opt", "wanda", "2:4", ["biases", "norms", "head", "masklora"]),
    "llama-sparsegpt-scalelora": ("llama", "sparsegpt", "unstructured", ["norms", "scalelora"]),
    "opt-magnitude-plain-lora": ("opt", "magnitude", "unstructured", ["biases", "lora"]),
}


@pytest.mark.parametrize("case", list(E2E), ids=list(E2E))
def test_runner_end_to_end(
    workspace: Path, tokenizer: Any, train_windows: torch.Tensor, case: str
) -> None:
    arch, criterion, pattern, subset = E2E[case]
    model_dir = workspace / ("model" if arch == "opt" else f"model-{arch}")
    if not model_dir.exists():
        model = tiny.tiny_causal_lm(
            len(tokenizer), arch, hidden=32, layers=2, heads=4, ffn=64, max_positions=64, seed=1
        )
        pretrain(model, train_windows, steps=60)
        tiny.save_model_dir(model, tokenizer, model_dir)
    doc = document(
        workspace,
        f"e2e-{case}",
        model={"uri": f"file://{model_dir}"},
        pruning={"criterion": criterion, "pattern": pattern, "calibrationSamples": 8},
        retrain={"subset": subset},
    )
    outcome = execute(doc)
    assert outcome.exit_code == EXIT_OK, outcome.result.message
    result = outcome.result
    assert result.ok and result.reason == "Succeeded"
    results = PruneRetrainResults.model_validate(result.results)
    out = workspace / f"e2e-{case}"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["kind"] == "PruneRetrain" and manifest["algorithm"] == "perp"
    assert manifest["results"] == result.results
    assert manifest["lineage"]["baseModel"] == f"file://{model_dir}"
    assert manifest["lineage"]["criterion"] == criterion
    assert manifest["lineage"]["subset"] == subset
    assert result.artifact is not None and result.artifact.manifest_digest.startswith("sha256:")

    loaded = AutoModelForCausalLM.from_pretrained(out)
    zeros = [
        float((pruning.read_matrix(lay.module) == 0).float().mean())
        for lay in pruning.prunable_layers(loaded)
    ]
    if "lora" in subset:
        assert results.dense_after_merge and not results.mask_preserved
        # about 0%: rows whose output never gets a gradient (dead ReLUs) keep their zeros
        assert results.sparsity < 0.05 and max(zeros) < 0.1
    else:
        assert results.mask_preserved and not results.dense_after_merge
        assert results.sparsity == 0.5 and zeros == [0.5] * len(zeros)
    assert 0 < results.trainable_share < 1
    assert None not in (
        results.dense_perplexity,
        results.pruned_perplexity,
        results.retrained_perplexity,
    )


def quantize_block_linears(model: torch.nn.Module, kind: str) -> None:
    """Swap every block linear for a bitsandbytes 4-bit (NF4) or 8-bit layer, in place."""
    import bitsandbytes as bnb

    for layer in pruning.prunable_layers(model):
        linear = layer.module
        if kind == "4bit":
            quantized = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                compute_dtype=torch.float32,
                quant_type="nf4",
            )
            quantized.weight = bnb.nn.Params4bit(
                linear.weight.data.clone(), requires_grad=False, quant_type="nf4"
            )
        else:
            quantized = bnb.nn.Linear8bitLt(
                linear.in_features, linear.out_features, has_fp16_weights=False
            )
            quantized.weight = bnb.nn.Int8Params(
                linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False
            )
        quantized.bias = torch.nn.Parameter(linear.bias.data.clone())
        perp_peft.set_submodule(model, layer.name, quantized.to("cpu"))


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_quantized_base_prunes_retrains_and_merges_to_sparse_linears(
    trained: torch.nn.Module, train_windows: torch.Tensor, workspace: Path, kind: str
) -> None:
    """The QLoRA-style path on bitsandbytes' CPU kernels: prune in full precision (weights read
    from the checkpoint), re-quantize, train MaskLoRA on the frozen quantized base, merge into
    full-precision sparse linears whose zeros are exactly the mask."""
    model = copy.deepcopy(trained)
    quantize_block_linears(model, kind)
    layers = pruning.prunable_layers(model)
    full_precision = pruning.checkpoint_weights(workspace / "model", layers)
    reference = dict(trained.named_parameters())
    for name, weight in full_precision.items():
        assert torch.equal(weight, reference[f"{name}.weight"])
    config = pruning.PruneConfig(
        criterion="wanda", sparsity=0.5, nm=(2, 4), full_precision=full_precision
    )
    masks = pruning_driver.prune_model(model, layers, config, train_windows[:8])
    for layer in layers:
        assert bool((pruning.read_matrix(layer.module)[~masks[layer.name]] == 0).all())
        assert torch.equal(full_precision[layer.name] == 0, ~masks[layer.name])
    plan = perp_peft.select_subset(model, ["biases", "masklora"], layers, masks, LoRAConfig(rank=2))
    params = [p for _, p in perp_peft.trainable_parameters(model)]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for step in range(2):
        batch = train_windows[step * 4 : step * 4 + 4]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    perp_peft.merge(model, plan, full_precision)
    layers = pruning.prunable_layers(model)
    assert all(type(lay.module) is torch.nn.Linear for lay in layers)
    report = pruning.verify_masks(layers, masks, (2, 4))
    assert report.mask_preserved and report.pattern_holds and report.sparsity == 0.5


GAPS = [
    ("half", (10.0, 20.0, 15.0), (0.5, False)),
    ("all", (10.0, 20.0, 10.0), (1.0, False)),
    ("better-than-dense", (54.0, 60.0, 5.0), (1.0, True)),  # was 9.17 silently
    ("no-gap", (10.0, 9.0, 9.5), (None, True)),
    ("missing", (None, 20.0, 15.0), (None, None)),
]


@pytest.mark.parametrize(("ppl", "expected"), [c[1:] for c in GAPS], ids=[c[0] for c in GAPS])
def test_gap_recovered_never_exceeds_one_and_says_better_than_dense(ppl, expected):
    """Issue 12: the demo reported gapRecovered=8.375 for a retrained model better than
    the (undertrained) dense one."""
    from modelops_jobs.algorithms.perp_job import gap_recovered

    assert gap_recovered(*ppl) == expected
