"""Assemble docs/benchmarks.md from the sections each benchmark script writes.

Every script in benchmarks/ writes `docs/benchmarks/<name>.md` (its tables, the machine
and the command) and `docs/benchmarks/<name>.json` (the raw figures); this joins the
Markdown sections, in a fixed order, under one page.

    python benchmarks/assemble.py
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "perp",
    "unlearning",
    "cpt",
    "translora",
    "distributed",
    "storage",
    "operator_scale",
    "operator_soak",
    "gpu",
)
HEADER = """# Benchmarks

Measured by the scripts in `benchmarks/`, each of which states the machine and the exact
command and writes its raw figures to `docs/benchmarks/<name>.json`. Comparisons are made
side by side in one run, and stated as ratios. Every run here used the tiny models the
scripts build themselves on CPU, so absolute numbers describe the method's behaviour at
that scale, not LLM-scale quality; the algorithm pages (`docs/algorithms/`) say where the
tiny setting differs from the papers.

Regenerate: `make bench` (each script alone: `PYTHONPATH=operator:jobs python benchmarks/<name>.py`).
"""


def main() -> None:
    parts = [HEADER]
    for name in SECTIONS:
        path = ROOT / "docs" / "benchmarks" / f"{name}.md"
        if path.exists():
            parts.append(path.read_text().strip() + "\n")
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(parts))
    print(f"wrote {ROOT / 'docs' / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
