"""Issue 16: `lora_finetune` and `translora` imported each other (one side hidden in a
lazy import inside a function). The shared adapter training lives in `lora_training`;
these cases read each module's imports (anywhere in the file, functions included) and
fail when a cycle or a lazy import of the other side comes back."""

import ast
from pathlib import Path

import pytest

ALGORITHMS = Path(__file__).resolve().parents[2] / "jobs" / "modelops_jobs" / "algorithms"


def imported(module: str) -> dict[str, bool]:
    """Algorithm modules imported by `module` -> whether at the top level."""
    tree = ast.parse((ALGORITHMS / f"{module}.py").read_text())
    top = set(map(id, tree.body))
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "modelops_jobs.algorithms":
                names = [a.name for a in node.names]
            elif node.module.startswith("modelops_jobs.algorithms."):
                names = [node.module.rsplit(".", 1)[1]]
        elif isinstance(node, ast.Import):
            names = [a.name.rsplit(".", 1)[1] for a in node.names if "algorithms." in a.name]
        for name in names:
            found[name] = found.get(name, False) or id(node) in top
    return found


CASES = [
    ("translora-does-not-import-lora_finetune", "translora", "lora_finetune", None),
    ("translora_job-does-not-import-lora_finetune", "translora_job", "lora_finetune", None),
    ("lora_training-imports-neither", "lora_training", "translora", None),
    ("lora_training-is-not-a-finetune-client", "lora_training", "lora_finetune", None),
    ("lora_finetune-imports-translora-at-the-top", "lora_finetune", "translora", True),
    ("translora-imports-lora_training-at-the-top", "translora", "lora_training", True),
    (
        "translora_discriminator-does-not-import-lora_finetune",
        "translora_discriminator",
        "lora_finetune",
        None,
    ),
    (
        "lora_finetune-imports-translora_discriminator-at-the-top",
        "lora_finetune",
        "translora_discriminator",
        True,
    ),
]


@pytest.mark.parametrize(
    ("module", "other", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_lora_modules_import_without_a_cycle(
    module: str, other: str, expected: bool | None
) -> None:
    assert imported(module).get(other) is expected
