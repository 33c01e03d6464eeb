"""The Dockerfiles, read (no Docker engine on these machines): multi-stage, non-root
(uid 1000, the uid the Job pods and the chart run as), the pins equal to
requirements/lock.txt for exactly the packages each image needs (pyproject's
dependencies plus the `operator` or `jobs` extra), no torch in the operator image, a
CUDA base for the jobs image, and the entry points the chart and the Job builder use."""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modelops_operator.build.pod import RUN_AS_USER

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "operator": ROOT / "images" / "operator.Dockerfile",
    "jobs": ROOT / "images" / "jobs.Dockerfile",
}
TORCH_STACK = {"torch", "transformers", "peft", "bitsandbytes", "accelerate"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif op == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append((op, rest))
    return args, stages


def pins(stages: list[Stage]) -> dict[str, str]:
    out: dict[str, str] = {}
    for stage in stages:
        for op, rest in stage.instructions:
            if op == "RUN" and "pip install" in rest:
                for word in shlex.split(rest.replace("&&", " ")):
                    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s]+)", word)
                    if m:
                        out[norm(m.group(1))] = m.group(2)
    return out


def lock() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            out[norm(name)] = version.strip()
    return out


def needed(extra: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"][extra]]
    return {norm(re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0]) for r in reqs}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_pins_match_the_lock_exactly(image):
    _, stages = parse(IMAGES[image])
    pinned, locked = pins(stages), lock()
    assert set(pinned) == needed(image), "pin exactly the packages the image needs"
    drift = {n: (v, locked.get(n)) for n, v in pinned.items() if locked.get(n) != v}
    assert drift == {}, f"{IMAGES[image].name} pins differ from requirements/lock.txt: {drift}"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_non_root_and_pinned_bases(image):
    _, stages = parse(IMAGES[image])
    assert len(stages) >= 2, "a build stage and a runtime stage"
    final = stages[-1]
    copies = [rest for op, rest in final.instructions if op == "COPY"]
    assert any(c.startswith(f"--from={stages[0].name}") for c in copies), "runtime copies the build"
    assert not any(op == "RUN" and "pip install" in rest for op, rest in final.instructions), (
        "nothing is pip-installed in the runtime stage"
    )
    users = [rest for op, rest in final.instructions if op == "USER"]
    assert users and users[-1] == f"{RUN_AS_USER}:{RUN_AS_USER}", "ends as uid:gid 1000"
    assert any(f"--uid {RUN_AS_USER}" in rest for op, rest in final.instructions if op == "RUN")
    for stage in stages:
        repo, _, tag = stage.base.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), stage.base


def test_operator_image_has_no_torch_and_runs_the_operator():
    _, stages = parse(IMAGES["operator"])
    assert not set(pins(stages)) & TORCH_STACK
    text = IMAGES["operator"].read_text()
    assert '".[operator]"' in text and "--no-deps" in text
    assert stages[-1].instructions[-1] == ("ENTRYPOINT", '["python", "-m", "modelops_operator"]')
    assert re.match(r"python:3\.11[.\d]*-slim", stages[0].base), "the Python the lock is tested on"


def test_jobs_image_is_cuda_with_the_training_stack_and_runs_the_jobs():
    _, stages = parse(IMAGES["jobs"])
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(pins(stages))
    assert all(s.base.startswith("nvidia/cuda:") for s in stages)
    assert "runtime" in stages[-1].base, "the runtime stage needs no CUDA compiler"
    text = IMAGES["jobs"].read_text()
    assert '".[jobs]"' in text and "--no-deps" in text
    assert stages[-1].instructions[-1] == ("ENTRYPOINT", '["python", "-m", "modelops_jobs.launch"]')


def test_chart_defaults_name_these_images():
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "modelops" / "values.yaml").read_text())
    assert values["image"]["repository"].endswith("/modelops-operator")
    assert values["jobs"]["image"]["repository"].endswith("/modelops-jobs")
    assert values["podSecurityContext"]["runAsUser"] == RUN_AS_USER
    assert values["securityContext"]["runAsUser"] == RUN_AS_USER
    from modelops_operator.config import OperatorConfig

    assert OperatorConfig.jobs_image.rsplit(":", 1)[0] == values["jobs"]["image"]["repository"]
