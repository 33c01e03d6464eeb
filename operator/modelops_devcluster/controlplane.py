"""A real, local Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager.

The integration tests and `modelops cluster up` need a genuine API server (schema
and CEL validation, RBAC, the status subresource, garbage collection, the Job
controller), not a fake. This module starts one on free 127.0.0.1 ports from the
binaries built by `hack/build-control-plane.sh`, waits until it is ready, and
tears it down without leaving a process behind. There is no kubelet and no
scheduler: Pods that Jobs create stay Pending, and tests drive Job status by
patching the status subresource.
"""

from __future__ import annotations

import atexit
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from modelops_devcluster.binaries import ensure_binaries, missing_binaries
from modelops_devcluster.components import (
    DEFAULT_CONTROLLERS,
    KUBERNETES_SERVICE_IP,
    apiserver_argv,
    controller_manager_argv,
    etcd_argv,
)
from modelops_devcluster.kubeconfig import write_kubeconfig
from modelops_devcluster.pki import CertificateAuthority, service_account_keys
from modelops_devcluster.process import ManagedProcess, free_port, stop_all, tail

ADMIN_USER = "modelops-admin"
_PORT_CLASH = "address already in use"
_START_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    """The control plane failed to start or a command against it failed."""


class ControlPlane:
    """A local etcd + kube-apiserver + kube-controller-manager.

    `data_dir` (default: a new temporary directory, removed by `stop()`) holds the
    certificates, kubeconfigs, etcd's data and one log file per component; when
    given it must be empty or absent and is kept. `detached` processes outlive
    this Python process (used by `modelops cluster up`); otherwise they are killed
    with it (start them from a thread that lives as long as they should, such as
    the main thread) and `stop()` is registered with atexit. `controllers` are
    the kube-controller-manager controllers to run (see `DEFAULT_CONTROLLERS`).
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        bin_dir: Path | str | None = None,
        start_timeout: float = 90.0,
        detached: bool = False,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
    ) -> None:
        self._owns_data_dir = data_dir is None
        self._data_dir = Path(data_dir) if data_dir else None
        self.bin_dir = Path(bin_dir) if bin_dir else None
        self.start_timeout = start_timeout
        self.detached = detached
        self.controllers = tuple(controllers)
        self.processes: list[ManagedProcess] = []
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self._ca: CertificateAuthority | None = None
        self._atexit_registered = False

    # -- paths and identity --------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """Certificates, kubeconfigs, etcd data and `logs/` (a temporary directory
        is made on first use when none was given)."""
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="modelops-cp-"))
        return self._data_dir

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user `modelops-admin`, group `system:masters`)."""
        return self.data_dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        """The API server URL, https://127.0.0.1:<port>."""
        if "apiserver" not in self.ports:
            raise ControlPlaneError("the control plane has not been started")
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    def log_file(self, component: str) -> Path:
        """The log file of `component` (etcd, kube-apiserver, kube-controller-manager)."""
        return self.data_dir / "logs" / f"{component}.log"

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start all components and wait until the API server is ready, the
        `default` namespace exists and the controller manager has created its
        `default` ServiceAccount. Raises `ControlPlaneError` with log tails."""
        if self.processes:
            raise ControlPlaneError("the control plane is already started")
        began, self.startup_seconds = time.monotonic(), None
        self.bin_dir = self.bin_dir or ensure_binaries()
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise ControlPlaneError(f"{self.bin_dir} lacks {', '.join(missing)}")
        if self.data_dir.exists() and any(self.data_dir.iterdir()) and not self._owns_data_dir:
            raise ControlPlaneError(f"data dir {self.data_dir} must be empty or absent")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.data_dir / "etcd", ignore_errors=True)  # from an earlier failed start
        if not self.detached and not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        self._make_credentials()
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                deadline = time.monotonic() + self.start_timeout
                self._launch_apiserver()
                self._wait_for("kube-apiserver /readyz", "/readyz", deadline)
                # Only now: started earlier, it can find its RBAC roles missing and exit.
                self._launch_controller_manager()
                self._wait_for("the default namespace", "/api/v1/namespaces/default", deadline)
                self._wait_for(
                    "the default ServiceAccount (made by kube-controller-manager)",
                    "/api/v1/namespaces/default/serviceaccounts/default",
                    deadline,
                )
                break
            except ControlPlaneError as exc:
                clash = _PORT_CLASH in self.log_tails(lines=200).lower()
                self._stop_processes()
                if not clash or attempt == _START_ATTEMPTS:
                    raise ControlPlaneError(
                        f"{exc}\n(data dir kept for inspection: {self.data_dir})"
                    ) from None
                shutil.rmtree(self.data_dir / "etcd", ignore_errors=True)
            except BaseException:  # an interrupt or a spawn failure: nothing may linger
                self._stop_processes()
                raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every component (SIGTERM, SIGKILL after `timeout`) and remove a
        temporary data dir. Safe to call more than once."""
        self._stop_processes(timeout)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        # A temporary dir goes, unless a failed start left logs in it to read.
        if self._owns_data_dir and self._data_dir is not None:
            failed_start = self.startup_seconds is None and self._data_dir.exists()
            if not (failed_start and any(self._data_dir.iterdir())):
                shutil.rmtree(self._data_dir, ignore_errors=True)
                self._data_dir = None

    def _stop_processes(self, timeout: float = 15.0) -> None:
        survivors = stop_all(self.processes, timeout)
        self.processes = []
        if survivors:
            names = ", ".join(f"{p.name} (pid {p.pid})" for p in survivors)
            raise ControlPlaneError(f"could not stop {names}")

    def restart(
        self,
        components: Sequence[str] = ("etcd", "kube-apiserver"),
        timeout: float = 5.0,
        down_seconds: float = 0.0,
    ) -> float:
        """Stop the named components, keep them down `down_seconds` (an outage of that
        length, for fault drills), and start them again on the same ports and data;
        returns the seconds the API server was unavailable.

        A drill, not a drain: with clients connected kube-apiserver lingers after
        SIGTERM, so it gets SIGKILL after `timeout` (5 s, not `stop`'s 15)."""
        assert self.bin_dir is not None
        began = time.monotonic()
        order = [p.name for p in self.processes]
        victims = [p for p in self.processes if p.name in components]
        survivors = stop_all(victims, timeout)
        if survivors:
            raise ControlPlaneError(f"could not stop {', '.join(p.name for p in survivors)}")
        self.processes = [p for p in self.processes if p not in victims]
        time.sleep(max(0.0, down_seconds - (time.monotonic() - began)))
        bins, pki = self.bin_dir, self.pki_dir
        if "etcd" in components:
            self._spawn(
                "etcd",
                etcd_argv(
                    bins, self.data_dir / "etcd", self.ports["etcd"], self.ports["etcd-peer"]
                ),
            )
        if "kube-apiserver" in components:
            self._spawn(
                "kube-apiserver",
                apiserver_argv(bins, pki, self.ports["etcd"], self.ports["apiserver"]),
            )
        # The start order again: `stop` goes in reverse, clients before their servers.
        self.processes.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
        self._wait_for(
            "kube-apiserver /readyz after restart", "/readyz", time.monotonic() + self.start_timeout
        )
        return time.monotonic() - began

    def running(self) -> bool:
        """Whether every component process is alive."""
        return bool(self.processes) and all(p.running() for p in self.processes)

    # -- helpers for tests -----------------------------------------------------------

    def kubeconfig_for_user(self, name: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for user `name` in `groups`, authenticated by a client
        certificate from the cluster CA. The identity has no RBAC bindings until a
        test creates some."""
        ca = self._require_ca()
        digest = sha256("\0".join([name, *groups]).encode()).hexdigest()[:10]
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] + "-" + digest
        users = self.data_dir / "users"
        pair = ca.issue(stem, name, groups, directory=users)
        return write_kubeconfig(
            users / f"{stem}.kubeconfig",
            server=self.server,
            ca_cert=ca.pair.cert,
            client_cert=pair.cert,
            client_key=pair.key,
            user=name,
        )

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl with the admin kubeconfig (or `kubeconfig`) and
        return its captured text output; raise `ControlPlaneError` on failure when
        `check`."""
        if self.bin_dir is None:
            raise ControlPlaneError("the control plane has not been started")
        argv = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            *args,
        ]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}"
            )
        return result

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of each component's log, for error messages."""
        parts = []
        for component in ("etcd", "kube-apiserver", "kube-controller-manager"):
            path = self.log_file(component)
            if path.exists():
                parts.append(f"--- {path} (last {lines} lines) ---\n{tail(path, lines)}")
        return "\n".join(parts)

    # -- internals ----------------------------------------------------------------

    def _require_ca(self) -> CertificateAuthority:
        if self._ca is None or "apiserver" not in self.ports:
            raise ControlPlaneError("the control plane has not been started")
        return self._ca

    def _make_credentials(self) -> None:
        pki = self.pki_dir
        self._ca = ca = CertificateAuthority.create(pki)
        ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            server_ips=["127.0.0.1", KUBERNETES_SERVICE_IP],
        )
        ca.issue("admin", ADMIN_USER, ["system:masters"])
        ca.issue("controller-manager", "system:kube-controller-manager")
        service_account_keys(pki)

    def _launch_apiserver(self) -> None:
        assert self.bin_dir is not None
        self.ports = {
            n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "controller-manager")
        }
        pki, bins = self.pki_dir, self.bin_dir
        write_kubeconfig(
            self.kubeconfig,
            server=self.server,
            ca_cert=pki / "ca.crt",
            client_cert=pki / "admin.crt",
            client_key=pki / "admin.key",
            user=ADMIN_USER,
        )
        etcd_dir = self.data_dir / "etcd"
        self._spawn("etcd", etcd_argv(bins, etcd_dir, self.ports["etcd"], self.ports["etcd-peer"]))
        self._spawn(
            "kube-apiserver",
            apiserver_argv(bins, pki, self.ports["etcd"], self.ports["apiserver"]),
        )

    def _launch_controller_manager(self) -> None:
        assert self.bin_dir is not None
        pki, bins = self.pki_dir, self.bin_dir
        cm_kubeconfig = write_kubeconfig(
            self.data_dir / "controller-manager.kubeconfig",
            server=self.server,
            ca_cert=pki / "ca.crt",
            client_cert=pki / "controller-manager.crt",
            client_key=pki / "controller-manager.key",
            user="system:kube-controller-manager",
        )
        argv = controller_manager_argv(
            bins,
            pki,
            cm_kubeconfig,
            cert_dir=self.data_dir / "controller-manager",
            port=self.ports["controller-manager"],
            controllers=self.controllers,
        )
        self._spawn("kube-controller-manager", argv)

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.processes.append(
            ManagedProcess.spawn(name, argv, self.log_file(name), detached=self.detached)
        )

    def _ssl_context(self) -> ssl.SSLContext:
        pki = self.pki_dir
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return context

    def api_get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """GET `path` as admin; (HTTP status, parsed JSON or text). No exceptions
        for HTTP errors; connection errors raise `OSError`."""
        request = urllib.request.Request(self.server + path, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self._ssl_context(), timeout=timeout) as r:
                status, body = r.status, r.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        text = body.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def _wait_for(self, what: str, path: str, deadline: float) -> None:
        """Poll GET `path` until HTTP 200; fail at once if a component exits, or at
        `deadline`, with the tail of every log."""
        last = "no answer yet"
        while True:
            dead = [p for p in self.processes if not p.running()]
            if dead:
                codes = ", ".join(f"{p.name} exited with {p.exit_code()}" for p in dead)
                raise ControlPlaneError(
                    f"control plane failed to start: {codes}\n{self.log_tails()}"
                )
            try:
                status, body = self.api_get(path, timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {str(body)[:500]}"
            except OSError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise ControlPlaneError(
                    f"control plane not ready after {self.start_timeout:.0f}s: still waiting "
                    f"for {what} (last: {last})\n{self.log_tails()}"
                )
            time.sleep(0.05)


__all__ = ["ControlPlane", "ControlPlaneError"]
