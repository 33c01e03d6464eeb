"""SSD: the dampening arithmetic, forgetting one class of a tiny classifier, and the
UnlearnRequest job on a tiny causal LM with stored full-data importance."""

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from modelops_api.unlearn_request import DeletionReceipt, UnlearnRequestSpec
from modelops_jobs import runner
from modelops_jobs.algorithms import ssd, unlearn_ssd
from modelops_jobs.context import RunContext
from modelops_jobs.data import write_jsonl
from modelops_jobs.testing import tiny

CLASSES, DIM = 10, 16


# -- the arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "forget,full,alpha,lambda_,selected,beta",
    [
        ([4.0, 1.0, 0.0], [1.0, 1.0, 0.0], 2.0, 1.0, [0], [0.25]),  # only I_f > alpha*I_D
        ([4.0], [0.0], 10.0, 1.0, [0], [0.0]),  # I_D = 0: zeroed, no division by zero
        ([4.0], [1.0], 1.0, 100.0, [0], [1.0]),  # beta capped at 1: never amplified
        ([0.0, 0.0], [0.0, 1.0], 1.0, 1.0, [], []),  # nothing important to D_f
    ],
    ids=["select-by-alpha", "zero-full-importance", "beta-capped", "none-selected"],
)
def test_dampening_factors(
    forget: list[float],
    full: list[float],
    alpha: float,
    lambda_: float,
    selected: list[int],
    beta: list[float],
) -> None:
    idx, factors = ssd.dampening_factors(torch.tensor(forget), torch.tensor(full), alpha, lambda_)
    assert idx.tolist() == selected
    assert factors.tolist() == pytest.approx(beta)


@pytest.mark.parametrize(
    "name,patterns,expected",
    [
        ("model.decoder.layers.3.fc1.weight", ["layers.3*"], True),
        ("model.decoder.layers.3.fc1.weight", ["fc1"], True),
        ("model.decoder.layers.13.fc1.weight", ["layers.1"], False),
        ("model.decoder.layers.1.fc1.weight", ["layers.1"], True),
        ("lm_head.weight", [], True),
    ],
    ids=["glob", "module", "no-prefix-match", "exact-block", "empty-means-all"],
)
def test_parameter_patterns(name: str, patterns: list[str], expected: bool) -> None:
    assert ssd.matches(name, patterns) is expected


# -- forgetting a class -------------------------------------------------------------------


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    centers = torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(0)) * 1.5
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return centers[y] + torch.randn(n, DIM, generator=g), y


def batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]


def ce_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def classifier() -> dict[str, Any]:
    """An MLP trained on 10 Gaussian classes, with its full-data importance."""
    x, y = blobs(1500, 1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, CLASSES)
    )
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(15):
        for xb, yb in batches(*_shuffled(x, y)):
            opt.zero_grad()
            ce_loss(model, (xb, yb)).backward()
            opt.step()
    full = ssd.fisher_importance(model, batches(x, y), ce_loss)
    return {"model": model, "x": x, "y": y, "full": full, "test": blobs(500, 2)}


