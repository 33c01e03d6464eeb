"""A control plane that outlives the command that started it: `modelops cluster up/down`.

A developer wants one local API server to point kubectl, the operator and the
examples at across many commands. `up` starts the control plane detached (each
process in its own session) and records pids, ports and the kubeconfig in a
state file under `~/.cache/modelops/cluster/`; `down` reads that file and stops
exactly those processes, checking each pid still runs the recorded executable.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelops_devcluster.binaries import KUBE_VERSION, cache_root
from modelops_devcluster.components import DEFAULT_CONTROLLERS
from modelops_devcluster.controlplane import ControlPlane, ControlPlaneError
from modelops_devcluster.process import ManagedProcess, stop_all

STATE_FORMAT = 1


def cluster_dir() -> Path:
    """`$MODELOPS_CACHE/cluster` (default `~/.cache/modelops/cluster`)."""
    return cache_root() / "cluster"


def state_path() -> Path:
    return cluster_dir() / "state.json"


@dataclass
class ClusterState:
    """What `up` recorded about a running detached control plane."""

    kubeconfig: Path
    server: str
    data_dir: Path
    ports: dict[str, int]
    processes: list[ManagedProcess]
    kube_version: str
    started_at: str

    def running(self) -> bool:
        """Whether every recorded process is still alive."""
        return bool(self.processes) and all(p.running() for p in self.processes)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "data_dir": str(self.data_dir),
            "ports": self.ports,
            "kube_version": self.kube_version,
            "started_at": self.started_at,
            "processes": [
                {"name": p.name, "pid": p.pid, "executable": p.executable, "log": str(p.log_path)}
                for p in self.processes
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        if data.get("format") != STATE_FORMAT:
            raise ControlPlaneError(f"unknown cluster state format {data.get('format')!r}")
        return cls(
            kubeconfig=Path(data["kubeconfig"]),
            server=str(data["server"]),
            data_dir=Path(data["data_dir"]),
            ports={str(k): int(v) for k, v in data["ports"].items()},
            kube_version=str(data["kube_version"]),
            started_at=str(data["started_at"]),
            processes=[
                ManagedProcess(p["name"], int(p["pid"]), p["executable"], Path(p["log"]))
                for p in data["processes"]
            ],
        )


def read_state() -> ClusterState | None:
    """The recorded state, or None when no cluster was brought up."""
    try:
        return ClusterState.from_json(json.loads(state_path().read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ControlPlaneError(f"cannot read {state_path()}: {exc}; remove it") from exc


def _write_state(state: ClusterState) -> None:
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def up(
    start_timeout: float = 90.0, controllers: Sequence[str] = DEFAULT_CONTROLLERS
) -> tuple[ClusterState, bool]:
    """Bring the detached control plane up; (state, whether it was started now).

    A cluster that is already fully running is left alone. Leftovers of a
    half-dead one are stopped first. Each new start gets a fresh data dir.
    """
    state = read_state()
    if state is not None:
        if state.running():
            return state, False
        stop_all(state.processes)
        state_path().unlink(missing_ok=True)
    data_dir = cluster_dir() / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    plane = ControlPlane(
        data_dir, start_timeout=start_timeout, detached=True, controllers=controllers
    ).start()
    state = ClusterState(
        kubeconfig=plane.kubeconfig,
        server=plane.server,
        data_dir=plane.data_dir,
        ports=dict(plane.ports),
        processes=list(plane.processes),
        kube_version=KUBE_VERSION,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    try:
        _write_state(state)
    except OSError:
        plane.stop()
        raise
    return state, True


def down(timeout: float = 15.0) -> ClusterState | None:
    """Stop the detached control plane and forget it; its data dir (logs) stays
    until the next `up`. Returns the state that was stopped, or None."""
    state = read_state()
    if state is None:
        return None
    survivors = stop_all(state.processes, timeout)
    if survivors:
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in survivors)
        raise ControlPlaneError(f"could not stop {names}")
    state_path().unlink(missing_ok=True)
    return state
