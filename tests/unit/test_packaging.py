"""Packaging invariants: the source roots, the lock file, the Makefile's help."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_is_never_a_package():
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "jobs" / "__init__.py").exists()


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_every_dependency_is_pinned_in_the_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r) for r in extra}
    lock = {
        _name(line): line
        for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    missing = declared - set(lock)
    assert not missing, f"add to requirements/lock.txt: {sorted(missing)}"
    assert all("==" in line for line in lock.values()), "the lock pins exact versions"


def test_operator_extra_has_no_torch():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert not {_name(r) for r in extras["operator"]} & {
        "torch",
        "transformers",
        "peft",
        "bitsandbytes",
    }


def test_every_make_target_has_help():
    text = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-zA-Z][a-zA-Z_-]*):(?!=)", text, flags=re.M)
    documented = set(re.findall(r"^([a-zA-Z][a-zA-Z_-]*):.*## ", text, flags=re.M))
    assert set(targets) <= documented, f"targets without help: {set(targets) - documented}"
    for required in (
        "install",
        "crds",
        "crds-check",
        "lint",
        "typecheck",
        "test",
        "test-unit",
        "test-jobs",
        "test-integration",
        "cluster-up",
        "cluster-down",
        "demo",
        "bench",
    ):
        assert required in documented


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
