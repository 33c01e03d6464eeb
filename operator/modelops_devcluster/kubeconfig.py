"""Kubeconfig files for the local control plane.

Every client of the local API server — kubectl, the kubernetes Python client,
kopf, kube-controller-manager — reads a kubeconfig. These are written as JSON
(which is YAML, so every loader accepts it) with the CA and client credentials
embedded, so one file is all a test or a shell needs.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

CLUSTER_NAME = "modelops-dev"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_kubeconfig(
    path: Path, *, server: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str
) -> Path:
    """Write a single-context kubeconfig (mode 0600) for `user` and return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client_cert),
                    "client-key-data": _b64(client_key),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config, out, indent=2)
        out.write("\n")
    return path
