"""A control plane that outlives the command that started it: `modelops cluster up/down`.

A developer wants one local API server to point kubectl, the operator and the
examples at across many commands. `up` starts the control plane detached (each
process in its own session) and records pids, ports and the kubeconfig in a
state file under `~/.cache/modelops/cluster/`; `down` reads that file and stops
exactly those processes, checking each pid still runs the recorded executable.
`up` also installs the modelops CRDs (and KServe's InferenceService CRD) and, with `run_pods`, starts the stand-in kubelet
(`pod_runner`) detached too; `restart` stops and starts components for fault drills
and records the new pids, so `down` stops them as well.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelops_devcluster.binaries import KUBE_VERSION, cache_root, ensure_binaries
from modelops_devcluster.components import DEFAULT_CONTROLLERS
from modelops_devcluster.controlplane import ControlPlane, ControlPlaneError
from modelops_devcluster.kserve import install_inferenceservice_crd
from modelops_devcluster.process import ManagedProcess, stop_all

STATE_FORMAT = 1
REPO_ROOT = Path(__file__).resolve().parents[2]


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
    start_timeout: float = 90.0,
    controllers: Sequence[str] = DEFAULT_CONTROLLERS,
    run_pods: bool = False,
) -> tuple[ClusterState, bool]:
    """Bring the detached control plane up, with the CRDs installed (and the pod runner
    when `run_pods`); (state, whether it was started now).

    A cluster that is already fully running is left alone (a pod runner is added when
    asked for and missing). Leftovers of a half-dead one are stopped first. Each new
    start gets a fresh data dir.
    """
    state = read_state()
    if state is not None:
        if state.running():
            if run_pods and not any(p.name == "pod-runner" for p in state.processes):
                state.processes.append(_spawn_pod_runner(state.kubeconfig))
                _write_state(state)
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
        install_crds(state.kubeconfig)
        install_inferenceservice_crd(state.kubeconfig)
        if run_pods:
            state.processes.append(_spawn_pod_runner(state.kubeconfig))
        _write_state(state)
    except BaseException:
        stop_all(state.processes)
        raise
    return state, True


def install_crds(kubeconfig: Path, timeout: float = 60.0) -> list[str]:
    """Create (or replace) the modelops CRDs (the four kinds and ModelOpsPolicy) and
    wait until they are Established. The test fixture `crds_installed` calls this too."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    from modelops_api.crdgen import crd_for, policy_crd
    from modelops_api.kinds import CRD_KINDS

    api = config.new_client_from_config(config_file=str(kubeconfig))
    ext: Any = client.ApiextensionsV1Api(api)  # dict bodies, as the API server takes them
    try:
        names = []
        for body in [*(crd_for(info) for info in CRD_KINDS), policy_crd()]:
            name = body["metadata"]["name"]
            try:
                ext.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                body["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(
                    name
                ).metadata.resource_version
                ext.replace_custom_resource_definition(name, body)
            names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                crd = ext.read_custom_resource_definition(name)
                conds = {c.type: c.status for c in (crd.status.conditions or [])}
                if conds.get("Established") == "True":
                    break
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {name} not Established after {timeout:.0f}s")
                time.sleep(0.2)
    finally:
        api.close()
    return names


def _spawn_pod_runner(kubeconfig: Path) -> ManagedProcess:
    workdir = cluster_dir() / "pods"
    argv = [
        sys.executable,
        "-m",
        "modelops_devcluster.pod_runner",
        "--kubeconfig",
        str(kubeconfig),
        "--workdir",
        str(workdir),
    ]
    path = os.pathsep.join([str(REPO_ROOT / "operator"), str(REPO_ROOT / "jobs")])
    env = {**os.environ, "PYTHONPATH": path}
    return ManagedProcess.spawn(
        "pod-runner",
        argv,
        cluster_dir() / "data" / "logs" / "pod-runner.log",
        detached=True,
        env=env,
    )


def restart(
    components: Sequence[str] = ("etcd", "kube-apiserver"),
    down_seconds: float = 0.0,
    timeout: float = 5.0,
) -> float:
    """Stop `components` of the detached cluster, keep them down `down_seconds`, start
    them again on the same ports and data, and record the new pids (so `down` stops
    them). Returns the seconds the API server was unavailable."""
    state = read_state()
    if state is None or not state.processes:
        raise ControlPlaneError("no control plane is up; run `modelops cluster up`")
    unknown = set(components) - {"etcd", "kube-apiserver"}
    if unknown:
        raise ControlPlaneError(f"can restart etcd and kube-apiserver, not {sorted(unknown)}")
    plane = ControlPlane(state.data_dir, detached=True)
    plane.bin_dir = ensure_binaries()
    plane.ports = dict(state.ports)
    plane.processes = list(state.processes)
    try:
        return plane.restart(components, timeout=timeout, down_seconds=down_seconds)
    finally:
        state.processes = list(plane.processes)  # in start order, as `down` needs
        _write_state(state)


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
