"""KServe's InferenceService in the local control plane: its CRD from KServe's Go
module (`make kserve`) with KServe's own schema, the stand-in that plays the KServe
controller (none runs here: `operator/modelops_devcluster/kserve_standin.py` writes the status it would
write), and the operator's InferenceService adapter (observe, patch) on the real API
server."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tests.conftest import poll_until
from tests.integration.release_helpers import (
    create_isvc,
    inference_service,
    patch_predictor,
    read_isvc,
    run_async,
    settled,
    traffic,
)

from modelops_devcluster.kserve_standin import GROUP, PLURAL, VERSION, KServeStandIn

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
    bad = inference_service("bad", "s3://models/a")
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


# -- the operator's InferenceService adapter on the real API server --------------------


def test_observer_tells_kserve_missing_from_inferenceservice_missing(
    control_plane: Any, kube_api: client.ApiClient, kserve_crd: str, namespace: str
) -> None:
    """A GET that finds nothing: the API group's discovery says whether KServe is
    installed. "Not installed" is shown with a version of the group the API server does
    not serve (v1alpha9), so the CRD the other tests share stays installed."""
    from modelops_operator.k8s.inferenceservices import InferenceServiceObserver
    from modelops_operator.k8s.informer import InformerCache

    create_isvc(kube_api, namespace, "there", "s3://models/a")

    async def work(session: Any) -> Any:
        cache = InformerCache()
        real = InferenceServiceObserver(session, cache)
        absent = InferenceServiceObserver(session, cache, group_version=f"{GROUP}/v1alpha9")
        return (
            await real.observe(namespace, "there"),
            await real.observe(namespace, "nope"),
            await absent.observe(namespace, "there"),
        )

    there, nope, absent = run_async(control_plane, work)
    assert there[1] is None and there[0].storage_uri == "s3://models/a"
    assert nope == (None, "InferenceServiceNotFound")
    assert absent == (None, "KServeNotInstalled")


def test_applier_patches_the_predictor_and_tolerates_a_deleted_inferenceservice(
    control_plane: Any, kube_api: client.ApiClient, kserve_crd: str, namespace: str
) -> None:
    """PatchInferenceService is a merge patch of the predictor (canaryTrafficPercent
    null removes it), written through to the cache; a vanished InferenceService is left
    to the next reconcile (it observes it missing and pauses)."""
    from modelops_operator.k8s.apply import Applier
    from modelops_operator.k8s.informer import InformerCache
    from modelops_operator.reconcile.actions import PatchInferenceService
    from modelops_operator.reconcile.observed import ResourceView

    create_isvc(kube_api, namespace, "web", "s3://models/v1")
    res = ResourceView("ModelRollout", "ro", namespace, "uid", 1, {}, {})
    canary = {"spec": {"predictor": {"model": {"storageUri": "s3://models/v2"},
                                     "canaryTrafficPercent": 10}}}  # fmt: skip
    promote = {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    cache = InformerCache()

    async def work(session: Any) -> None:
        applier = Applier(session, cache)
        await applier.apply(res, [PatchInferenceService("web", canary)])
        assert cache.isvc(namespace, "web")["spec"]["predictor"]["canaryTrafficPercent"] == 10
        await applier.apply(res, [PatchInferenceService("web", promote)])
        await applier.apply(res, [PatchInferenceService("gone", promote)])

    run_async(control_plane, work)
    predictor = read_isvc(kube_api, namespace, "web")["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://models/v2"
    assert "canaryTrafficPercent" not in predictor
    assert predictor["model"]["modelFormat"] == {"name": "huggingface"}  # untouched


def test_a_forbidden_inferenceservice_patch_shows_the_rbac_message(
    control_plane: Any, kube_api: client.ApiClient, kserve_crd: str, namespace: str
) -> None:
    """An operator without `patch` on inferenceservices (an install whose RBAC lacks
    it): the patch raises, and the reconcile failure the ModelRollout shows (Ready=False,
    ReconcileError) carries the API server's reason, naming the verb and resource."""
    from datetime import UTC, datetime

    from kubernetes.client.exceptions import ApiException

    from modelops_operator import failures
    from modelops_operator.k8s.api import ApiSession
    from modelops_operator.k8s.apply import Applier
    from modelops_operator.k8s.informer import InformerCache
    from modelops_operator.reconcile.actions import PatchInferenceService, PatchStatus
    from modelops_operator.reconcile.observed import ResourceView

    create_isvc(kube_api, namespace, "web", "s3://models/v1")
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot"))
    )
    rule = client.V1PolicyRule(
        api_groups=[GROUP], resources=[PLURAL], verbs=["get", "list", "watch"]
    )
    rbac.create_namespaced_role(
        namespace, client.V1Role(metadata=client.V1ObjectMeta(name="read-isvc"), rules=[rule])
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="read-isvc"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="read-isvc"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=namespace)
            ],
        ),
    )
    token = core.create_namespaced_service_account_token(
        "robot",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    settings = client.Configuration()
    settings.host = kube_api.configuration.host
    settings.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    settings.verify_ssl = kube_api.configuration.verify_ssl
    settings.api_key = {"authorization": f"Bearer {token}"}
    res = ResourceView("ModelRollout", "ro", namespace, "uid", 1, {}, {})
    patch = {"spec": {"predictor": {"canaryTrafficPercent": 10}}}

    async def main() -> ApiException:
        session = ApiSession(settings)
        try:
            await Applier(session, InformerCache()).apply(
                res, [PatchInferenceService("web", patch)]
            )
        except ApiException as exc:
            return exc
        finally:
            await session.close()
        raise AssertionError("the patch was allowed")

    import asyncio

    exc = asyncio.run(main())
    assert exc.status == 403
    cls = failures.classify(exc)
    actions = failures.error_plan(
        "ModelRollout", {}, cls, failures.describe(exc), datetime.now(UTC), 1
    )
    ready = next(c for c in actions[0].patch["conditions"] if c["type"] == "Ready")  # type: ignore[union-attr]
    assert isinstance(actions[0], PatchStatus) and ready["reason"] == "ReconcileError"
    assert 'cannot patch resource "inferenceservices"' in ready["message"], ready["message"]
    assert (
        read_isvc(kube_api, namespace, "web")["spec"]["predictor"].get("canaryTrafficPercent")
        is None
    )
