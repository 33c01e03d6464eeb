"""Faults during a rollout, with the canary analysis on a real Prometheus (issue 15).

- The operator SIGKILLed mid-canary and started again continues from status alone: no
  canary step applied twice, and evidence that turned while it was down still rolls
  the candidate back (it never advances on the strength of queries made before).
- The InferenceService edited by hand mid-canary pauses the rollout with a condition;
  while paused nothing is touched, even when the analysis goes out of bounds; once the
  InferenceService is back to what the rollout set, it resumes and acts on the evidence.
- Prometheus down during a step holds the step (AnalysisHealthy Unknown with the
  reason; never promoted on missing data) for many intervals; back up, it proceeds.
- A rollout waits for KServe to serve the InferenceService before patching it (a defect
  found here: patched earlier, the canary could never show its split).

The operator-level versions of some of these, without Prometheus, are in
tests/integration/test_release_operator.py. Here the versions are recorded by the test
itself, as the operator records a published run (test_release_loop.py shows that path),
so no Job has to run. No KServe controller runs here: `operator/modelops_devcluster/kserve_standin.py` writes
the InferenceService status KServe would write.
"""

from __future__ import annotations

import hashlib
import signal
from datetime import UTC, datetime

import pytest
from tests.e2e import release as rel
from tests.integration.kube_helpers import condition, start_operator_process

ISVC = "faulty-bot"
SOURCE = {"kind": "ModelAdaptation", "name": "seeded"}
BASE = "file:///models/base"