def _shuffled(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(len(x))
    return x[perm], y[perm]


def forget_class(
    classifier: dict[str, Any], alpha: float, lambda_: float = 1.0, **kw: Any
) -> tuple[nn.Module, ssd.DampenReport]:
    model = copy.deepcopy(classifier["model"])
    x, y = classifier["x"], classifier["y"]
    report = ssd.selective_synaptic_dampening(
        model,
        batches(x[y == 0], y[y == 0]),
        classifier["full"].__getitem__,
        ce_loss,
        alpha,
        lambda_,
        **kw,
    )
    return model, report


def test_ssd_forgets_a_class_and_keeps_the_rest(classifier: dict[str, Any]) -> None:
    x, y = classifier["x"], classifier["y"]
    tx, ty = classifier["test"]
    original = classifier["model"]
    assert accuracy(original, x[y == 0], y[y == 0]) > 0.95
    model, report = forget_class(classifier, alpha=10.0)
    assert report.dampened > 0
    assert accuracy(model, x[y == 0], y[y == 0]) < 0.1
    assert accuracy(model, x[y != 0], y[y != 0]) > accuracy(original, x[y != 0], y[y != 0]) - 0.05
    assert (
        accuracy(model, tx[ty != 0], ty[ty != 0])
        > accuracy(original, tx[ty != 0], ty[ty != 0]) - 0.05
    )


def test_larger_alpha_dampens_fewer_parameters(classifier: dict[str, Any]) -> None:
    counts = [forget_class(classifier, alpha=a)[1].dampened for a in (1.0, 5.0, 10.0, 50.0)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


def test_streaming_layer_by_layer_gives_the_same_model(classifier: dict[str, Any]) -> None:
    one_pass, _ = forget_class(classifier, alpha=5.0)
    streamed, report = forget_class(classifier, alpha=5.0, stream=True)
    assert report.passes == 3  # one per Linear of the MLP
    for a, b in zip(one_pass.parameters(), streamed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_patterns_restrict_what_is_dampened(classifier: dict[str, Any]) -> None:
    model, report = forget_class(classifier, alpha=5.0, patterns=["4"])
    assert set(report.per_tensor) == {"4.weight", "4.bias"}
    original = dict(classifier["model"].named_parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, original[name]) is (not name.startswith("4."))


def test_label_free_importance_is_mean_absolute_gradient(classifier: dict[str, Any]) -> None:
    x, y = classifier["x"][:128], classifier["y"][:128]
    model = classifier["model"]
    got = ssd.fisher_importance(model, batches(x, y), ce_loss, ["4.bias"], label_free=True)[
        "4.bias"
    ]
    grads = []
    for batch in batches(x, y):
        model.zero_grad()
        ce_loss(model, batch).backward()
        grads.append(model[4].bias.grad.abs().clone())
    model.zero_grad()
    assert torch.allclose(got, torch.stack(grads).mean(0))


# -- the UnlearnRequest job on a causal LM ------------------------------------------------


@pytest.fixture(scope="module")
def lm_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny LM that has memorised a few 'secret' records, saved with its importance."""
    root = tmp_path_factory.mktemp("ssd")
    general = tiny.grammar_corpus(48, seed=3)
    rng = random.Random(0)
    secrets = [" ".join(rng.choice(["zq", "xv", "kj", "wy"]) for _ in range(8)) for _ in range(6)]
    records = [{"id": f"g-{i}", "text": t} for i, t in enumerate(general)] + [
        {"id": f"s-{i}", "text": t} for i, t in enumerate(secrets)
    ]
    write_jsonl(root / "data.jsonl", records)
    write_jsonl(root / "retain.jsonl", records[:24])
    write_jsonl(
        root / "test.jsonl",
        [{"id": f"t-{i}", "text": t} for i, t in enumerate(tiny.grammar_corpus(24, seed=4))],
    )
    tok = tiny.train_tokenizer(tiny.grammar_corpus(200, seed=1) + secrets[:1], 300)
    model = tiny.tiny_causal_lm(
        len(tok), hidden=32, layers=2, heads=4, ffn=64, max_positions=64, seed=0
    )
    texts = [r["text"] for r in records]
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    lm_batches = ssd.lm_batches(tok, texts, 8, 32)
    torch.manual_seed(0)
    model.train()
    for _ in range(12):
        for batch in lm_batches:
            opt.zero_grad()
            ssd.causal_lm_loss(model, batch).backward()
            opt.step()
    tiny.save_model_dir(model, tok, root / "model")
    tiny.save_model_dir(model, tok, root / "bare")
    meta = {"data_uri": f"file://{root}/data.jsonl", "id_field": "id", "text_field": "text"}
    ssd.store_lm_importance(model, tok, texts, root / "model" / ssd.IMPORTANCE_FILE, 8, 32, meta)
    return {"root": root, "secret_ids": [f"s-{i}" for i in range(len(secrets))]}


def ssd_spec(root: Path, model: str = "model", **extra: Any) -> dict[str, Any]:
    return {
        "method": "ssd",
        "model": {"uri": f"file://{root}/{model}"},
        "sampleIds": ["s-0", "s-1", "s-2", "s-3", "s-4", "s-5", "missing-1"],
        "ssd": {"alpha": 5.0},
        "evaluation": {
            "retainData": {"uri": f"file://{root}/retain.jsonl"},
            "testData": {"uri": f"file://{root}/test.jsonl"},
        },
        "output": {"uri": f"file://{root}/out-{model}"},
        **extra,
    }


def test_ssd_job_dampens_and_raises_forget_loss(lm_world: dict[str, Any], tmp_path: Path) -> None:
    root = lm_world["root"]
    spec = UnlearnRequestSpec.model_validate(ssd_spec(root))
    before = UnlearnRequestSpec.model_validate(
        ssd_spec(root, ssd={"alpha": 1e6})
    )  # selects nothing
    baseline = unlearn_ssd.run(before, RunContext(output_dir=tmp_path / "baseline"))
    outcome = unlearn_ssd.run(spec, RunContext(output_dir=tmp_path / "out"))
    results = outcome.results
    assert baseline.results["dampened_parameters"] == 0
    assert results["deleted_samples"] == 6 and results["unknown_ids"] == 1
    assert results["dampened_parameters"] > 0
    assert results["forget_loss"] > baseline.results["forget_loss"] + 0.5
    assert results["retain_accuracy"] > baseline.results["retain_accuracy"] - 0.15
    assert 0.0 <= results["membership_inference"] <= 1.0
    receipt = DeletionReceipt.model_validate(outcome.lineage["receipt"])
    assert (
        receipt.method == "ssd"
        and receipt.exact is False
        and outcome.lineage["approximate"] is True
    )
    assert receipt.digest_before != receipt.digest_after
    assert (tmp_path / "out" / "config.json").exists() and (
        tmp_path / "out" / ssd.IMPORTANCE_FILE
    ).exists()


def test_forget_set_defaults_to_the_data_recorded_with_the_importance(
    lm_world: dict[str, Any], tmp_path: Path
) -> None:
    spec = UnlearnRequestSpec.model_validate({**ssd_spec(lm_world["root"]), "evaluation": {}})
    assert spec.ssd.forget_data is None
    assert unlearn_ssd.run(spec, RunContext(output_dir=tmp_path)).results["deleted_samples"] == 6


@pytest.mark.parametrize(
    "case,reason",
    [
        ("no-importance", "ImportanceMissing"),
        ("no-output", "OutputRequired"),
        ("bad-id", "InvalidSampleID"),
    ],
    ids=lambda x: x,
)
def test_ssd_bad_input(lm_world: dict[str, Any], tmp_path: Path, case: str, reason: str) -> None:
    root = lm_world["root"]
    spec = ssd_spec(root, model="bare" if case == "no-importance" else "model")
    spec["output"] = {"uri": f"file://{tmp_path}/out"}
    if case == "no-output":
        del spec["output"]
    if case == "bad-id":
        (tmp_path / "ids.txt").write_text("s-0\nnot an id\n")
        del spec["sampleIds"]
        spec["samplesUri"] = f"file://{tmp_path}/ids.txt"
    doc = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "UnlearnRequest",
        "metadata": {"name": "u"},
        "spec": spec,
    }
    outcome = runner.execute(doc)
    assert not outcome.result.ok and outcome.result.reason == reason
    assert not (tmp_path / "out").exists()
