"""What the release tests share: KServe InferenceServices (KServe's CRD; the stand-in
plays its controller, operator/modelops_devcluster/kserve_standin.py), ModelVersions and ModelRollouts made
directly, and the operator's HTTP session on a fresh event loop."""

from __future__ import annotations

from typing import Any

from kubernetes import client
from tests.conftest import poll_until

from modelops_devcluster.kserve_standin import (
    GROUP,
    PLURAL,
    VERSION,
    KServeStandIn,
    inference_service,
)


def create_isvc(api: client.ApiClient, namespace: str, name: str, uri: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, inference_service(name, uri), field_validation="Strict"
    )


def read_isvc(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )


def patch_predictor(api: client.ApiClient, namespace: str, name: str, **fields: Any) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"predictor": fields}}
    )


def settled(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    isvc = read_isvc(api, namespace, name)
    done = isvc.get("status", {}).get("observedGeneration") == isvc["metadata"]["generation"]
    return isvc if done else None


def traffic(isvc: dict[str, Any]) -> list[tuple[str, int]]:
    entries = isvc["status"]["components"]["predictor"]["traffic"]
    return [(t["revisionName"], t["percent"]) for t in entries]


def run_async(control_plane: Any, work: Any) -> Any:
    """`work(session)` on a fresh event loop with the operator's own HTTP session."""
    import asyncio

    from modelops_operator.k8s.api import ApiSession
    from modelops_operator.k8s.client import load_api_client

    async def main() -> Any:
        session = ApiSession(load_api_client(str(control_plane.kubeconfig)).configuration)
        try:
            return await work(session)
        finally:
            await session.close()

    return asyncio.run(main())


MODELOPS = ("modelops.dev", "v1alpha1")
T0 = "2026-12-01T00:00:00Z"


def create_version(
    api: client.ApiClient, namespace: str, name: str, uri: str, created: str, source: str = "src"
) -> dict[str, Any]:
    """A ModelVersion as the operator records one (created here directly: these tests
    are about the rollout, not about recording; the admin the tests run as may)."""
    body = {
        "apiVersion": "/".join(MODELOPS),
        "kind": "ModelVersion",
        "metadata": {"name": name},
        "spec": {
            "uri": uri,
            "manifestDigest": f"sha256:{name}",
            "source": {"kind": "PruneRetrain", "name": source, "uid": f"uid-{source}"},
            "createdTime": created,
        },
    }
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        *MODELOPS, namespace, "modelversions", body
    )


def create_rollout(
    api: client.ApiClient, namespace: str, name: str, interval: str = "1s", isvc: str = "web"
) -> dict[str, Any]:
    body = {
        "apiVersion": "/".join(MODELOPS),
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "inferenceService": {"name": isvc},
            "candidates": [{"kind": "PruneRetrain", "name": "src"}],
            "canary": {"steps": [10, 50, 100], "interval": interval},
        },
    }
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        *MODELOPS, namespace, "modelrollouts", body
    )


def read_custom(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        *MODELOPS, namespace, plural, name
    )


def rollout_where(api: client.ApiClient, namespace: str, name: str, **status: Any) -> Any:
    """The rollout once every given status field has the given value."""
    obj = read_custom(api, namespace, "modelrollouts", name)
    st = obj.get("status") or {}
    return obj if all(st.get(k) == v for k, v in status.items()) else None


def cond(obj: dict[str, Any], type_: str) -> tuple[str, str] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c.get("reason", "")
    return None


def serving_web(api: client.ApiClient, namespace: str, kserve: KServeStandIn, uri: str) -> None:
    """An InferenceService `web` serving `uri` (settled by the stand-in), its version
    `v0`, and a ModelRollout `ro` that has adopted v0 as its serving version."""
    create_isvc(api, namespace, "web", uri)
    poll_until("web settled", lambda: settled(api, namespace, "web"))
    create_version(api, namespace, "v0", uri, T0)


PROMOTED = [("s3://m/v0", None), ("s3://m/v1", 10), ("s3://m/v1", 50), ("s3://m/v1", None)]
