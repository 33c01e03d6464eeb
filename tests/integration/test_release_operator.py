"""The release kinds on the real control plane: KServe's InferenceService CRD (from its
Go module, `make kserve`) installed, ModelVersions recorded, ModelRollouts carried out.

No KServe controller runs here: `tests/kserve_standin.py` plays it, writing the status
KServe would write (Ready, observedGeneration, the predictor's revisions and traffic
split) through the InferenceService's status subresource.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import poll_until
from tests.kserve_standin import GROUP, PLURAL, VERSION, KServeStandIn


def isvc_body(name: str, uri: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "huggingface"}, "storageUri": uri}}
        },
    }


def create_isvc(api: client.ApiClient, namespace: str, name: str, uri: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, isvc_body(name, uri), field_validation="Strict"
    )


def read_isvc(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )


def patch_predictor(api: client.ApiClient, namespace: str, name: str, **fields: Any) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"predictor": fields}}
    )


@pytest.fixture
def kserve(kube_api: client.ApiClient, kserve_crd: str, namespace: str) -> Iterator[KServeStandIn]:
    """The KServe stand-in for the test's namespace (the CRD installed)."""
    with KServeStandIn(kube_api, namespace) as standin:
        yield standin


def settled(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    isvc = read_isvc(api, namespace, name)
    done = isvc.get("status", {}).get("observedGeneration") == isvc["metadata"]["generation"]
    return isvc if done else None


def traffic(isvc: dict[str, Any]) -> list[tuple[str, int]]:
    entries = isvc["status"]["components"]["predictor"]["traffic"]
    return [(t["revisionName"], t["percent"]) for t in entries]


# -- KServe's CRD and the stand-in --------------------------------------------------


def test_kserve_crd_serves_inferenceservices_with_kserves_schema(
    kube_api: client.ApiClient, kserve_crd: str, namespace: str
) -> None:
    """The CRD from KServe's module is Established and its schema is KServe's: an
    unknown predictor field is refused by strict field validation, a valid one is kept."""
    assert kserve_crd == "inferenceservices.serving.kserve.io"
    crd = client.ApiextensionsV1Api(kube_api).read_custom_resource_definition(kserve_crd)
    assert [v.name for v in crd.spec.versions if v.served] == ["v1beta1"]
    created = create_isvc(kube_api, namespace, "schema", "s3://models/a")
    assert created["spec"]["predictor"]["model"]["storageUri"] == "s3://models/a"
    bad = isvc_body("bad", "s3://models/a")
    bad["spec"]["predictor"]["model"]["storageURI"] = "typo"
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, bad, field_validation="Strict"
        )
    assert err.value.status == 400 and "storageURI" in err.value.body


def test_standin_plays_kserve_canary_promotion_and_restore(
    kube_api: client.ApiClient, kserve: KServeStandIn, namespace: str
) -> None:
    """What the rollout relies on, as KServe would report it: a new storageUri with a
    canary percent splits traffic latest/prev, dropping the percent promotes, and a
    restored URI is a new revision taking 100%."""
    name = "canary"
    create_isvc(kube_api, namespace, name, "s3://models/v1")
    first = poll_until("the first revision", lambda: settled(kube_api, namespace, name))
    assert traffic(first) == [(f"{name}-predictor-00001", 100)]
    patch_predictor(kube_api, namespace, name, model={"storageUri": "s3://models/v2"},
                    canaryTrafficPercent=10)  # fmt: skip
    canary = poll_until("the canary", lambda: settled(kube_api, namespace, name))
    predictor = canary["status"]["components"]["predictor"]
    assert traffic(canary) == [(f"{name}-predictor-00002", 10), (f"{name}-predictor-00001", 90)]
    assert predictor["latestReadyRevision"] == f"{name}-predictor-00002"
    assert predictor["previousRolledoutRevision"] == f"{name}-predictor-00001"
    patch_predictor(kube_api, namespace, name, canaryTrafficPercent=50)
    half = poll_until("50 %", lambda: settled(kube_api, namespace, name))
    assert traffic(half) == [(f"{name}-predictor-00002", 50), (f"{name}-predictor-00001", 50)]
    patch_predictor(kube_api, namespace, name, canaryTrafficPercent=None)
    done = poll_until("the promotion", lambda: settled(kube_api, namespace, name))
    assert traffic(done) == [(f"{name}-predictor-00002", 100)]
    assert done["status"]["components"]["predictor"]["previousRolledoutRevision"] == (
        f"{name}-predictor-00001"
    )
    patch_predictor(kube_api, namespace, name, model={"storageUri": "s3://models/v1"})
    back = poll_until("the restore", lambda: settled(kube_api, namespace, name))
    assert traffic(back) == [(f"{name}-predictor-00003", 100)]
    ready = {c["type"]: c["status"] for c in back["status"]["conditions"]}
    assert ready["Ready"] == "True"


def test_standin_reports_a_revision_that_never_gets_ready(
    kube_api: client.ApiClient, kserve_crd: str, namespace: str
) -> None:
    """A failing model (a URI the stand-in is told fails): Ready False, the traffic
    stays on the revision that served."""
    standin = KServeStandIn(kube_api, namespace, failing_uris={"s3://models/broken"})
    create_isvc(kube_api, namespace, "broken", "s3://models/ok")
    standin.settle("broken")
    patch_predictor(kube_api, namespace, "broken", model={"storageUri": "s3://models/broken"},
                    canaryTrafficPercent=10)  # fmt: skip
    status = standin.settle("broken")
    ready = {c["type"]: (c["status"], c.get("reason")) for c in status["conditions"]}
    assert ready["Ready"] == ("False", "RevisionFailed")
    isvc = read_isvc(kube_api, namespace, "broken")
    assert traffic(isvc) == [("broken-predictor-00001", 100)]
    assert isvc["status"]["components"]["predictor"]["latestReadyRevision"] == (
        "broken-predictor-00001"
    )
