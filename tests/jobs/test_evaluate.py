"""The gate's evaluation Job (`kind: ModelEvaluation`) and the dataset digests a run
publishes, with the real runner on tiny models built here.

A random-initialised tiny LM scores near the uniform perplexity; its copy with noised
weights scores worse. Each kind's output is made the cheap way: a LoRA fine-tune and a
causal-LM S3T store through the runner; PERP and SSD outputs (full models), and a
Trans-LoRA adapter on another base, by hand in their published layout.
"""

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from modelops_api.meta import EXIT_OK, EXIT_PERMANENT
from modelops_api.status import MAX_DATASETS, Artifact, DatasetLineage, JobResult
from modelops_jobs import data, runner
from modelops_jobs.algorithms.perp_eval import perplexity
from modelops_jobs.modelio import load_causal_lm, load_tokenizer
from modelops_jobs.testing import tiny
from modelops_jobs.testing.fixtures import reversal_task
from modelops_jobs.transfer import sha256_file

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'jobs'}", "MODELOPS_THREADS": "1"}
SEQ_LEN, SAMPLES = 16, 24


def records(n: int, seed: int) -> list[dict[str, Any]]:
    """Held-out records with text (perplexity) and prompt/completion (taskScore)."""
    texts = tiny.grammar_corpus(n, seed=seed)
    return [
        {"id": f"s-{seed}-{i}", "text": t, **pair}
        for i, (t, pair) in enumerate(zip(texts, reversal_task(n, seed), strict=True))
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    rows = records(64, 0)
    tok = tiny.train_tokenizer([r["text"] + r["prompt"] + r["completion"] for r in rows], 300)
    base = tiny.tiny_causal_lm(len(tok), hidden=32, layers=2, heads=2, ffn=64, max_positions=64)
    tiny.save_model_dir(base, tok, root / "base")
    worse = copy.deepcopy(base)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for p in worse.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)
    tiny.save_model_dir(worse, tok, root / "worse")
    data.write_jsonl(root / "heldout.jsonl", records(SAMPLES + 8, 1))
    data.write_jsonl(root / "train.jsonl", rows)
    (root / "empty.jsonl").write_text("\n")
    return {"root": root}


def model(path: Path, kind: str = "ModelAdaptation", method: str | None = "cpt", **extra: Any):
    return {"version": path.name, "uri": f"file://{path}", "kind": kind, "method": method, **extra}


