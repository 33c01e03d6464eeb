"""The release kinds on the real control plane: KServe's InferenceService CRD (from its
Go module, `make kserve`) installed, ModelVersions recorded, ModelRollouts carried out.

No KServe controller runs here: `tests/kserve_standin.py` plays it, writing the status
KServe would write (Ready, observedGeneration, the predictor's revisions and traffic
split) through the InferenceService's status subresource.
"""

from __future__ import annotations

import json
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


# -- the operator's InferenceService adapter on the real API server --------------------


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


# -- ModelRollouts carried out by the operator -------------------------------------------

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


def test_rollout_goes_10_50_100_and_ends_on_the_new_uri(
    kube_api: client.ApiClient, kserve: KServeStandIn, operator: Any, namespace: str
) -> None:
    from modelops_operator import metrics

    labels = {"namespace": namespace, "name": "ro", "kind": "ModelRollout"}
    serving_web(kube_api, namespace, kserve, "s3://m/v0")
    create_rollout(kube_api, namespace, "ro")
    poll_until("v0 adopted", lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v0"))
    create_version(kube_api, namespace, "v1", "s3://m/v1", "2026-12-01T01:00:00Z")
    done = poll_until(
        "v1 promoted",
        lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v1", phase="Idle"),
    )
    assert kserve.states("web") == PROMOTED
    predictor = read_isvc(kube_api, namespace, "web")["spec"]["predictor"]
    assert (
        predictor["model"]["storageUri"] == "s3://m/v1" and "canaryTrafficPercent" not in predictor
    )
    assert done["status"]["previousVersion"] == "v0"
    assert [h["outcome"] for h in done["status"]["history"]] == ["Promoted"]
    phases = {v: read_custom(kube_api, namespace, "modelversions", v)["status"]["phase"]
              for v in ("v0", "v1")}  # fmt: skip
    assert phases == {"v0": "Retired", "v1": "Serving"}
    assert metrics.REGISTRY.get_sample_value("modelops_rollout_promotions_total", labels) == 1.0
    assert metrics.REGISTRY.get_sample_value("modelops_rollout_canary_percent", labels) == 0.0


def test_inferenceservice_edited_by_hand_pauses_the_rollout(
    kube_api: client.ApiClient, kserve: KServeStandIn, operator: Any, namespace: str
) -> None:
    """Mid-canary, someone points the InferenceService elsewhere: the rollout touches
    nothing and says so; put back as the rollout left it, the rollout goes on."""
    from modelops_operator import metrics

    serving_web(kube_api, namespace, kserve, "s3://m/v0")
    create_rollout(kube_api, namespace, "ro", interval="1h")
    poll_until("v0 adopted", lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v0"))
    create_version(kube_api, namespace, "v1", "s3://m/v1", "2026-12-01T01:00:00Z")
    poll_until("the 10% canary", lambda: ("s3://m/v1", 10) in kserve.states("web") or None)
    patch_predictor(kube_api, namespace, "web", model={"storageUri": "s3://m/hand"},
                    canaryTrafficPercent=None)  # fmt: skip
    paused = poll_until("Paused", lambda: rollout_where(kube_api, namespace, "ro", phase="Paused"))
    assert cond(paused, "Paused") == ("True", "InferenceServiceEditedByHand")
    seen = metrics.RECONCILES.labels("ModelRollout")._value.get()
    poll_until(  # two more reconciles (resyncs, the stand-in's status writes)
        "reconciles",
        lambda: metrics.RECONCILES.labels("ModelRollout")._value.get() >= seen + 2 or None,
    )
    assert read_isvc(kube_api, namespace, "web")["spec"]["predictor"]["model"]["storageUri"] == (
        "s3://m/hand"
    )
    patch_predictor(kube_api, namespace, "web", model={"storageUri": "s3://m/v1"},
                    canaryTrafficPercent=10)  # fmt: skip
    back = poll_until("resumed", lambda: rollout_where(kube_api, namespace, "ro", phase="Canary"))
    assert (cond(back, "Paused") or ("False", ""))[0] == "False"
    assert kserve.states("web")[-1] == ("s3://m/v1", 10)  # the operator did not re-patch it


def test_operator_killed_mid_rollout_resumes_without_repeating_a_step(
    requests: list[tuple[str, str, float]],
    control_plane: Any,
    crds_installed: Any,
    kube_api: client.ApiClient,
    kserve: KServeStandIn,
    namespace: str,
) -> None:
    """Stopped while the 50% step holds, a new operator finishes from the status alone:
    the InferenceService goes through each state once and is patched once per step."""
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    cfg = OperatorConfig(
        namespaces=(namespace,), resync_seconds=5.0, jobs_image="modelops-jobs:test"
    )
    serving_web(kube_api, namespace, kserve, "s3://m/v0")
    create_rollout(kube_api, namespace, "ro", interval="3s")
    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2):
        poll_until(
            "v0 adopted", lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v0")
        )
        create_version(kube_api, namespace, "v1", "s3://m/v1", "2026-12-01T01:00:00Z")
        poll_until("the 50% step", lambda: ("s3://m/v1", 50) in kserve.states("web") or None)
    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2):
        poll_until(
            "v1 promoted",
            lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v1", phase="Idle"),
        )
    assert kserve.states("web") == PROMOTED
    patches = [p for m, p, _ in requests if m == "PATCH" and "/inferenceservices/" in p]
    assert len(patches) == 3, patches


