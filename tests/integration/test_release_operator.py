"""The release kinds carried out by the real operator on the real control plane:
ModelRollouts on a KServe InferenceService (KServe's own CRD, `make kserve`), versions
recorded from the job kinds, deletions made effective in serving, the MLflow registry.

No KServe controller runs here: `operator/modelops_devcluster/kserve_standin.py` plays it, writing the status
KServe would write (Ready, observedGeneration, the predictor's revisions and traffic
split) through the InferenceService's status subresource.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from tests.conftest import poll_until
from tests.integration.release_helpers import (
    MODELOPS,
    PROMOTED,
    T0,
    cond,
    create_isvc,
    create_rollout,
    create_version,
    patch_predictor,
    read_custom,
    read_isvc,
    rollout_where,
    serving_web,
)

from modelops_devcluster.kserve_standin import KServeStandIn


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
    from modelops_api.model_rollout import registered_model_name
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    model = "web-model"
    registered = registered_model_name(namespace, model)  # <namespace>.<modelName>
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
        assert aliases_in_mlflow(mlflow_server.url, registered, kube_api, namespace) == {
            "champion": "v1"
        }
        entry = read_custom(kube_api, namespace, "modelversions", "v1")["status"]["registry"]
        assert entry["modelName"] == registered and entry["version"].isdigit()

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
    assert aliases_in_mlflow(mlflow_server.url, registered, kube_api, namespace) == {
        "champion": "v2"
    }
