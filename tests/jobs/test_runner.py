"""The Job contract, end to end: spec in; output, manifest, termination message and
exit code out — with the real runner, the real `python -m modelops_jobs` entry point
and a real (tiny) LoRA fine-tune."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelops_api.meta import EXIT_OK, EXIT_PERMANENT
from modelops_api.status import JobResult
from modelops_jobs import runner
from modelops_jobs.data import write_jsonl
from modelops_jobs.testing import tiny
from modelops_jobs.testing.fixtures import reversal_task

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'jobs'}", "MODELOPS_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    texts = [r["prompt"] + r["completion"] for r in reversal_task(200, seed=5)]
    tok = tiny.train_tokenizer(texts, vocab_size=300)
    model = tiny.tiny_causal_lm(len(tok), hidden=32, layers=2, heads=2, ffn=64, max_positions=64)
    tiny.save_model_dir(model, tok, root / "base")
    write_jsonl(root / "task.jsonl", reversal_task(64, seed=0))
    return root


def lora_document(root: Path, out: str, steps: int = 4) -> dict:
    return {
        "apiVersion": "modelops.dev/v1alpha1",
        "kind": "ModelAdaptation",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u-1"},
        "run": {"number": 1, "trigger": "test"},
        "spec": {
            "strategy": "lora",
            "model": {"uri": f"file://{root / 'base'}"},
            "data": {"uri": f"file://{root / 'task.jsonl'}"},
            "lora": {"lora": {"rank": 2, "alpha": 4}},
            "optimization": {
                "steps": steps,
                "batchSize": 4,
                "sequenceLength": 16,
                "learningRate": 0.01,
            },
            "output": {"uri": f"file://{out}"},
            "resources": {"gpu": {"count": 0}},
        },
    }


def test_entry_point_runs_a_real_algorithm_and_publishes(tiny_model, tmp_path):
    out = tmp_path / "versions"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(lora_document(tiny_model, str(out))))
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
    assert result.ok and result.artifact is not None
    assert len(term.read_bytes()) <= 4096
    published = out / "run-0001"
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["kind"] == "ModelAdaptation" and manifest["uid"] == "u-1"
    assert manifest["specDigest"].startswith("sha256:") and manifest["files"]
    assert result.artifact.manifest_digest.startswith("sha256:")
    assert not (out / ".run-0001.partial").exists(), "the staging directory was renamed into place"
    # JSON progress lines on stderr, never prints from the algorithm on stdout.
    assert proc.stdout == ""


def test_second_run_into_a_completed_output_fails_permanently(tiny_model, tmp_path):
    out = tmp_path / "versions"
    first = runner.execute(lora_document(tiny_model, str(out)))
    assert first.exit_code == EXIT_OK, first.result
    again = runner.execute(lora_document(tiny_model, str(out)))
    assert again.exit_code == EXIT_PERMANENT and again.result.reason == "OutputExists"


@pytest.mark.parametrize(
    ("mutate", "reason", "needle"),
    [
        (lambda d: d["spec"].update(strategy="magic"), "InvalidSpec", "spec.strategy"),
        (lambda d: d.update(kind="Nope"), "InvalidSpec", "unknown kind"),
        (lambda d: d["spec"]["model"].update(uri="file:///does/not/exist"), None, "does/not/exist"),
        (lambda d: d["spec"]["data"].update(uri="file:///no/data.jsonl"), None, "no/data.jsonl"),
    ],
    ids=["bad-enum", "unknown-kind", "missing-model", "missing-data"],
)
def test_bad_input_is_a_permanent_failure_with_a_reason(
    tiny_model, tmp_path, mutate, reason, needle
):
    doc = lora_document(tiny_model, str(tmp_path / "o"))
    mutate(doc)
    outcome = runner.execute(doc)
    assert outcome.exit_code == EXIT_PERMANENT
    assert not outcome.result.ok
    if reason:
        assert outcome.result.reason == reason
    assert needle in outcome.result.message
    assert not (tmp_path / "o" / "run-0001" / "manifest.json").exists(), (
        "no output that looks complete"
    )


def test_unreadable_spec_file(tmp_path):
    term = tmp_path / "t"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelops_jobs",
            "--spec",
            str(tmp_path / "missing.json"),
            "--termination-log",
            str(term),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_PERMANENT
    assert JobResult.model_validate_json(term.read_text()).reason == "InvalidSpec"


def test_a_finished_worker_exits_with_its_code_even_if_finalization_aborts(tmp_path):
    """CI once saw a two-rank PERP run succeed, write its result, then die in interpreter
    finalization ("terminate called without an active exception", SIGABRT from gloo's
    threads) - the pod would have failed retryably after the work was done. Once the
    result is written, the entry point leaves without finalization. Here an atexit
    handler that aborts stands in for the C++ teardown."""
    term = tmp_path / "t"
    boot = (
        "import atexit, os, runpy, sys; atexit.register(os.abort); "
        f"sys.argv = ['modelops_jobs', '--spec', {str(tmp_path / 'missing.json')!r}, "
        f"'--termination-log', {str(term)!r}]; "
        "runpy.run_module('modelops_jobs', run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", boot], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == EXIT_PERMANENT, proc.stderr[-2000:]
    assert JobResult.model_validate_json(term.read_text()).reason == "InvalidSpec"


def test_termination_message_fits_the_kubelet_limit():
    huge = JobResult(ok=False, reason="X", message="m" * 1024, results={"k": "v" * 5000})
    text = runner.termination_message(huge)
    assert len(text.encode()) <= 4096
    assert JobResult.model_validate_json(text).reason == "X"


def test_a_resumed_run_leaves_no_checkpoint_directory(tiny_model, tmp_path):
    """Issue 12: an empty `.<name>.checkpoint` directory was left beside every output.
    Here a run is stopped by SIGTERM after a checkpoint, resumed, and succeeds."""
    import signal

    from modelops_api.meta import EXIT_RETRYABLE
    from modelops_jobs.reporting import Reporter

    out = tmp_path / "versions"
    doc = lora_document(tiny_model, str(out), steps=8)
    doc["spec"]["optimization"]["checkpointEvery"] = 1

    def stop_at_3(event):
        if event.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        stopped = runner.execute(doc, Reporter(stop_at_3), install_signals=True)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert stopped.exit_code == EXIT_RETRYABLE, stopped.result
    checkpoint = out / ".run-0001.checkpoint"
    assert (checkpoint / "state.pt").exists()
    steps = []
    resumed = runner.execute(doc, Reporter(lambda e: e.step and steps.append(e.step)))
    assert resumed.exit_code == EXIT_OK, resumed.result
    assert steps and steps[0] > 1, "resumed from the checkpoint, not from step 1"
    assert not checkpoint.exists()
    assert sorted(p.name for p in out.iterdir()) == ["run-0001"]


def test_eta_falls_after_a_resume(monkeypatch):
    """Issue 12: after a resume at step 500 the ETA counted 500 steps done in the first
    second, started near zero and grew. It must fall, at the real rate."""
    from modelops_jobs import reporting

    clock = [100.0]
    monkeypatch.setattr(reporting.time, "monotonic", lambda: clock[0])
    etas = []
    reporter = reporting.Reporter(
        lambda e: e.eta_seconds is not None and etas.append(e.eta_seconds)
    )
    reporter.phase("train")
    for step in range(500, 511):  # one step a second, resumed at 500 of 1000
        clock[0] += 1.0
        reporter.step(step, 1000)
    assert etas == sorted(etas, reverse=True), etas
    assert etas[-1] == pytest.approx(1000 - 510, rel=0.01)


def test_eta_of_a_fresh_phase_counts_from_its_start(monkeypatch):
    from modelops_jobs import reporting

    clock = [0.0]
    monkeypatch.setattr(reporting.time, "monotonic", lambda: clock[0])
    etas = []
    reporter = reporting.Reporter(lambda e: etas.append(e.eta_seconds))
    reporter.phase("train")
    for step in (1, 2, 3):
        clock[0] += 2.0
        reporter.step(step, 10)
    assert etas[1:] == [pytest.approx(18.0), pytest.approx(16.0), pytest.approx(14.0)]
