"""The Go builds say which component and how far they are (issue 12: a first run was
minutes of silence), and a compile error still fails the build, visibly."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HELPER = Path(__file__).resolve().parents[2] / "hack/go-build-progress.sh"
MAIN = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hi") }\n'


def go_build(module: Path, source: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("go") is None:
        pytest.fail("go is required (it builds the control plane)")
    (module / "go.mod").write_text("module example.com/hello\n\ngo 1.21\n")
    (module / "main.go").write_text(source)
    script = f"set -euo pipefail; source {HELPER}; go_build 2 4 hello {module}/hello ."
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    return subprocess.run(
        ["bash", "-c", script], cwd=module, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_build_names_its_step_and_component(tmp_path):
    done = go_build(tmp_path, MAIN)
    assert done.returncode == 0, done.stderr
    assert "[2/4] building hello" in done.stderr and "packages to compile" in done.stderr
    assert "[2/4] hello built in" in done.stderr
    assert done.stdout == "" and (tmp_path / "hello").exists()


def test_a_compile_error_fails_and_is_shown(tmp_path):
    done = go_build(tmp_path, MAIN.replace('"hi"', "undefined_name"))
    assert done.returncode != 0
    assert "undefined" in done.stderr and "building hello failed" in done.stderr
