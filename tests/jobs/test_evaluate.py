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
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

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
        {
            "id": f"s-{seed}-{i}",
            "text": t,
            "prompt": pair["prompt"],
            "completion": pair["completion"],
        }
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


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"seqLen": 128}, "candidate perplexity: seqLen 128 exceeds the model's 64 positions"),
        ({"seqLen": 4096}, "candidate perplexity: seqLen 4096 exceeds"),
        ({"data": {"uri": "HELDOUT", "textField": "body"}}, "has no field 'body'"),
    ],
    ids=["seq-len-over-positions", "seq-len-far-over", "no-text-field"],
)
def test_a_metric_the_data_does_not_allow_is_unavailable(
    world: dict[str, Path], spec: dict, needle: str
) -> None:
    root = world["root"]
    if "data" in spec:
        spec["data"]["uri"] = f"file://{root / 'heldout.jsonl'}"
    outcome = runner.execute(evaluation(root, model(root / "base"), metrics=["perplexity"], **spec))
    assert outcome.exit_code == EXIT_OK, outcome.result
    assert outcome.result.results == {"candidate": {}, "unavailable": {"candidate": ["perplexity"]}}
    assert needle in outcome.result.message


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


def test_every_method_that_publishes_a_model_has_a_layout() -> None:
    from modelops_jobs import registry
    from modelops_jobs.algorithms.evaluate_models import LAYOUTS

    kinds = {m for m in registry.METHODS if m.kind != registry.EVALUATION.kind}
    assert set(LAYOUTS) == {(m.kind, m.method) for m in kinds}


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


def test_unlearned_s3t_version_is_the_one_its_output_names(
    world: dict[str, Path], s3t_store: tuple[Path, Any], tmp_path: Path
) -> None:
    """An UnlearnRequest s3t with an output publishes the receipt and a manifest naming
    the store: the version scored is the one after the deletion, not the trained one."""
    root, store = world["root"], Path(shutil.copytree(s3t_store[0], tmp_path / "store"))
    request = {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "UnlearnRequest",
        "metadata": {"name": "forget"},
        "spec": {
            "method": "s3t",
            "model": {"uri": f"file://{store}"},
            "sampleIds": ["s-0-0"],
            "output": {"uri": f"file://{tmp_path / 'receipt'}"},
        },
    }
    outcome = runner.execute(request)
    assert outcome.exit_code == EXIT_OK, outcome.result
    after = outcome.result.artifact.version
    assert after and after != "v0001", outcome.result
    shutil.copytree(store, tmp_path / "trained")  # pin v0001's score on an unchanged copy
    (tmp_path / "trained" / "CURRENT").write_text("v0001\n")
    doc = evaluation(
        root,
        model(tmp_path / "receipt", "UnlearnRequest", "s3t"),
        model(store / "versions" / after, "UnlearnRequest", "s3t"),
        metrics=["perplexity"],
    )
    out = runner.execute(doc)
    assert out.exit_code == EXIT_OK, out.result
    results = out.result.results
    assert results["candidate"] == results["baseline"], "the output names the version after"
    assert f"candidate: S3T {after}" in out.result.message
    trained = evaluate(evaluation(root, model(tmp_path / "trained", method="s3t")))
    assert trained["candidate"]["perplexity"] != results["candidate"]["perplexity"]


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


@pytest.mark.parametrize(
    ("example", "roles"),
    [
        ("prune-retrain.yaml", ["retrain.data", "evaluation.data"]),
        ("model-adaptation-cpt.yaml", ["data", "cpt.replayData", "cpt.validationOld", "cpt.validationNew"]),
        ("model-adaptation-lora.yaml", ["data"]),
        ("unlearn-request.yaml", ["evaluation.testData"]),
        ("lora-transfer.yaml", ["evaluationData"]),
    ],
    ids=["perp", "cpt", "lora", "unlearn", "translora"],
)  # fmt: skip
def test_every_dataset_of_a_kind_is_found_by_its_field(example: str, roles: list[str]) -> None:
    from modelops_api import kind_info
    from modelops_jobs.dataset_lineage import dataset_refs

    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    spec = kind_info(doc["kind"]).spec.model_validate(doc["spec"])
    assert [role for role, _ in dataset_refs(spec)] == roles
    forget = spec.model_copy(update={"sample_ids": None, "samples_uri": "s3://b/forget.jsonl"})
    if doc["kind"] == "UnlearnRequest":
        assert ("samplesUri", "s3://b/forget.jsonl") in dataset_refs(forget)


def test_a_dataset_digest_covers_every_file_it_reads(tmp_path: Path) -> None:
    from modelops_jobs.dataset_lineage import digest

    (tmp_path / "d").mkdir()
    data.write_jsonl(tmp_path / "d" / "a.jsonl", [{"text": "a"}])
    data.write_jsonl(tmp_path / "d" / "b.jsonl", [{"text": "b"}])
    (tmp_path / "d" / "notes.txt").write_text("not read")
    first = digest(tmp_path / "d")
    (tmp_path / "d" / "notes.txt").write_text("changed, still not read")
    assert digest(tmp_path / "d") == first
    data.write_jsonl(tmp_path / "d" / "b.jsonl", [{"text": "B"}])
    assert digest(tmp_path / "d") != first and first is not None
    assert digest(tmp_path / "missing") is None and digest(tmp_path / "d" / "notes.txt")


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


@settings(max_examples=60, deadline=None)
@given(
    uri_len=st.integers(1, 1000),
    count=st.integers(0, MAX_DATASETS),
    result_keys=st.integers(0, 400),
    message_len=st.integers(0, 1024),
)
def test_any_result_fits_and_keeps_what_it_can(
    uri_len: int, count: int, result_keys: int, message_len: int
) -> None:
    """Whatever the sizes, the message is at most 4096 bytes and parses; the datasets
    kept are a prefix of the run's; results that fit alone are never dropped for them."""
    datasets = [DatasetLineage(role="data", uri="f" * uri_len + str(i)) for i in range(count)]
    artifact = Artifact(uri="file:///m", datasets=datasets)
    results = {f"metric{i}": float(i) for i in range(result_keys)}
    result = JobResult(
        ok=True, reason="Succeeded", message="m" * message_len, results=results, artifact=artifact
    )
    text = runner.termination_message(result)
    assert len(text.encode()) <= runner.TERMINATION_LIMIT
    parsed = JobResult.model_validate_json(text)
    assert parsed.artifact is not None and parsed.artifact.uri == "file:///m"
    kept = parsed.artifact.datasets
    assert kept == datasets[: len(kept)]
    alone = result.model_copy(
        update={"message": "", "artifact": artifact.model_copy(update={"datasets": []})}
    )
    if len(json.dumps(alone.to_wire(), separators=(",", ":"))) <= runner.TERMINATION_LIMIT - 200:
        assert parsed.results == results
