"""The release loop of issue 15, end to end, in one test: drift to serving and back.

Real parts: the local control plane (kube-apiserver, etcd, kube-controller-manager),
Debian's Prometheus scraping a test exporter every second, the operator in-process,
the stand-in kubelet running each Job pod's own command (CPT on a tiny model, the
gate's evaluation), KServe's own InferenceService CRD, and a real `mlflow server`
(SQLite) as the registry. No KServe controller runs here: `operator/modelops_devcluster/kserve_standin.py`
writes the InferenceService status KServe would write (Ready, observedGeneration, the
traffic split per canaryTrafficPercent), as the stand-in kubelet does for pods.

1. The drift score crosses its threshold -> run 1 of a ModelAdaptation -> version v1
   recorded and registered -> gate passes (nothing served yet: no baseline) ->
   canary 10 -> 50 -> 100 while the error ratio stays in bounds -> the
   InferenceService serves v1's URI, MLflow's champion alias is v1.
2. Run 2 against a gate it cannot meet (an Absolute perplexity bound of 1.0): the
   InferenceService is untouched; the failing metric and its margin are in status.
3. Run 3 passes the gate, but the canary's error ratio is out of bounds: rolled back
   to v1's URI, v3 RolledBack, champion still v1 and no challenger.
Every wait is on a condition (poll with a deadline), never a fixed sleep.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.e2e import release as rel
from tests.integration.kube_helpers import create

from modelops_api.meta import ANNOTATION_RUN_NOW

ISVC = "support-bot"
ADAPT = "support-bot-drift"
BASE_URI = rel.BASE_URI
IMPOSSIBLE = {
    "metric": "perplexity",
    "comparison": "LessOrEqual",
    "baseline": "Absolute",
    "threshold": 1.0,
}
SERVING_RULE = {
    "metric": "perplexity",
    "comparison": "LessOrEqual",
    "baseline": "Serving",
    "tolerance": 0.5,
}


@pytest.fixture(scope="module")
def fixtures_root() -> Path:
    from modelops_jobs.testing.fixtures import build_example_fixtures

    build_example_fixtures(Path(rel.FIXTURES))
    return Path(rel.FIXTURES)


def adaptation(prom_url: str, out: Path) -> dict:
    """CPT on the tiny OPT, started by the drift score crossing 0.5 (later by run-now)."""
    drift = {
        "prometheusUrl": prom_url,
        "query": rel.DRIFT_QUERY,
        "fireThreshold": 0.5,
        "clearThreshold": 0.3,
        "for": "1s",
        "interval": "1s",
        "cooldown": "1h",
    }
    spec = rel.cpt_spec(f"file://{out}", {"type": "drift", "drift": drift})
    return {"kind": "ModelAdaptation", "metadata": {"name": ADAPT}, "spec": spec}


def run_version(api, ns, number):
    return rel.run_version(api, ns, ADAPT, number)


def start_run(api, ns, value, seed):
    """Another run, by the run-now annotation, with its own seed (so its own model)."""
    from kubernetes import client

    from modelops_api.meta import GROUP, VERSION

    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "modeladaptations",
        ADAPT,
        {"metadata": {"annotations": {ANNOTATION_RUN_NOW: value}}, "spec": {"seed": seed}},
    )


@pytest.mark.timeout(900)
def test_drift_to_serving_gate_failure_and_rollback(
    control_plane,
    kube_api,
    crds_installed,
    kserve_crd,
    namespace,
    fixtures_root,
    prometheus_factory,
    mlflow_server,
    wait_for,
    tmp_path,
):
    from modelops_devcluster.kserve_standin import KServeStandIn
    from modelops_devcluster.pod_runner import LocalPodRunner
    from modelops_operator.config import OperatorConfig
    from modelops_operator.main import run_in_thread

    api, ns = kube_api, namespace
    config = OperatorConfig(
        namespaces=(ns,),
        resync_seconds=2.0,
        jobs_image="modelops-jobs:test",
        mlflow_url=mlflow_server.url,
    )
    out = tmp_path / "out"
    with (
        rel.exporter() as exp,
        KServeStandIn(api, ns),
        run_in_thread(config, str(control_plane.kubeconfig), tick=0.2),
        LocalPodRunner(api, tmp_path / "pods", ns, parallel=2),
    ):
        prom = prometheus_factory({"serving": [exp.target]})
        wait_for("drift scraped", lambda: rel.scraped(prom, rel.DRIFT_QUERY, 0.1))
        rel.create_isvc(api, ns, ISVC, BASE_URI)
        wait_for("KServe ready", lambda: rel.isvc_reported(api, ns, ISVC))
        rel.create_release(
            api,
            ns,
            "ModelRollout",
            ISVC,
            rel.rollout(
                ISVC,
                [{"kind": "ModelAdaptation", "name": ADAPT}],
                prom.url,
                rules=[SERVING_RULE],
                evaluation={"data": {"uri": rel.HELD_OUT}, "maxSamples": 16, "seqLen": 64},
                registry=ISVC,
            ),
        )
        create(api, ns, adaptation(prom.url, out))

        with rel.SpecRecorder(api, ns, ISVC) as isvc_specs:
            # -- 1. drift -> run 1 -> v1 gated, canaried, promoted ---------------------
            exp.drift.set(0.9)
            v1 = wait_for("run 1's version", lambda: run_version(api, ns, 1), timeout=240)
            exp.drift.set(0.1)
            uri1 = f"file://{out}/run-0001"
            status = wait_for(
                "v1 promoted", lambda: rel.history_has(api, ns, ISVC, v1, "Promoted"), timeout=240
            )
            assert status["servingVersion"] == v1 and status["servingUri"] == uri1
            wait_for("v1 the default", lambda: rel.isvc_at(api, ns, ISVC, (uri1, None)))
            assert isvc_specs.states == [
                (BASE_URI, None),
                (uri1, 10),
                (uri1, 50),
                (uri1, None),
            ], "each canary step once, in order, then the default"
            version1 = rel.get_release(api, ns, "ModelVersion", v1)
            assert version1["spec"]["uri"] == uri1
            assert version1["spec"]["source"]["kind"] == "ModelAdaptation"
            assert version1["spec"]["source"]["run"] == 1
            assert version1["spec"]["manifestDigest"].startswith("sha256:")
            assert any(p["uri"] == BASE_URI for p in version1["spec"]["parents"])
            assert version1["status"]["phase"] == "Serving"
            assert version1["status"]["evaluation"]["passed"] is True
            perplexity1 = version1["status"]["evaluation"]["checks"][0]["candidate"]
            assert perplexity1 is not None and perplexity1 > 1.0
            champion = wait_for(
                "champion alias on v1",
                lambda: rel.mlflow_alias(mlflow_server.url, f"{ns}.{ISVC}", "champion"),
            )
            assert champion["tags"]["modelops.version"] == v1
            assert rel.mlflow_alias(mlflow_server.url, f"{ns}.{ISVC}", "challenger") is None
            reasons = rel.event_reasons(api, ns, ISVC)
            assert "Promoted" in reasons and "GatePassed" in reasons, reasons

            # -- 2. a gate the run cannot meet: serving untouched ----------------------
            rel.patch_release(
                api,
                ns,
                "ModelRollout",
                ISVC,
                {"spec": {"gate": {"rules": [SERVING_RULE, IMPOSSIBLE]}}},
            )
            generation = rel.get_isvc(api, ns, ISVC)["metadata"]["generation"]
            start_run(api, ns, "second", seed=1)
            v2 = wait_for("run 2's version", lambda: run_version(api, ns, 2), timeout=240)
            status = wait_for(
                "v2 gate failed",
                lambda: rel.history_has(api, ns, ISVC, v2, "GateFailed"),
                timeout=240,
            )
            assert status["servingVersion"] == v1
            isvc = rel.get_isvc(api, ns, ISVC)
            assert rel.predictor(isvc) == (uri1, None)
            assert isvc["metadata"]["generation"] == generation, (
                "the InferenceService was not touched"
            )
            version2 = rel.get_release(api, ns, "ModelVersion", v2)
            assert version2["status"]["phase"] == "GateFailed"
            evaluation = version2["status"]["evaluation"]
            assert evaluation["passed"] is False
            assert evaluation["baselineVersion"] == v1, "compared with the version in service"
            failed = [c for c in evaluation["checks"] if not c["passed"]]
            assert [c["metric"] for c in failed] == ["perplexity"]
            assert failed[0]["limit"] == 1.0 and failed[0]["candidate"] > 1.0
            assert "perplexity" in failed[0]["message"], failed[0]
            assert "perplexity" in status["history"][-1]["message"]
            assert "GateFailed" in rel.event_reasons(api, ns, ISVC)

            # -- 3. the canary's error ratio is out of bounds: rolled back -------------
            rel.patch_release(
                api, ns, "ModelRollout", ISVC, {"spec": {"gate": {"rules": [SERVING_RULE]}}}
            )
            exp.errors.set(0.5)  # the canary will answer with errors
            wait_for("errors scraped", lambda: rel.scraped(prom, rel.ERROR_QUERY, 0.5))
            start_run(api, ns, "third", seed=2)
            v3 = wait_for("run 3's version", lambda: run_version(api, ns, 3), timeout=240)
            uri3 = f"file://{out}/run-0003"
            status = wait_for(
                "v3 rolled back",
                lambda: rel.history_has(api, ns, ISVC, v3, "RolledBack"),
                timeout=240,
            )
            assert status["servingVersion"] == v1
            wait_for("v1 back", lambda: rel.isvc_at(api, ns, ISVC, (uri1, None)))
            status = wait_for(
                "idle again",
                lambda: (
                    s if (s := rel.rollout_status(api, ns, ISVC)).get("phase") == "Idle" else None
                ),
            )
            assert status["servingVersion"] == v1 and status.get("current") is None
            assert isvc_specs.states == [
                (BASE_URI, None),
                (uri1, 10),
                (uri1, 50),
                (uri1, None),
                (uri3, 10),
                (uri1, None),
            ], "the canary took 10% once, never 50, then the previous URI came back"
            version3 = rel.get_release(api, ns, "ModelVersion", v3)
            assert version3["status"]["phase"] == "RolledBack"
            assert version3["status"]["rolledBackTime"]
            assert "0.5" in status["history"][-1]["message"], status["history"][-1]
            assert rel.get_release(api, ns, "ModelVersion", v1)["status"]["phase"] == "Serving"
            aliases = wait_for(
                "aliases restored",
                lambda: (
                    a
                    if (a := rel.rollout_status(api, ns, ISVC).get("registryAliases") or {}).get(
                        "champion"
                    )
                    == v1
                    and not a.get("challenger")
                    else None
                ),
            )
            assert aliases["champion"] == v1
            champion = rel.mlflow_alias(mlflow_server.url, f"{ns}.{ISVC}", "champion")
            assert champion["tags"]["modelops.version"] == v1
            assert rel.mlflow_alias(mlflow_server.url, f"{ns}.{ISVC}", "challenger") is None
            assert "RolledBack" in rel.event_reasons(api, ns, ISVC)
