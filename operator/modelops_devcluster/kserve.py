"""KServe's InferenceService CRD (serving.kserve.io/v1beta1) in the local control plane.

A ModelRollout patches an InferenceService, so the API server must serve that kind
exactly as KServe defines it (its real schema, its status subresource). No prebuilt
manifest can be downloaded here: `hack/kserve-crds.sh` (`make kserve`) takes the CRD
from KServe's Go module (github.com/kserve/kserve) through the Go module proxy into
the cache, and this module installs it, the way `persistent.install_crds` installs the
modelops CRDs and `jobset.JobSetController.install_crds` the JobSet one.

No KServe controller runs here (it needs Knative or Deployments with a kubelet):
tests play it by writing the status it would write (operator/modelops_devcluster/kserve_standin.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from modelops_devcluster.binaries import cache_root, repo_root
from modelops_devcluster.controlplane import ControlPlaneError

FETCH_SCRIPT = Path("hack") / "kserve-crds.sh"
CRD_FILE = "serving.kserve.io_inferenceservices.yaml"
CRD_NAME = "inferenceservices.serving.kserve.io"
DEFAULT_VERSION = "0.16.0"


class KServeError(ControlPlaneError):
    """The KServe CRD is not fetched, or it did not become Established (a
    ControlPlaneError, so `modelops cluster up` reports it as one)."""


def pinned_version() -> str:
    """The KServe release hack/kserve-crds.sh pins (the default without a checkout)."""
    root = repo_root()
    if root is None:
        return DEFAULT_VERSION
    match = re.search(
        r'KSERVE_VERSION="\$\{KSERVE_VERSION:-([^}]+)\}"', (root / FETCH_SCRIPT).read_text()
    )
    if match is None:
        raise KServeError(f"{FETCH_SCRIPT} pins no KSERVE_VERSION")
    return match.group(1)


def crd_path(version: str | None = None) -> Path:
    """The fetched InferenceService CRD; KServeError naming `make kserve` if absent."""
    path = cache_root() / "kserve" / f"v{version or pinned_version()}" / "crds" / CRD_FILE
    if not path.is_file() or path.stat().st_size == 0:
        raise KServeError(f"no KServe CRD at {path}: run `make kserve` ({FETCH_SCRIPT})")
    return path


def load_crd(version: str | None = None) -> dict[str, Any]:
    """The CRD document (about 1 MB of YAML: parsed with libyaml when available)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    body: dict[str, Any] = yaml.load(crd_path(version).read_text(), Loader=loader)
    if body.get("metadata", {}).get("name") != CRD_NAME:
        raise KServeError(f"{crd_path(version)} is not the {CRD_NAME} CRD")
    return body


def install_inferenceservice_crd(kubeconfig: Path, timeout: float = 60.0) -> str:
    """Create (or replace) the InferenceService CRD and wait until it is Established;
    returns its name. The test fixture `kserve_crd` and `modelops cluster up` call this."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    body = load_crd()
    api = config.new_client_from_config(config_file=str(kubeconfig))
    ext: Any = client.ApiextensionsV1Api(api)  # dict bodies, as the API server takes them
    try:
        # The answers (the 1 MB schema again) are not parsed into models: 4 s -> 1 s.
        try:
            ext.create_custom_resource_definition(body, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(CRD_NAME, _preload_content=False)
            body["metadata"]["resourceVersion"] = json.loads(current.data)["metadata"][
                "resourceVersion"
            ]
            ext.replace_custom_resource_definition(CRD_NAME, body, _preload_content=False)
        deadline = time.monotonic() + timeout
        while not _established(ext):
            if time.monotonic() > deadline:
                raise KServeError(f"CRD {CRD_NAME} not Established after {timeout:.0f}s")
            time.sleep(0.2)
    finally:
        api.close()
    return CRD_NAME


def _established(ext: Any) -> bool:
    crd = json.loads(
        ext.read_custom_resource_definition_status(CRD_NAME, _preload_content=False).data
    )
    conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
    return conds.get("Established") == "True"
