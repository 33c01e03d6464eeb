"""`modelops cluster up|down|restart|run-pods|kubeconfig`: the local control plane
from a shell.

The main `modelops` console script hands its `cluster` subcommand to `cli()`.
`up` prints `export KUBECONFIG=...` on stdout (so `eval "$(modelops cluster up)"`
works) and everything else on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from modelops_devcluster.binaries import BinariesError, ensure_binaries
from modelops_devcluster.components import DEFAULT_CONTROLLERS
from modelops_devcluster.controlplane import ControlPlaneError
from modelops_devcluster.persistent import (
    cluster_dir,
    down,
    read_state,
    restart,
    state_path,
    up,
)
from modelops_devcluster.pki import PKIError


def build_parser(prog: str = "modelops cluster") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a local Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager; no kubelet, no scheduler) on 127.0.0.1.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up_parser = commands.add_parser(
        "up",
        help="start it in the background (building the binaries on first use) "
        "and print `export KUBECONFIG=...`",
    )
    up_parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds to wait for readiness (default 90)"
    )
    up_parser.add_argument(
        "--controllers",
        default=",".join(DEFAULT_CONTROLLERS),
        help="kube-controller-manager controllers, comma-separated, or '*' for all "
        "(a slower start); default: job, cronjob, garbage collector, TTL-after-finished, "
        "namespace, ServiceAccount, token, root CA, ClusterRole aggregation, Deployment, "
        "ReplicaSet",
    )
    up_parser.add_argument(
        "--run-pods",
        action="store_true",
        help="also start the stand-in kubelet in the background: it runs the Job pods "
        "the operator creates as local processes (without it they stay Pending)",
    )
    down_parser = commands.add_parser("down", help="stop it")
    down_parser.add_argument(
        "--timeout", type=float, default=15.0, help="seconds before SIGKILL (default 15)"
    )
    restart_parser = commands.add_parser(
        "restart", help="stop and start etcd and/or kube-apiserver (fault drills)"
    )
    restart_parser.add_argument(
        "components",
        nargs="*",
        default=["etcd", "kube-apiserver"],
        help="etcd, kube-apiserver (default: both)",
    )
    restart_parser.add_argument(
        "--down-seconds", type=float, default=0.0, help="keep them down this long first"
    )
    commands.add_parser(
        "run-pods", help="run the stand-in kubelet in the foreground (Ctrl-C stops it)"
    )
    commands.add_parser(
        "jobset",
        help="run the JobSet controller (make jobset) in the foreground, for resources.nodes > 1",
    )
    commands.add_parser("kubeconfig", help="print the path of its admin kubeconfig")
    return parser


def _say_up(state: Any, started: bool) -> None:
    verb = "started" if started else "already running"
    bin_dir = ensure_binaries()
    print(f"control plane {verb} at {state.server} (v{state.kube_version}); "
          f"logs in {state.data_dir / 'logs'}", file=sys.stderr)  # fmt: skip
    print("CRDs installed (kubectl get crd | grep -e modelops.dev -e serving.kserve.io)",
          file=sys.stderr)  # fmt: skip
    print(f"kubectl: {bin_dir / 'kubectl'}  (export PATH={bin_dir}:$PATH)", file=sys.stderr)
    if any(p.name == "pod-runner" for p in state.processes):
        print(f"pod runner: running Job pods as local processes (work dir "
              f"{cluster_dir() / 'pods'})", file=sys.stderr)  # fmt: skip
    else:
        print("note: there is no kubelet, so Job pods stay Pending; add --run-pods (or run "
              "`modelops cluster run-pods`) to run them locally", file=sys.stderr)  # fmt: skip


def cli(argv: Sequence[str] | None = None) -> int:
    """Run the `cluster` subcommand; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            controllers = [c for c in args.controllers.split(",") if c]
            state, started = up(
                start_timeout=args.timeout, controllers=controllers, run_pods=args.run_pods
            )
            _say_up(state, started)
            print(f"export KUBECONFIG={state.kubeconfig}")
            return 0
        if args.command == "restart":
            seconds = restart(args.components, down_seconds=args.down_seconds)
            print(f"restarted {', '.join(args.components)}: the API server was unavailable "
                  f"for {seconds:.1f} s", file=sys.stderr)  # fmt: skip
            return 0
        if args.command == "down":
            stopped = down(timeout=args.timeout)
            print(
                "control plane stopped" if stopped else "no control plane was up", file=sys.stderr
            )
            return 0
        current = read_state()
        if current is None or not current.running():
            print(f"no control plane is up (state: {state_path()}); run `modelops cluster up`",
                  file=sys.stderr)  # fmt: skip
            return 1
        if args.command == "run-pods":
            from modelops_devcluster.pod_runner import main as run_pods

            return run_pods(
                ["--kubeconfig", str(current.kubeconfig), "--workdir", str(cluster_dir() / "pods")]
            )
        if args.command == "jobset":
            return _run_jobset(current)
        print(current.kubeconfig)
        return 0
    except (BinariesError, ControlPlaneError, PKIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run_jobset(state: Any) -> int:
    """The JobSet controller against the running control plane until Ctrl-C / SIGTERM;
    it removes its webhook configurations and CRD when it stops."""
    import signal
    import threading

    from modelops_devcluster.jobset import JobSetController, JobSetError

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        controller = JobSetController(
            state.kubeconfig, state.data_dir / "pki", cluster_dir() / "jobset"
        )
        with controller:
            print(f"JobSet controller running (log {controller.log_path}); Ctrl-C stops it",
                  file=sys.stderr)  # fmt: skip
            done.wait()
    except JobSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(cli())