def record_version(api, ns, uri: str) -> str:
    """A ModelVersion as the operator records one after a run published `uri`."""
    digest = hashlib.sha256(uri.encode()).hexdigest()
    name = f"seeded-{digest[:10]}"
    rel.create_release(
        api,
        ns,
        "ModelVersion",
        name,
        {
            "uri": uri,
            "manifestDigest": f"sha256:{digest}",
            "source": {**SOURCE, "uid": "00000000-0000-0000-0000-000000000001", "run": 1},
            "createdTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    return name


def step_reported(api, ns, percent: int):
    """The rollout's status once the InferenceService reported step `percent` (the
    step's clock runs)."""
    status = rel.rollout_status(api, ns, ISVC)
    current = status.get("current") or {}
    applied = status.get("applied") or {}
    if applied.get("canaryTrafficPercent") == percent and current.get("stepStartTime"):
        return status
    return None


def analysis_condition(api, ns, **expect):
    status = rel.rollout_status(api, ns, ISVC)
    cond = condition({"status": status}, "AnalysisHealthy") or {}
    return status if cond and all(cond.get(k) == v for k, v in expect.items()) else None


@pytest.fixture
def world(kube_api, crds_installed, kserve_crd, namespace, prometheus_factory, wait_for):
    """An InferenceService on BASE (played by the stand-in), a Prometheus scraping the
    canary's error ratio (0 for now); yields (exporter, prometheus)."""
    from modelops_devcluster.kserve_standin import KServeStandIn

    with rel.exporter() as exp, KServeStandIn(kube_api, namespace):
        prom = prometheus_factory({"serving": [exp.target]})
        wait_for("errors scraped", lambda: rel.scraped(prom, rel.ERROR_QUERY, 0.0))
        rel.create_isvc(kube_api, namespace, ISVC, BASE)
        # Serving before any rollout looks at it (KServe reported the first revision).
        wait_for("KServe ready", lambda: rel.isvc_reported(kube_api, namespace, ISVC))
        yield exp, prom


def create_rollout(api, ns, prom, interval: str) -> None:
    spec = rel.rollout(ISVC, [SOURCE], prom.url)
    spec["canary"]["interval"] = interval
    rel.create_release(api, ns, "ModelRollout", ISVC, spec)


@pytest.mark.timeout(300)
def test_operator_killed_mid_canary_repeats_no_step_and_loses_no_rollback(
    control_plane, kube_api, namespace, world, wait_for, tmp_path
):
    exp, prom = world
    api, ns = kube_api, namespace
    log = open(tmp_path / "operator.log", "ab")  # noqa: SIM115 - closed below

    def start():
        return start_operator_process(control_plane.kubeconfig, ns, log)

    proc = start()
    try:
        with rel.SpecRecorder(api, ns, ISVC) as specs:
            create_rollout(api, ns, prom, "3s")
            v1 = record_version(api, ns, "file:///models/v1")
            wait_for("v1 at 10%", lambda: step_reported(api, ns, 10), timeout=60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc = start()
            wait_for(
                "v1 promoted", lambda: rel.history_has(api, ns, ISVC, v1, "Promoted"), timeout=90
            )
            assert specs.states == [
                (BASE, None),
                ("file:///models/v1", 10),
                ("file:///models/v1", 50),
                ("file:///models/v1", None),
            ], "every step once, in order"

            # v2 reaches 10%; the operator dies; the canary's errors rise while it is
            # down and the step's interval passes. The new operator must query again and
            # roll back, not advance on the in-bounds answers its predecessor saw.
            v2 = record_version(api, ns, "file:///models/v2")
            wait_for("v2 at 10%", lambda: step_reported(api, ns, 10), timeout=60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            exp.errors.set(0.5)
            wait_for("errors scraped", lambda: rel.scraped(prom, rel.ERROR_QUERY, 0.5))
            proc = start()
            status = wait_for(
                "v2 rolled back",
                lambda: rel.history_has(api, ns, ISVC, v2, "RolledBack"),
                timeout=90,
            )
            assert status["servingVersion"] == v1
            wait_for("v1 back", lambda: rel.isvc_at(api, ns, ISVC, ("file:///models/v1", None)))
            assert specs.states == [
                (BASE, None),
                ("file:///models/v1", 10),
                ("file:///models/v1", 50),
                ("file:///models/v1", None),
                ("file:///models/v2", 10),
                ("file:///models/v1", None),
            ], "v2 never got more than 10%; v1 is back"
            assert rel.get_release(api, ns, "ModelVersion", v2)["status"]["phase"] == "RolledBack"
            outcomes = [h["outcome"] for h in rel.rollout_status(api, ns, ISVC)["history"]]
            assert outcomes == ["Promoted", "RolledBack"]
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


@pytest.mark.timeout(240)
def test_an_inference_service_edited_by_hand_pauses_the_rollout_until_restored(
    kube_api, namespace, world, operator, wait_for
):
    exp, prom = world
    api, ns = kube_api, namespace
    create_rollout(api, ns, prom, "1h")  # the step holds until the test changes it
    v1 = record_version(api, ns, "file:///models/v1")
    wait_for("v1 at 10%", lambda: step_reported(api, ns, 10), timeout=60)

    rel.edit_isvc_by_hand(api, ns, ISVC, "file:///models/hotfix")
    paused = wait_for(
        "paused",
        lambda: s if (s := rel.rollout_status(api, ns, ISVC)).get("phase") == "Paused" else None,
    )
    cond = condition({"status": paused}, "Paused")
    assert cond["status"] == "True" and cond["reason"] == "InferenceServiceEditedByHand"
    # While paused, evidence against the canary touches nothing: the InferenceService
    # is the person's now.
    exp.errors.set(0.5)
    wait_for("errors scraped", lambda: rel.scraped(prom, rel.ERROR_QUERY, 0.5))
    generation = rel.get_isvc(api, ns, ISVC)["metadata"]["generation"]
    # A spec change makes the operator reconcile (and say so in observedGeneration)
    # after the errors were scraped.
    rel.patch_release(api, ns, "ModelRollout", ISVC, {"spec": {"canary": {"interval": "2h"}}})
    wanted = rel.get_release(api, ns, "ModelRollout", ISVC)["metadata"]["generation"]
    wait_for(
        "reconciled while paused",
        lambda: (
            True if rel.rollout_status(api, ns, ISVC).get("observedGeneration") == wanted else None
        ),
    )
    isvc = rel.get_isvc(api, ns, ISVC)
    assert rel.predictor(isvc) == ("file:///models/hotfix", 10)
    assert isvc["metadata"]["generation"] == generation
    assert rel.rollout_status(api, ns, ISVC)["phase"] == "Paused"

    # Back to what the rollout set: it resumes and acts on the evidence.
    rel.edit_isvc_by_hand(api, ns, ISVC, "file:///models/v1")
    status = wait_for(
        "rolled back after resuming",
        lambda: rel.history_has(api, ns, ISVC, v1, "RolledBack"),
        timeout=60,
    )
    wait_for("the previous URI back", lambda: rel.isvc_at(api, ns, ISVC, (BASE, None)))
    paused = condition({"status": status}, "Paused")
    assert paused is None or paused["status"] == "False"


@pytest.mark.timeout(240)
def test_prometheus_down_holds_the_step_and_it_proceeds_once_back(
    kube_api, namespace, world, operator, wait_for
):
    _exp, prom = world
    api, ns = kube_api, namespace
    with rel.SpecRecorder(api, ns, ISVC) as specs:
        create_rollout(api, ns, prom, "1s")
        v1 = record_version(api, ns, "file:///models/v1")
        wait_for("v1 at 10%", lambda: step_reported(api, ns, 10), timeout=60)
        prom.stop_process()
        held = wait_for(
            "analysis unhealthy",
            lambda: analysis_condition(api, ns, status="Unknown", reason="PrometheusUnreachable"),
        )
        start = datetime.fromisoformat(held["current"]["stepStartTime"].replace("Z", "+00:00"))
        # Many intervals pass with no answer: the step holds.
        wait_for(
            "five intervals without an answer",
            lambda: (
                True
                if (datetime.now(UTC) - start).total_seconds() > 5
                and (rel.rollout_status(api, ns, ISVC).get("current") or {})
                .get("analysis", {})
                .get("lastError")
                else None
            ),
        )
        status = rel.rollout_status(api, ns, ISVC)
        assert status["phase"] == "Canary" and status["applied"]["canaryTrafficPercent"] == 10
        assert rel.predictor(rel.get_isvc(api, ns, ISVC)) == ("file:///models/v1", 10)
        assert "Promoted" not in rel.event_reasons(api, ns, ISVC)

        prom.start()
        wait_for("v1 promoted", lambda: rel.history_has(api, ns, ISVC, v1, "Promoted"), timeout=90)
        wait_for("v1 the default", lambda: rel.isvc_at(api, ns, ISVC, ("file:///models/v1", None)))
        assert specs.states == [
            (BASE, None),
            ("file:///models/v1", 10),
            ("file:///models/v1", 50),
            ("file:///models/v1", None),
        ]
        healthy = condition({"status": rel.rollout_status(api, ns, ISVC)}, "AnalysisHealthy")
        assert healthy is None or healthy["status"] != "Unknown"


@pytest.mark.timeout(180)
def test_a_rollout_waits_for_kserve_to_serve_the_inference_service_before_patching_it(
    kube_api, crds_installed, kserve_crd, namespace, operator, wait_for
):
    from modelops_devcluster.kserve_standin import KServeStandIn

    api, ns = kube_api, namespace
    rel.create_isvc(api, ns, ISVC, BASE)  # KServe has not acted on it yet
    rel.create_release(api, ns, "ModelRollout", ISVC, rel.rollout(ISVC, [SOURCE], None))
    v1 = record_version(api, ns, "file:///models/v1")
    wait_for(
        "candidate taken",
        lambda: True if "CandidateTaken" in rel.event_reasons(api, ns, ISVC) else None,
    )
    assert rel.get_isvc(api, ns, ISVC)["metadata"]["generation"] == 1, (
        "patched before KServe served the InferenceService"
    )
    with KServeStandIn(api, ns):
        wait_for("v1 promoted", lambda: rel.history_has(api, ns, ISVC, v1, "Promoted"), timeout=60)
