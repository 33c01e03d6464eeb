"""`modelops run -f` runs an example manifest in-process, with no cluster: the same
parsing and runner as a Job pod, on the tiny fixtures `modelops fixtures` makes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelops_jobs.testing.fixtures import build_example_fixtures

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT / 'jobs'}", "MODELOPS_THREADS": "2"}


@pytest.fixture(scope="module")
def fixtures():
    return build_example_fixtures(Path("/tmp/modelops"))


@pytest.mark.parametrize(
    ("example", "key"),
    [("prune-retrain.yaml", "maskPreserved"), ("model-adaptation-cpt.yaml", "newLoss")],
    ids=["prune-retrain", "cpt"],
)
def test_modelops_run_on_an_example(fixtures, tmp_path, example, key):
    manifest = (
        (ROOT / "examples" / example)
        .read_text()
        .replace("file:///tmp/modelops/out", f"file://{tmp_path}")
    )
    path = tmp_path / example
    path.write_text(manifest)
    proc = subprocess.run(
        [sys.executable, "-m", "modelops_cli.main", "run", "-f", str(path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["ok"] is True and key in result["results"]
    assert "[" in proc.stderr, "a progress bar on stderr"


def test_modelops_run_rejects_a_bad_manifest_naming_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: modelops.dev/v1alpha1\nkind: PruneRetrain\nmetadata: {name: x}\n"
        "spec:\n  model: {uri: 'file:///m'}\n  output: {uri: 'file:///o'}\n  pruning: {pattern: '2:4', sparsity: 0.7}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "modelops_cli.main", "run", "-f", str(path)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert "spec.pruning" in json.loads(proc.stdout)["message"]