def evaluation(root: Path, candidate: dict, baseline: dict | None = None, **spec: Any) -> dict:
    body: dict[str, Any] = {
        "candidate": candidate,
        "data": {"uri": f"file://{root / 'heldout.jsonl'}"},
        "maxSamples": SAMPLES,
        "seqLen": SEQ_LEN,
        "metrics": ["perplexity", "taskScore"],
        **spec,
    }
    if baseline is not None:
        body["baseline"] = baseline
    return {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelEvaluation", "spec": body}


def evaluate(document: dict) -> dict[str, Any]:
    outcome = runner.execute(document)
    assert outcome.exit_code == EXIT_OK, outcome.result
    assert outcome.result.artifact is None, "the evaluation publishes nothing"
    return outcome.result.results


def reference_perplexity(path: Path, heldout: Path) -> float:
    """The existing perplexity function on the same samples, outside the Job."""
    texts = [r["text"] for r in data.read_records(heldout, SAMPLES)]
    windows = data.lm_windows(data.token_stream(load_tokenizer(path), texts), SEQ_LEN)
    return perplexity(load_causal_lm(path), windows, 8)


# -- scoring -------------------------------------------------------------------------------


def test_candidate_and_baseline_are_scored_on_the_same_samples(world: dict[str, Path]) -> None:
    root = world["root"]
    doc = evaluation(root, model(root / "worse"), model(root / "base", "PruneRetrain", "perp"))
    results = evaluate(doc)
    candidate, baseline = results["candidate"], results["baseline"]
    assert candidate["perplexity"] > baseline["perplexity"]
    for name, values in (("worse", candidate), ("base", baseline)):
        expected = reference_perplexity(root / name, root / "heldout.jsonl")
        assert values["perplexity"] == pytest.approx(expected, rel=1e-6)
        assert 0.0 <= values["taskScore"] <= 1.0
    assert "unavailable" not in results
    assert evaluate(doc) == results, "deterministic across runs"


def test_the_entry_point_runs_the_document(world: dict[str, Path], tmp_path: Path) -> None:
    root = world["root"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(evaluation(root, model(root / "worse"), metrics=["perplexity"])))
    term = tmp_path / "termination-log"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelops_jobs",
            "--spec",
            str(spec),
            "--termination-log",
            str(term),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    result = JobResult.model_validate_json(term.read_text())
    assert result.ok and set(result.results) == {"candidate"}, "no baseline: the candidate only"
    expected = reference_perplexity(root / "worse", root / "heldout.jsonl")
    assert result.results["candidate"]["perplexity"] == pytest.approx(expected, rel=1e-6)
    assert f"scored {SAMPLES} samples" in result.message


def test_a_nan_loss_leaves_the_metric_out(world: dict[str, Path], tmp_path: Path) -> None:
    root = world["root"]
    broken = load_causal_lm(root / "base")
    with torch.no_grad():
        broken.get_output_embeddings().weight.fill_(float("nan"))
    tiny.save_model_dir(broken, load_tokenizer(root / "base"), tmp_path / "nan")
    doc = evaluation(
        root,
        model(tmp_path / "nan"),
        model(root / "base", "PruneRetrain", "perp"),
        metrics=["perplexity"],
    )
    outcome = runner.execute(doc)
    assert outcome.exit_code == EXIT_OK, outcome.result
    results = outcome.result.results
    assert results["candidate"] == {} and results["unavailable"] == {"candidate": ["perplexity"]}
    assert math.isfinite(results["baseline"]["perplexity"])
    assert "candidate perplexity: the loss is not finite" in outcome.result.message
    text = runner.termination_message(outcome.result)
    assert "NaN" not in text and "Infinity" not in text


def test_metrics_of_the_run_itself_are_not_recomputed(world: dict[str, Path]) -> None:
    root = world["root"]
    doc = evaluation(
        root,
        model(root / "base", "UnlearnRequest", "ssd"),
        metrics=["perplexity", "forgetAccuracy"],
    )
    outcome = runner.execute(doc)
    assert outcome.result.results["unavailable"] == {"candidate": ["forgetAccuracy"]}
    assert "ModelVersion.spec.metrics" in outcome.result.message


@pytest.mark.parametrize(
    ("change", "reason", "needle"),
    [
        (lambda d, r: d["spec"]["data"].update(uri=f"file://{r}/none.jsonl"), None, "data.uri: "),
        (lambda d, r: d["spec"]["data"].update(uri=f"file://{r}/empty.jsonl"), "DataEmpty", "data.uri: no records"),
        (lambda d, r: d["spec"]["candidate"].update(uri=f"file://{r}/gone"), None, "candidate.uri: "),
        (lambda d, r: d["spec"]["candidate"].update(uri="nope://x/y"), "InvalidURI", "candidate.uri: "),
        (lambda d, r: d["spec"]["baseline"].update(uri=f"file://{r}/heldout.jsonl"), None, "baseline.uri: "),
        (lambda d, r: d["spec"]["candidate"].update(method="lora"), "InvalidSpec", "candidate.baseUri: "),
        (lambda d, r: d["spec"]["candidate"].update(method="sisa"), "InvalidSpec", "candidate.method: "),
        (lambda d, r: d["spec"].pop("data"), "InvalidSpec", "data"),
    ],
    ids=["missing-data", "empty-data", "missing-model", "bad-uri", "not-a-model", "adapter-without-base", "unknown-method", "no-data-field"],
)  # fmt: skip
def test_bad_input_fails_permanently_naming_the_field(
    world: dict[str, Path], change: Any, reason: str | None, needle: str
) -> None:
    root = world["root"]
    doc = evaluation(root, model(root / "base"), model(root / "base", "PruneRetrain", "perp"))
    change(doc, root)
    outcome = runner.execute(doc)
    assert outcome.exit_code == EXIT_PERMANENT and not outcome.result.ok
    assert reason is None or outcome.result.reason == reason
    assert needle in outcome.result.message, outcome.result.message


# -- each kind's output, loaded the way it was published -----------------------------------


@pytest.mark.parametrize(
    ("kind", "method"),
    [("PruneRetrain", "perp"), ("PruneRetrain", None), ("UnlearnRequest", "ssd")],
    ids=["perp", "perp-method-unset", "ssd"],
)
def test_full_model_outputs_load(world: dict[str, Path], kind: str, method: str | None) -> None:
    root = world["root"]
    results = evaluate(evaluation(root, model(root / "base", kind, method), metrics=["perplexity"]))
    expected = reference_perplexity(root / "base", root / "heldout.jsonl")
    assert results["candidate"]["perplexity"] == pytest.approx(expected, rel=1e-6)


def lora_run(root: Path, out: Path) -> runner.RunOutcome:
    return runner.execute(
        {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "ModelAdaptation",
            "metadata": {"name": "lora", "namespace": "ns", "uid": "u-1"},
            "run": {"number": 1},
            "spec": {
                "strategy": "lora",
                "model": {"uri": f"file://{root / 'base'}"},
                "data": {"uri": f"file://{root / 'train.jsonl'}"},
                "lora": {"lora": {"rank": 2, "alpha": 4}},
                "optimization": {
                    "steps": 6,
                    "batchSize": 4,
                    "sequenceLength": 16,
                    "learningRate": 0.05,
                },
                "output": {"uri": f"file://{out}"},
            },
        }
    )


@pytest.fixture(scope="module")
def lora_version(world: dict[str, Path]) -> tuple[Path, runner.RunOutcome]:
    out = world["root"] / "lora"
    outcome = lora_run(world["root"], out)
    assert outcome.exit_code == EXIT_OK, outcome.result
    return out / "run-0001", outcome


def test_lora_adapter_loads_on_the_base_its_manifest_names(
    world: dict[str, Path], lora_version: tuple[Path, Any]
) -> None:
    root, (adapter, _) = world["root"], lora_version
    assert (adapter / "adapter_config.json").exists() and not (adapter / "config.json").exists()
    results = evaluate(
        evaluation(
            root, model(adapter, method="lora"), model(root / "base", "PruneRetrain", "perp")
        )
    )
    candidate, baseline = results["candidate"]["perplexity"], results["baseline"]["perplexity"]
    assert math.isfinite(candidate) and candidate != pytest.approx(baseline, rel=1e-9)


def test_translora_adapter_loads_on_its_target_base(world: dict[str, Path], tmp_path: Path) -> None:
    """A Trans-LoRA output: an adapter for the target base (another width), with the
    manifest lineage the job writes; on the wrong base it is a permanent AdapterMismatch."""
    from peft import LoraConfig, get_peft_model

    root = world["root"]
    tok = load_tokenizer(root / "base")
    target = tiny.tiny_causal_lm(len(tok), hidden=48, layers=2, heads=2, ffn=96, max_positions=64)
    tiny.save_model_dir(target, tok, tmp_path / "target")
    student = get_peft_model(target, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    student.save_pretrained(str(tmp_path / "transferred"))
    lineage = {"targetModel": f"file://{tmp_path / 'target'}", "sourceModel": "file:///elsewhere"}
    (tmp_path / "transferred" / "manifest.json").write_text(json.dumps({"lineage": lineage}))
    candidate = model(tmp_path / "transferred", "LoRATransfer", None)
    results = evaluate(evaluation(root, candidate, metrics=["perplexity"]))
    expected = reference_perplexity(tmp_path / "target", root / "heldout.jsonl")
    assert results["candidate"]["perplexity"] == pytest.approx(expected, rel=1e-6), (
        "B = 0: the base"
    )
    wrong = evaluation(root, {**candidate, "baseUri": f"file://{root / 'base'}"})
    outcome = runner.execute(wrong)
    assert outcome.exit_code == EXIT_PERMANENT and outcome.result.reason == "AdapterMismatch"
    assert outcome.result.message.startswith("candidate.uri: ")


@pytest.fixture(scope="module")
def s3t_store(world: dict[str, Path]) -> tuple[Path, runner.RunOutcome]:
    root = world["root"]
    outcome = runner.execute(
        {
            "apiVersion": "modelops.dev/v1alpha1",
            "kind": "ModelAdaptation",
            "metadata": {"name": "s3t"},
            "run": {"number": 1},
            "spec": {
                "strategy": "s3t",
                "seed": 7,
                "model": {"uri": f"file://{root / 'base'}"},
                "data": {"uri": f"file://{root / 'train.jsonl'}", "maxSamples": 24},
                "output": {"uri": f"file://{root / 's3t'}"},
                "optimization": {"learningRate": 0.01, "batchSize": 8, "sequenceLength": 16},
                "s3t": {
                    "shards": 2,
                    "slices": 2,
                    "orders": 2,
                    "task": "causal_lm",
                    "lora": {"rank": 2, "alpha": 4},
                },
            },
        }
    )
    assert outcome.exit_code == EXIT_OK, outcome.result
    return root / "s3t" / "run-0001", outcome


def test_s3t_store_is_scored_as_its_ensemble_serves(
    world: dict[str, Path], s3t_store: tuple[Path, Any]
) -> None:
    from modelops_jobs.algorithms import s3t

    root, (store, _) = world["root"], s3t_store
    versions = sorted(p.name for p in (store / "versions").iterdir())
    for uri in (store, store / "versions" / versions[-1]):
        results = evaluate(evaluation(root, model(uri, method="s3t")))
        assert results["unavailable"] == {"candidate": ["taskScore"]}
        ensemble = s3t.load(store)
        texts = [r["text"] for r in data.read_records(root / "heldout.jsonl", SAMPLES)]
        windows = data.lm_windows(data.token_stream(ensemble.tokenizer, texts), SEQ_LEN)
        logits = ensemble.logits(windows)  # the served logits: the mean over live shards
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)
        )
        assert results["candidate"]["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)


# -- dataset digests in the lineage --------------------------------------------------------


def test_a_run_publishes_the_digests_of_the_data_it_read(
    world: dict[str, Path], lora_version: tuple[Path, runner.RunOutcome], s3t_store: Any
) -> None:
    root, (published, outcome) = world["root"], lora_version
    train = root / "train.jsonl"
    expected = DatasetLineage(role="data", uri=f"file://{train}", digest=sha256_file(train))
    artifact = outcome.result.artifact
    assert artifact is not None and artifact.datasets == [expected]
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["datasets"] == [expected.to_wire()]
    wire = json.loads(runner.termination_message(outcome.result))
    assert wire["artifact"]["datasets"] == [expected.to_wire()]
    store_artifact = s3t_store[1].result.artifact  # a store publishes itself: no manifest
    assert store_artifact.datasets == [expected] and store_artifact.version


def test_dataset_lineage_keeps_the_termination_message_under_its_limit() -> None:
    long_uri = "s3://bucket/" + "d" * 1000
    datasets = [
        DatasetLineage(role=f"r{i}", uri=f"{long_uri}{i}", digest="sha256:" + "0" * 64)
        for i in range(MAX_DATASETS)
    ]
    artifact = Artifact(
        uri="s3://bucket/model", manifest_digest="sha256:" + "1" * 64, datasets=datasets
    )
    result = JobResult(ok=True, reason="Succeeded", results={"loss": 1.0}, artifact=artifact)
    text = runner.termination_message(result)
    assert len(text.encode()) <= runner.TERMINATION_LIMIT
    parsed = JobResult.model_validate_json(text)
    assert parsed.results == {"loss": 1.0}, "the results are kept; the lineage is cut"
    kept = parsed.artifact.datasets
    assert 0 < len(kept) < MAX_DATASETS and kept == datasets[: len(kept)]
    with pytest.raises(ValueError, match="at most 16"):
        Artifact(uri="x", datasets=datasets + datasets[:1])
