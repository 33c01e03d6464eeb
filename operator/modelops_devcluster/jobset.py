"""The real JobSet controller (sigs.k8s.io/jobset), run out-of-cluster against the local
control plane, so multi-node runs (spec.resources.nodes > 1) are proven end to end.

`hack/build-jobset.sh` (`make jobset`) builds the controller from source through the Go
module proxy into the cache, with the CRD and webhook manifests of the same module.
This module installs that CRD, serves the controller's admission webhooks on
127.0.0.1 with a serving certificate from the devcluster's CA (the API server trusts
it through the webhook configurations' caBundle, which point at
https://127.0.0.1:<port> instead of an in-cluster Service), and runs the controller with
the admin kubeconfig, leader election and its own cert management off, metrics off.
The webhooks matter: JobSet's mutating webhook fills defaults (e.g. the success policy,
the pod's node-selector/annotation plumbing) the controller relies on, and its
validating webhook refuses JobSets that would make over-long pod names.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import time
from pathlib import Path
from typing import Any, Self

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelops_devcluster.binaries import cache_root, repo_root
from modelops_devcluster.pki import CertificateAuthority
from modelops_devcluster.process import ManagedProcess, free_port, stop_all, tail

BUILD_SCRIPT = Path("hack") / "build-jobset.sh"
WEBHOOK_PREFIX = "modelops-dev-jobset-"
POD_SELECTOR = {
    "matchExpressions": [{"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]
}


class JobSetError(RuntimeError):
    """The JobSet controller is not built, or it did not come up."""


def pinned_version() -> str:
    root = repo_root()
    text = (root / BUILD_SCRIPT).read_text() if root else ""
    match = re.search(r'JOBSET_VERSION="\$\{JOBSET_VERSION:-([^}]+)\}"', text)
    if match is None:
        raise JobSetError(f"{BUILD_SCRIPT} pins no JOBSET_VERSION")
    return match.group(1)


def jobset_dir(version: str | None = None) -> Path:
    """The cache dir of the built controller; JobSetError naming `make jobset` if absent."""
    out = cache_root() / "jobset" / f"v{version or pinned_version()}"
    binary = out / "bin" / "jobset-controller"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise JobSetError(f"no JobSet controller at {binary}: run `make jobset` ({BUILD_SCRIPT})")
    return out


def webhook_configurations(manifests: str, port: int, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The module's webhook configurations, pointed at https://127.0.0.1:<port><path>
    and trusting `ca_bundle`; the pod webhooks limited to JobSet pods (what the
    module's kustomize patches do)."""
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        doc = copy.deepcopy(doc)
        doc["metadata"] = {"name": WEBHOOK_PREFIX + doc["kind"].lower()}
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            if path.endswith("-v1-pod"):
                hook["objectSelector"] = POD_SELECTOR
        out.append(doc)
    return out


class JobSetController:
    """One jobset-controller process serving the local control plane."""

    def __init__(self, kubeconfig: Path, pki_dir: Path, workdir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.ca = CertificateAuthority(pki_dir)
        self.workdir = workdir
        self.home = jobset_dir()
        self.process: ManagedProcess | None = None
        self.crds: list[str] = []
        self.webhook_port = 0
        self.health_port = 0
        self.api = config.new_client_from_config(config_file=str(kubeconfig))

    @property
    def log_path(self) -> Path:
        return self.workdir / "jobset-controller.log"

    def install_crds(self, timeout: float = 60.0) -> None:
        ext = client.ApiextensionsV1Api(self.api)
        for path in sorted((self.home / "crds").glob("*.yaml")):
            body = yaml.safe_load(path.read_text())
            self.crds.append(body["metadata"]["name"])
            try:
                ext.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            self._wait(
                f"CRD {body['metadata']['name']} Established",
                lambda n=body["metadata"]["name"]: _established(ext, n),
                timeout,
            )

    def start(self, timeout: float = 120.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.install_crds()
        self.webhook_port, self.health_port = free_port(), free_port()
        certs = self.workdir / "certs"
        pair = self.ca.issue(
            "jobset-webhook", "jobset-webhook", server_ips=["127.0.0.1"], directory=certs
        )
        pair.cert.rename(certs / "tls.crt")
        pair.key.rename(certs / "tls.key")
        cfg = self.workdir / "config.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
                    "kind": "Configuration",
                    "leaderElection": {"leaderElect": False},
                    "internalCertManagement": {"enable": False},
                    "webhook": {
                        "port": self.webhook_port,
                        "host": "127.0.0.1",
                        "certDir": str(certs),
                    },
                    "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
                    "metrics": {"bindAddress": "0"},
                }
            )
        )
        argv = [
            str(self.home / "bin" / "jobset-controller"),
            f"--config={cfg}",
            f"--kubeconfig={self.kubeconfig}",
            "--metrics-bind-address=0",
        ]
        self.process = ManagedProcess.spawn(
            "jobset-controller", argv, self.log_path, env={"PATH": os.environ.get("PATH", "")}
        )
        self._register_webhooks()
        self._wait("the JobSet controller's readyz", self._ready, timeout)
        return self

    def _register_webhooks(self) -> None:
        manifests = (self.home / "webhooks.yaml").read_text()
        reg = client.AdmissionregistrationV1Api(self.api)
        for doc in webhook_configurations(
            manifests, self.webhook_port, self.ca.pair.cert.read_bytes()
        ):
            create: Any
            delete: Any
            create, delete = (
                (
                    reg.create_mutating_webhook_configuration,
                    reg.delete_mutating_webhook_configuration,
                )
                if doc["kind"] == "MutatingWebhookConfiguration"
                else (
                    reg.create_validating_webhook_configuration,
                    reg.delete_validating_webhook_configuration,
                )
            )
            try:
                delete(doc["metadata"]["name"])  # a previous controller's port
            except ApiException as exc:
                if exc.status != 404:
                    raise
            create(doc)

    def _ready(self) -> bool | None:
        import urllib.request

        if self.process is not None and not self.process.running():
            raise JobSetError(f"jobset-controller exited:\n{tail(self.log_path)}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/readyz", timeout=2
            ) as r:
                return True if r.status == 200 else None
        except OSError:
            return None

    def _wait(self, what: str, probe: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while probe() is None:
            if time.monotonic() > deadline:
                raise JobSetError(f"timed out waiting for {what}:\n{tail(self.log_path)}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the controller, remove its webhook configurations (they would refuse
        every JobSet once nothing serves them) and the CRD (and with it every JobSet)."""
        reg = client.AdmissionregistrationV1Api(self.api)
        for delete, kind in (
            (reg.delete_mutating_webhook_configuration, "mutatingwebhookconfiguration"),
            (reg.delete_validating_webhook_configuration, "validatingwebhookconfiguration"),
        ):
            try:
                delete(WEBHOOK_PREFIX + kind)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if self.process is not None:
            stop_all([self.process])
            self.process = None
        ext = client.ApiextensionsV1Api(self.api)
        for name in self.crds:  # tests of "no JobSet CRD" run on the same control plane
            try:
                ext.delete_custom_resource_definition(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self.api.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool | None:
    crd: Any = ext.read_custom_resource_definition(name)
    conds = {c.type: c.status for c in (crd.status.conditions or [])}
    return True if conds.get("Established") == "True" else None