def test_a_second_rollout_on_one_inferenceservice_reports_conflict(
    kube_api: client.ApiClient, kserve: KServeStandIn, operator: Any, namespace: str
) -> None:
    serving_web(kube_api, namespace, kserve, "s3://m/v0")
    create_rollout(kube_api, namespace, "first")
    poll_until(
        "first adopts", lambda: rollout_where(kube_api, namespace, "first", servingVersion="v0")
    )
    create_rollout(kube_api, namespace, "second")
    second = poll_until(
        "Conflict",
        lambda: (lambda o: o if cond(o, "Conflict") else None)(
            read_custom(kube_api, namespace, "modelrollouts", "second")
        ),
    )
    assert cond(second, "Conflict") == ("True", "InferenceServiceClaimed")
    assert "first" in next(
        c["message"] for c in second["status"]["conditions"] if c["type"] == "Conflict"
    )
    assert "servingVersion" not in second["status"]  # it did nothing
    assert cond(read_custom(kube_api, namespace, "modelrollouts", "first"), "Conflict") is None
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        *MODELOPS, namespace, "modelrollouts", "first"
    )
    alone = poll_until(
        "Conflict cleared",
        lambda: (lambda o: o if cond(o, "Conflict") == ("False", "Sole") else None)(
            read_custom(kube_api, namespace, "modelrollouts", "second")
        ),
    )
    assert alone["status"].get("servingVersion") in (None, "v0")


# -- versions recorded from the job kinds -------------------------------------------------


def test_a_succeeded_resource_gets_exactly_one_version_across_restarts(
    control_plane: Any, crds_installed: Any, kube_api: client.ApiClient, namespace: str
) -> None:
    """A PruneRetrain that succeeds is recorded once as a ModelVersion (deterministic
    name), named in its status; a restarted operator, reconciling it again, records
    nothing new and never edits the version."""
    from tests.integration.kube_helpers import create, get, prune

    from modelops_devcluster.pod_runner import finish_pod
    from modelops_operator import metrics
    from modelops_operator.build.names import version_name
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    cfg = OperatorConfig(
        namespaces=(namespace,), resync_seconds=1.0, jobs_image="modelops-jobs:test"
    )
    core = client.CoreV1Api(kube_api)
    result = {
        "ok": True,
        "reason": "Succeeded",
        "message": "",
        "results": {"sparsity": 0.5, "retrainedPerplexity": 12.5},
        "artifact": {"uri": "pvc://models/out-p", "manifestDigest": "sha256:" + "ab" * 32},
    }

    def pending() -> Any:
        pods = core.list_namespaced_pod(
            namespace, label_selector="batch.kubernetes.io/job-name=p-prune"
        )
        return next((p for p in pods.items if p.status.phase == "Pending"), None)

    def versions() -> list[dict[str, Any]]:
        return client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
            *MODELOPS, namespace, "modelversions"
        )["items"]

    def recorded() -> Any:
        obj = get(kube_api, namespace, "PruneRetrain", "p")
        return obj if obj.get("status", {}).get("modelVersion") else None

    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2):
        create(kube_api, namespace, prune("p"))
        finish_pod(core, poll_until("the pod", pending), 0, json.dumps(result))
        done = poll_until("status.modelVersion", recorded, timeout=90)
    name = version_name("p", result["artifact"]["manifestDigest"])  # type: ignore[index]
    assert done["status"]["modelVersion"] == name
    [version] = versions()
    assert version["metadata"]["name"] == name
    assert version["spec"]["uri"] == "pvc://models/out-p"
    assert version["spec"]["source"]["kind"] == "PruneRetrain"
    assert version["spec"]["metrics"] == {"sparsity": 0.5, "retrainedPerplexity": 12.5}
    labels = {"namespace": namespace, "name": "p", "kind": "PruneRetrain"}
    assert metrics.REGISTRY.get_sample_value("modelops_versions_recorded_total", labels) == 1.0
    seen = metrics.RECONCILES.labels("PruneRetrain")._value.get()
    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2):
        poll_until(  # the new operator reconciled it (watch event, then resyncs)
            "reconciles after the restart",
            lambda: metrics.RECONCILES.labels("PruneRetrain")._value.get() >= seen + 3 or None,
        )
    [again] = versions()
    assert again["metadata"]["resourceVersion"] == version["metadata"]["resourceVersion"]
    assert metrics.REGISTRY.get_sample_value("modelops_versions_recorded_total", labels) == 1.0


