"""A stand-in kubelet for modelops Job pods: run them as local processes.

The local control plane has no kubelet, so the pods of the Jobs the operator creates
stay Pending. This runner watches those pods (label app.kubernetes.io/managed-by=
modelops), executes the pod's own container command with the spec from its ConfigMap
and the env it declares (Secrets and downward-API fields resolved the way the kubelet
would), and then writes the pod's status back — Running while it runs, then a
terminated container with the exit code and the termination message — so the real
Job controller completes or fails the Job, applying backoffLimit and podFailurePolicy.

A pod deleted while its process runs (its Job deleted, its resource deleted) has its
process stopped the way the kubelet would: SIGTERM, then SIGKILL after the grace
period; nothing is reported for it.

JobSet pods run as processes side by side (give the runner `parallel` >= the nodes of a
run): their rendezvous endpoint is rewritten to 127.0.0.1 (see `_rendezvous`), and
JOB_COMPLETION_INDEX (the node rank) comes from the pod's completion-index annotation.

Used by `make demo` (the "local executor" mode), by `modelops cluster up --run-pods`
and `modelops cluster run-pods`, and by the end-to-end tests that prove the Jobs the
operator builds are runnable.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops_devcluster.process import free_port

log = logging.getLogger("modelops.podrunner")
MANAGED = "app.kubernetes.io/managed-by=modelops"
REPO_ROOT = Path(__file__).resolve().parents[2]
_FIELD = re.compile(r"^metadata\.(annotations|labels)\['([^']+)'\]$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalPodRunner:
    """Runs Pending modelops pods locally, at most `parallel` at a time."""

    def __init__(
        self,
        api: client.ApiClient,
        workdir: Path,
        namespace: str | None = None,
        parallel: int = 1,
        pvc_root: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.workdir = Path(workdir)
        self.namespace = namespace
        self.pvc_root = pvc_root or self.workdir / "pvc"
        self.extra_env = extra_env or {}
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="pod")
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished: list[tuple[str, int]] = []
        self.stopped: list[str] = []
        """Pods whose process was stopped because the pod was deleted."""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._rdzv_ports: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> LocalPodRunner:
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        for proc in list(self._procs.values()):  # no pod process outlives the runner
            _terminate(proc, grace=5.0)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalPodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                pods: Any = (
                    self.core.list_namespaced_pod(self.namespace, label_selector=MANAGED)
                    if self.namespace
                    else self.core.list_pod_for_all_namespaces(label_selector=MANAGED)
                )
                for pod in pods.items:
                    uid = pod.metadata.uid
                    if uid in self._seen or (pod.status and pod.status.phase != "Pending"):
                        continue
                    if pod.metadata.deletion_timestamp:
                        continue
                    self._seen.add(uid)
                    self._pool.submit(self._run_safely, pod)
            except Exception:
                log.exception("listing pods failed")
            self._stop.wait(0.3)

    # -- one pod -------------------------------------------------------------------
    def _run_safely(self, pod: Any) -> None:
        try:
            code = self.run_pod(pod)
            if pod.metadata.name not in self.stopped:
                self.finished.append((pod.metadata.name, code))
        except Exception:
            log.exception("running pod %s failed", pod.metadata.name)

    def _env(self, pod: Any, container: Any, termination_log: Path) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        }
        meta = pod.metadata
        for item in container.env or []:
            if item.value is not None:
                env[item.name] = item.value
            elif item.value_from is not None and item.value_from.secret_key_ref is not None:
                ref = item.value_from.secret_key_ref
                secret = self.core.read_namespaced_secret(ref.name, meta.namespace)
                env[item.name] = base64.b64decode((secret.data or {})[ref.key]).decode()
            elif item.value_from is not None and item.value_from.field_ref is not None:
                path = item.value_from.field_ref.field_path
                match = _FIELD.match(path)
                if match:
                    source = meta.annotations if match.group(1) == "annotations" else meta.labels
                    env[item.name] = (source or {}).get(match.group(2), "")
                elif path == "metadata.name":
                    env[item.name] = meta.name
                elif path == "metadata.namespace":
                    env[item.name] = meta.namespace
        index = (meta.annotations or {}).get("batch.kubernetes.io/job-completion-index")
        if index is not None:
            env.setdefault("JOB_COMPLETION_INDEX", index)
        env.update(
            {
                "MODELOPS_TERMINATION_LOG": str(termination_log),
                "MODELOPS_PVC_ROOT": str(self.pvc_root),
                "HF_HOME": str(self.workdir / "hf"),
                "PYTHONPATH": os.pathsep.join(
                    [str(REPO_ROOT / "operator"), str(REPO_ROOT / "jobs")]
                ),
                "MODELOPS_THREADS": env.get("MODELOPS_THREADS", "1"),
            }
        )
        env.update(self.extra_env)
        if "MODELOPS_RDZV_ENDPOINT" in env:
            env["MODELOPS_RDZV_ENDPOINT"] = self._rendezvous(meta)
        return env

    def _rendezvous(self, meta: Any) -> str:
        """A JobSet pod's rendezvous endpoint, resolved on this machine: every pod is a
        local process here and there is no cluster DNS, so node 0's DNS name
        (`<jobset>-node-0-0.<jobset>:29500`) becomes 127.0.0.1 and a port that is free
        when the first pod of this JobSet attempt starts; the pods of one attempt share
        it, a restarted group (next restart-attempt label) gets a fresh one, so a
        rendezvous store left behind by a killed attempt is never joined."""
        labels = meta.labels or {}
        key = (
            meta.namespace,
            labels.get("jobset.sigs.k8s.io/jobset-uid", ""),
            labels.get("jobset.sigs.k8s.io/restart-attempt", ""),
        )
        with self._lock:
            port = self._rdzv_ports.setdefault(key, free_port())
        return f"127.0.0.1:{port}"

    def _command(self, container: Any, spec_file: Path) -> list[str]:
        argv = list(container.command or []) + list(container.args or [])
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        out: list[str] = []
        skip = False
        for i, arg in enumerate(argv):
            if skip:
                skip = False
                continue
            if arg == "--spec":
                out += ["--spec", str(spec_file)]
                skip = True
            elif arg == "--metrics-port":
                skip = True
            else:
                out.append(arg)
            del i
        return out

    def run_pod(self, pod: Any) -> int:
        """Run one pod to completion and report it; returns the exit code."""
        meta = pod.metadata
        container = pod.spec.containers[0]
        cm_name = next(v.config_map.name for v in pod.spec.volumes if v.config_map is not None)
        cm: Any = self.core.read_namespaced_config_map(cm_name, meta.namespace)
        pod_dir = self.workdir / meta.namespace / meta.name
        pod_dir.mkdir(parents=True, exist_ok=True)
        spec_file = pod_dir / "spec.json"
        spec_file.write_text(cm.data["spec.json"])
        termination_log = pod_dir / "termination-log"
        env = self._env(pod, container, termination_log)
        started = _now()
        write_pod_status(self.core, pod, "Running", {"running": {"startedAt": started}}, ready=True)
        with open(pod_dir / "log.txt", "w") as logfile:
            proc = subprocess.Popen(
                self._command(container, spec_file),
                env=env,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=pod_dir,
                start_new_session=True,
            )
            self._procs[meta.uid] = proc
            try:
                deleted = self._wait_or_deleted(proc, pod)
            finally:
                self._procs.pop(meta.uid, None)
        if deleted:
            grace = float(pod.spec.termination_grace_period_seconds or 30)
            code = _terminate(proc, grace=min(grace, 30.0))
            self.stopped.append(meta.name)
            log.info("pod %s/%s was deleted: its process was stopped", meta.namespace, meta.name)
            return code
        message = termination_log.read_text()[:4096] if termination_log.exists() else ""
        finish_pod(self.core, pod, proc.returncode, message, started)
        return proc.returncode

    def _wait_or_deleted(self, proc: subprocess.Popen[bytes], pod: Any) -> bool:
        """Wait for the process; True as soon as the pod is deleted (or replaced), or
        the runner stops."""
        meta = pod.metadata
        while True:
            try:
                proc.wait(timeout=0.5)
                return False
            except subprocess.TimeoutExpired:
                pass
            if self._stop.is_set():
                return True
            try:
                now: Any = self.core.read_namespaced_pod(meta.name, meta.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                continue  # the API server is away: keep running, as a kubelet would
            except Exception:
                continue
            if now.metadata.uid != meta.uid or now.metadata.deletion_timestamp:
                return True


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM to the process group, SIGKILL after `grace` seconds; the exit code."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def write_pod_status(
    core: client.CoreV1Api, pod: Any, phase: str, state: dict[str, Any], ready: bool
) -> None:
    """Patch a pod's status the way the kubelet reports it."""
    container = pod.spec.containers[0]
    start = pod.status.start_time if pod.status and pod.status.start_time else None
    body = {
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": _now(),
                },
                {
                    "type": "ContainersReady",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": _now(),
                },
            ],
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "local://" + container.image,
                    "ready": ready,
                    "started": phase == "Running",
                    "restartCount": 0,
                    "state": state,
                }
            ],
            "startTime": start.strftime("%Y-%m-%dT%H:%M:%SZ") if start else _now(),
        }
    }
    for attempt in range(5):
        try:
            core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, body)
            return
        except ApiException as exc:
            if exc.status == 404:
                return
            time.sleep(0.2 * (attempt + 1))


def finish_pod(
    core: client.CoreV1Api, pod: Any, exit_code: int, message: str, started: str | None = None
) -> None:
    """Report a pod's container as terminated with this exit code and termination message."""
    state = {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": started or _now(),
            "finishedAt": _now(),
        }
    }
    write_pod_status(core, pod, "Succeeded" if exit_code == 0 else "Failed", state, ready=False)


def main(argv: list[str] | None = None) -> int:
    """`python -m modelops_devcluster.pod_runner`: run modelops pods until SIGTERM."""
    from kubernetes import config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--workdir", required=True, help="pod directories, logs, pvc://")
    parser.add_argument("--namespace", help="only this namespace (default: all)")
    parser.add_argument("--parallel", type=int, default=1, help="pods at a time")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)
    runner = LocalPodRunner(api, Path(args.workdir), args.namespace, args.parallel)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    with runner:
        log.info("running modelops pods (workdir %s)", args.workdir)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
