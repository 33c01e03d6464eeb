"""The `RunContext` an algorithm receives: where things are, how to report, when to stop.

An algorithm's entry point is `run(spec, ctx) -> AlgorithmResult` (the `Algorithm`
protocol of modelops_jobs.registry, which picks it by method). It reads inputs
through `ctx.resolve`, writes outputs only under `ctx.output_dir` (a staging directory
the runner publishes atomically), reports through `ctx.reporter` and checkpoints
through `ctx.checkpointer`.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch

from modelops_jobs.checkpoint import Checkpointer
from modelops_jobs.distributed import World
from modelops_jobs.reporting import NullReporter, Reporter
from modelops_jobs.storage import StorageResolver


@dataclass
class AlgorithmResult:
    """What an algorithm returns: results for the status, and lineage for the manifest."""

    results: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    """Extra figures stored in manifest.json only (too large for the status)."""
    version: str | None = None
    publish: bool = True
    """False when the algorithm published its output itself (versioned stores)."""
    message: str = ""
    """Detail for the JobResult's message (e.g. why a metric is unavailable)."""


class RunInfo(TypedDict, total=False):
    """The spec document's `run` (ModelAdaptation runs only; empty for one-shot kinds)."""

    number: int
    """The run's number (1, 2, ...): its output version is run-NNNN."""
    trigger: str
    """What started it (manual, schedule, drift, `modelops run`)."""
    parent: str
    """URI of the previous successful run's model, which this run continues from."""


@dataclass
class RunContext:
    """Everything an algorithm needs besides its spec."""

    output_dir: Path
    resolver: StorageResolver = field(default_factory=StorageResolver)
    reporter: Reporter = field(default_factory=NullReporter)
    checkpointer: Checkpointer = field(default_factory=lambda: Checkpointer(None))
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    work_dir: Path | None = None
    run: RunInfo = field(default_factory=lambda: RunInfo())
    world: World = field(default_factory=World)
    """This process's rank, world size and device (one process unless under torchrun)."""

    def resolve(self, uri: str, must_exist: bool = True) -> Path:
        """Local path for a storage URI (PermanentError if it must exist and does not)."""
        return self.resolver.local_path(uri, must_exist=must_exist, reporter=self.reporter)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