# -- an UnlearnRequest's deletion reaching serving -----------------------------------------


def test_deletion_is_pending_while_the_parent_serves_then_effective(
    kube_api: client.ApiClient, kserve: KServeStandIn, operator: Any, namespace: str
) -> None:
    """An UnlearnRequest on the served model: its version is taken by the rollout (not
    a candidate source, still required) and waits for approval; meanwhile the request
    says the deletion is pending, naming the InferenceService. Approved and promoted,
    the request records when and where the deletion became effective."""
    from tests.integration.kube_helpers import create, get

    from modelops_devcluster.pod_runner import finish_pod
    from modelops_operator import metrics

    store = "pvc://models/s3t"
    serving_web(kube_api, namespace, kserve, store)  # v0: the served model, at the store
    body = {
        "apiVersion": "/".join(MODELOPS),
        "kind": "ModelRollout",
        "metadata": {"name": "ro"},
        "spec": {
            "inferenceService": {"name": "web"},
            "candidates": [{"kind": "PruneRetrain", "name": "src"}],
            "canary": {"steps": [50, 100], "interval": "1s"},
            "requireApproval": True,
        },
    }
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        *MODELOPS, namespace, "modelrollouts", body
    )
    poll_until("v0 adopted", lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v0"))
    create(kube_api, namespace, {"kind": "UnlearnRequest", "metadata": {"name": "forget"},
                                 "spec": {"model": {"uri": store}, "sampleIds": ["s-1", "s-2"]}})  # fmt: skip
    core = client.CoreV1Api(kube_api)

    def pending_pod() -> Any:
        pods = core.list_namespaced_pod(
            namespace, label_selector="modelops.dev/kind=UnlearnRequest"
        )
        return next((p for p in pods.items if p.status.phase == "Pending"), None)

    result = {
        "ok": True,
        "reason": "Succeeded",
        "message": "",
        "results": {"deletedSamples": 2},
        "artifact": {"uri": f"{store}-forgot", "manifestDigest": "sha256:" + "cd" * 32},
    }
    finish_pod(core, poll_until("the unlearning pod", pending_pod), 0, json.dumps(result))

    def request_where(pred: Any) -> Any:
        obj = get(kube_api, namespace, "UnlearnRequest", "forget")
        return obj if pred(obj.get("status") or {}) else None

    pending = poll_until(
        "deletion pending",
        lambda: request_where(lambda st: st.get("deletionPendingSince")),
        timeout=90,
    )
    version = pending["status"]["modelVersion"]
    assert cond(pending, "DeletionEffective") == ("False", "DeletionPending")
    message = next(
        c["message"] for c in pending["status"]["conditions"] if c["type"] == "DeletionEffective"
    )
    assert "InferenceService web" in message
    assert pending["status"]["deletionPendingSince"] == pending["status"]["completionTime"]
    labels = {"namespace": namespace, "name": "forget", "kind": "UnlearnRequest"}
    poll_until(
        "awaiting approval",
        lambda: rollout_where(kube_api, namespace, "ro", phase="AwaitingApproval"),
    )
    assert metrics.REGISTRY.get_sample_value("modelops_deletion_pending_seconds", labels) >= 0.0
    assert (
        metrics.REGISTRY.get_sample_value("modelops_deletion_max_delay_seconds", labels) == 86400.0
    )
    client.CustomObjectsApi(kube_api).patch_namespaced_custom_object(
        *MODELOPS, namespace, "modelrollouts", "ro",
        {"metadata": {"annotations": {"modelops.dev/approve": version}}},
    )  # fmt: skip
    done = poll_until(
        "deletion effective",
        lambda: request_where(lambda st: st.get("deletionEffective")),
        timeout=60,
    )
    effective = done["status"]["deletionEffective"]
    assert (effective["inferenceService"], effective["version"]) == ("web", version)
    assert "deletionPendingSince" not in done["status"]
    assert cond(done, "DeletionEffective") == ("True", "DeletionEffective")
    ro = read_custom(kube_api, namespace, "modelrollouts", "ro")
    assert ro["status"]["servingVersion"] == version
    assert effective["time"] == ro["status"]["servingSince"]
    assert read_isvc(kube_api, namespace, "web")["spec"]["predictor"]["model"]["storageUri"] == (
        f"{store}-forgot"
    )
    assert metrics.REGISTRY.get_sample_value("modelops_deletion_pending_seconds", labels) == 0.0


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


def test_a_rollout_of_a_missing_inferenceservice_pauses_until_it_exists(
    kube_api: client.ApiClient, kserve: KServeStandIn, operator: Any, namespace: str
) -> None:
    create_version(kube_api, namespace, "v0", "s3://m/v0", T0)
    create_rollout(kube_api, namespace, "ro")
    paused = poll_until("Paused", lambda: rollout_where(kube_api, namespace, "ro", phase="Paused"))
    assert cond(paused, "Paused") == ("True", "InferenceServiceNotFound")
    create_isvc(kube_api, namespace, "web", "s3://m/v0")  # its watch event wakes the rollout
    adopted = poll_until(
        "adopted", lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v0")
    )
    assert (cond(adopted, "Paused") or ("False", ""))[0] == "False"


# -- the MLflow registry follows the rollout ----------------------------------------------


def aliases_in_mlflow(
    url: str, model: str, api: client.ApiClient, namespace: str
) -> dict[str, str]:
    """The registry's aliases of `model`, each as the ModelVersion whose entry
    (status.registry.version) it points at."""
    from modelops_operator.registry.mlflow import MlflowRegistry

    numbers = MlflowRegistry(url).aliases(model)
    entries = {
        v["status"]["registry"]["version"]: v["metadata"]["name"]
        for v in client.CustomObjectsApi(api).list_namespaced_custom_object(
            *MODELOPS, namespace, "modelversions"
        )["items"]
        if (v.get("status") or {}).get("registry")
    }
    return {alias: entries.get(number, f"?{number}") for alias, number in numbers.items()}


def test_the_registry_follows_the_rollout_and_an_outage_never_holds_it(
    control_plane: Any,
    crds_installed: Any,
    kube_api: client.ApiClient,
    kserve: KServeStandIn,
    mlflow_server: Any,
    namespace: str,
) -> None:
    """With MODELOPS_MLFLOW_URL set and spec.registry on the rollout: every version in
    play is registered (its status.registry), champion follows the serving version. With
    the registry down a new version still rolls out (RegistrySynced False, the client's
    reason); once it is back, the aliases catch up."""
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    model = f"web-{namespace}"
    cfg = OperatorConfig(
        namespaces=(namespace,), resync_seconds=1.0, jobs_image="x:1", mlflow_url=mlflow_server.url
    )
    serving_web(kube_api, namespace, kserve, "s3://m/v0")
    body = {
        "apiVersion": "/".join(MODELOPS),
        "kind": "ModelRollout",
        "metadata": {"name": "ro"},
        "spec": {
            "inferenceService": {"name": "web"},
            "candidates": [{"kind": "PruneRetrain", "name": "src"}],
            "canary": {"steps": [50, 100], "interval": "1s"},
            "registry": {"modelName": model},
        },
    }
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        *MODELOPS, namespace, "modelrollouts", body
    )

    def aliases_are(champion: str) -> Any:
        ro = read_custom(kube_api, namespace, "modelrollouts", "ro")
        held = (ro.get("status") or {}).get("registryAliases") or {}
        return ro if held.get("champion") == champion else None

    with run_in_thread(cfg, str(control_plane.kubeconfig), tick=0.2):
        poll_until("champion v0", lambda: aliases_are("v0"))
        create_version(kube_api, namespace, "v1", "s3://m/v1", "2026-12-01T01:00:00Z")
        ro = poll_until("champion v1", lambda: aliases_are("v1"))
        assert cond(ro, "RegistrySynced") == ("True", "AliasesSet")
        assert aliases_in_mlflow(mlflow_server.url, model, kube_api, namespace) == {
            "champion": "v1"
        }
        entry = read_custom(kube_api, namespace, "modelversions", "v1")["status"]["registry"]
        assert entry["modelName"] == model and entry["version"].isdigit()

        mlflow_server.stop()
        try:
            create_version(kube_api, namespace, "v2", "s3://m/v2", "2026-12-01T02:00:00Z")
            down = poll_until(
                "v2 promoted while the registry is down",
                lambda: rollout_where(kube_api, namespace, "ro", servingVersion="v2", phase="Idle"),
            )
            assert cond(down, "RegistrySynced") == ("False", "RegistryUnreachable")
            assert (
                "registry" not in read_custom(kube_api, namespace, "modelversions", "v2")["status"]
            )
        finally:
            mlflow_server.start()
        back = poll_until("champion v2 once the registry is back", lambda: aliases_are("v2"))
        assert cond(back, "RegistrySynced") == ("True", "AliasesSet")
    assert aliases_in_mlflow(mlflow_server.url, model, kube_api, namespace) == {"champion": "v2"}
