"""`python -m modelops_jobs.launch`: the Job container's command, one process per device.

The operator's Job (or each JobSet pod) runs this with the same arguments as
`python -m modelops_jobs` and a few environment variables (CONTRACT-13):
MODELOPS_NNODES, MODELOPS_NPROC_PER_NODE, MODELOPS_NODE_RANK (else
$JOB_COMPLETION_INDEX, else 0) and MODELOPS_RDZV_ENDPOINT (host:port, required across
nodes). One node and one process: the runner runs in this process, exactly as before.
Otherwise torchrun's own launcher (`elastic_launch`) starts the workers: a standalone
rendezvous on one node, c10d at MODELOPS_RDZV_ENDPOINT across nodes, no restarts (the
Job or JobSet restarts the pod). SIGTERM reaches the agent, which forwards it to every
worker (they checkpoint and exit). The workers' exit codes become the pod's: any
EXIT_PERMANENT -> EXIT_PERMANENT, else any failure -> EXIT_RETRYABLE, else 0.
"""

import os
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from modelops_api.meta import EXIT_OK, EXIT_PERMANENT, EXIT_RETRYABLE

RDZV_PORT = 29500
SHUTDOWN_GRACE_S = 25
"""How long the agent waits for SIGTERMed workers to save before it kills them (the
pod's default grace period is 30 s)."""


@dataclass(frozen=True)
class LaunchPlan:
    """How many processes this pod starts and how they meet."""

    nnodes: int
    nproc_per_node: int
    node_rank: int
    rdzv_endpoint: str | None

    @property
    def in_process(self) -> bool:
        return self.nnodes == 1 and self.nproc_per_node == 1


def _positive(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def plan_from_env(env: dict[str, str]) -> LaunchPlan:
    """The launch plan the builder's environment variables describe (ValueError naming
    the variable when one is wrong)."""
    nnodes = _positive(env, "MODELOPS_NNODES", 1)
    nproc = _positive(env, "MODELOPS_NPROC_PER_NODE", 1)
    rank_raw = env.get("MODELOPS_NODE_RANK") or env.get("JOB_COMPLETION_INDEX") or "0"
    try:
        node_rank = int(rank_raw)
    except ValueError:
        raise ValueError(f"MODELOPS_NODE_RANK must be an integer, got {rank_raw!r}") from None
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"MODELOPS_NODE_RANK {node_rank} is outside 0..{nnodes - 1}")
    endpoint = env.get("MODELOPS_RDZV_ENDPOINT") or None
    if nnodes > 1 and not endpoint:
        raise ValueError("MODELOPS_RDZV_ENDPOINT (host:port) is required when MODELOPS_NNODES > 1")
    return LaunchPlan(nnodes, nproc, node_rank, endpoint)


def pod_exit_code(worker_codes: Iterable[int]) -> int:
    """Any permanent failure -> EXIT_PERMANENT; any other failure (a signal is a
    negative code) -> EXIT_RETRYABLE; all zero -> EXIT_OK."""
    codes = list(worker_codes)
    if EXIT_PERMANENT in codes:
        return EXIT_PERMANENT
    if any(code != 0 for code in codes):
        return EXIT_RETRYABLE
    return EXIT_OK


def launch_config(plan: LaunchPlan, env: dict[str, str]) -> Any:
    """torchrun's LaunchConfig for this plan (standalone on one node, c10d across nodes)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    configs: dict[str, object] = {"rank": plan.node_rank}
    if plan.nnodes == 1:
        endpoint, run_id = "localhost:0", str(uuid.uuid4())
    else:
        configs["is_host"] = plan.node_rank == 0  # pod 0 serves the rendezvous store
        assert plan.rdzv_endpoint is not None
        endpoint = plan.rdzv_endpoint
        if ":" not in endpoint:
            endpoint = f"{endpoint}:{RDZV_PORT}"
        run_id = env.get("MODELOPS_RUN_ID", "modelops")
    return LaunchConfig(
        min_nodes=plan.nnodes,
        max_nodes=plan.nnodes,
        nproc_per_node=plan.nproc_per_node,
        logs_specs=DefaultLogsSpecs(),
        run_id=run_id,
        rdzv_endpoint=endpoint,
        rdzv_backend="c10d",
        rdzv_configs=configs,
        max_restarts=0,
        start_method="spawn",
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )


def run_workers(plan: LaunchPlan, argv: list[str], env: dict[str, str]) -> int:
    """Start `python -m modelops_jobs ARGV` on every local rank; the pod's exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    config = launch_config(plan, env)
    try:
        elastic_launch(config, sys.executable)("-m", "modelops_jobs", *argv)
    except ChildFailedError as exc:
        return pod_exit_code(failure.exitcode for failure in exc.failures.values())
    except SignalException:
        return EXIT_RETRYABLE  # the workers were told to checkpoint and stop
    return EXIT_OK


def _report_bad_environment(message: str, argv: list[str]) -> None:
    """The termination message for a launch that cannot start (InvalidLaunch)."""
    from modelops_api.status import JobResult
    from modelops_jobs.runner import write_termination_message

    path = None
    for i, arg in enumerate(argv):
        if arg == "--termination-log" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--termination-log="):
            path = arg.split("=", 1)[1]
    write_termination_message(JobResult(ok=False, reason="InvalidLaunch", message=message), path)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    try:
        plan = plan_from_env(env)
    except ValueError as exc:
        print(f"modelops launch: {exc}", file=sys.stderr)
        _report_bad_environment(str(exc), argv)
        return EXIT_PERMANENT
    if plan.in_process:
        from modelops_jobs.__main__ import main as run_in_process

        return run_in_process(argv)
    return run_workers(plan, argv, env)


if __name__ == "__main__":
    from modelops_jobs.__main__ import leave

    leave(main())  # an in-process run ends like a worker: no finalization after the result
