"""Small helpers the integration tests share: create resources, read them, finish pods."""

from typing import Any

from kubernetes import client

from modelops_api.kinds import kind_info
from modelops_api.meta import GROUP, VERSION


def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    info = kind_info(body["kind"])
    body = {**body, "apiVersion": f"{GROUP}/{VERSION}"}
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, info.plural, body, field_validation="Strict"
    )


def get(api: client.ApiClient, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, kind_info(kind).plural, name
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
