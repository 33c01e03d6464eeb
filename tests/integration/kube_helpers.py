"""Small helpers the integration tests share: create resources, read them, finish pods."""

import os
import subprocess
import sys
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import REPO_ROOT

from modelops_api.kinds import crd_kind
from modelops_api.meta import GROUP, VERSION


def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    info = crd_kind(body["kind"])
    body = {**body, "apiVersion": f"{GROUP}/{VERSION}"}
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, info.plural, body, field_validation="Strict"
    )


def get(api: client.ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, crd_kind(kind).plural, name
    )


def prune(name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "model": {"uri": "pvc://models/tiny"},
        "output": {"uri": f"pvc://models/out-{name}"},
        "resources": {"gpu": {"count": 1}, "cpu": "1", "memory": "1Gi"},
        **spec,
    }
    return {"kind": "PruneRetrain", "metadata": {"name": name}, "spec": body}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return None


def read_or_none(fn: Any, name: str, namespace: str) -> Any:
    """fn(name, namespace), or None when the object does not exist."""
    try:
        return fn(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


PEERING_LIFETIME_S = 20
"""A killed replica's peering record expires after this (the chart's default is 60 s)."""


def start_operator_process(
    kubeconfig: Any,
    namespace: str,
    log: Any,
    peering: str | None = None,
    identity: str | None = None,
) -> subprocess.Popen:
    """The operator as its own process (`python -m modelops_operator`), as in a pod."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": f"{REPO_ROOT / 'operator'}:{REPO_ROOT / 'jobs'}",
        "MODELOPS_NAMESPACES": namespace,
        "MODELOPS_METRICS_PORT": "0",
        "MODELOPS_HEALTH_PORT": "0",
        "MODELOPS_RESYNC_SECONDS": "5",
    }
    if peering:
        env["MODELOPS_PEERING"] = peering
        env["MODELOPS_PEERING_LIFETIME"] = str(PEERING_LIFETIME_S)
    if identity:
        env["POD_ID"] = identity  # kopf's peer id, as the chart sets it from the pod name
    return subprocess.Popen(
        [sys.executable, "-m", "modelops_operator"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
