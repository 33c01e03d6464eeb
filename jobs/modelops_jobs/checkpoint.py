"""Resumable checkpoints and the SIGTERM contract.

Kubernetes sends SIGTERM before it kills a preempted or evicted pod. The handler only
sets a flag; the training loop calls `checkpointer.should_stop()` at each step, saves
its state with `save()` and raises `Preempted`, so the retried pod resumes with
`load()` and ends where an uninterrupted run would have ended. Saves are atomic
(write to a temporary file, then rename).
"""

import os
import random
import shutil
import signal
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import torch


class Checkpointer:
    """Saves and restores one training state under a directory."""

    FILE = "state.pt"

    def __init__(self, directory: Path | str | None, every: int = 100, rank: int = 0) -> None:
        self.directory = Path(directory) if directory else None
        self.every = every
        self.file = self.FILE if rank == 0 else f"state-rank{rank:05d}.pt"
        """Each rank of a distributed run keeps its own small state (RNG, cursors)."""
        self._stop = False

    # -- signals ---------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Turn SIGTERM (and SIGINT) into a stop request at the next step."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and stop (what SIGTERM does; tests call it)."""
        self._stop = True

    def should_stop(self) -> bool:
        return self._stop

    def due(self, step: int) -> bool:
        """Whether a periodic checkpoint is due after this (1-based) step."""
        return self.directory is not None and step % self.every == 0

    # -- state -----------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return self.directory / self.file if self.directory else None

    def save(self, state: dict[str, Any]) -> None:
        """Atomically save a state dict (tensors, ints, optimizer states, RNG states)."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {**state, "rng": capture_rng()}
        # torch.save rejects a dot-file name without an extension, hence the suffix.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".pt")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, self.directory / self.file)

    def load(self) -> dict[str, Any] | None:
        """The last saved state, with RNG states restored, or None."""
        if self.path is None or not self.path.exists():
            return None
        state: dict[str, Any] = torch.load(self.path, weights_only=False)
        if "rng" in state:
            restore_rng(state.pop("rng"))
        return state

    def clear(self) -> None:
        if self.path is not None and self.path.exists():
            self.path.unlink()

    def discard(self) -> None:
        """After a successful run: remove everything under the directory and the
        directory itself (an empty `.<name>.checkpoint` was left beside every output).
        A directory that cannot go (a mount point) is left empty."""
        if self.directory is None or not self.directory.exists():
            return
        for child in self.directory.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass


def capture_rng() -> dict[str, Any]:
    out: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, torch (and CUDA); optionally force deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # pragma: no cover
        pass
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
