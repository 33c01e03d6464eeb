"""Runs a spec document through `python -m modelops_jobs.launch` as a Job pod would.

The distributed tests start the real launcher (torchrun's elastic agent, gloo on CPU)
as a subprocess with the builder's environment variables, and read back what a pod
leaves: its exit code, its termination message, the published output and manifest.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = f"{ROOT / 'operator'}:{ROOT / 'jobs'}"
LAUNCH_TIMEOUT_S = 240


@dataclass
class PodRun:
    exit_code: int
    result: dict[str, Any]
    stderr: str


def pod_env(nproc: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {
        "PYTHONPATH": PYTHONPATH,
        "MODELOPS_THREADS": "1",
        "MODELOPS_NPROC_PER_NODE": str(nproc),
        "MODELOPS_NNODES": "1",
    }
    return env | (extra or {})


def start_pod(
    document: dict[str, Any],
    workdir: Path,
    nproc: int,
    checkpoint_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / "spec.json"
    spec.write_text(json.dumps(document))
    termination = workdir / "termination-log"
    termination.unlink(missing_ok=True)
    args = [sys.executable, "-m", "modelops_jobs.launch", "--spec", str(spec)]
    args += ["--termination-log", str(termination)]
    if checkpoint_dir is not None:
        args += ["--checkpoint-dir", str(checkpoint_dir)]
    proc = subprocess.Popen(
        args,
        env=pod_env(nproc, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,
    )
    return proc, termination


def finish(proc: subprocess.Popen[str], termination: Path) -> PodRun:
    _, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    result = json.loads(termination.read_text()) if termination.exists() else {}
    return PodRun(proc.returncode, result, err)


def run_pod(
    document: dict[str, Any],
    workdir: Path,
    nproc: int,
    checkpoint_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> PodRun:
    proc, termination = start_pod(document, workdir, nproc, checkpoint_dir, env)
    return finish(proc, termination)


def worker_pid(launcher: int, rank: int, timeout: float = 120.0) -> int:
    """The pid of the launcher's worker with RANK=rank (read from /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in _children(launcher):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return pid
        time.sleep(0.05)
    raise TimeoutError(f"no worker with RANK={rank} under pid {launcher}")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def wait_for_file(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


def sigterm(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)


def weights(directory: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(directory / name)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys(), (sorted(a)[:5], sorted(b)[:5])
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
