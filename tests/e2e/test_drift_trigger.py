"""A drift signal scraped by a real Prometheus triggers exactly one adaptation.

A test exporter serves a drift gauge; Prometheus (Debian's binary) scrapes it every
second; the operator, against the local control plane, queries Prometheus. Raising the
gauge above the fire threshold for longer than `for` creates exactly one Job; the
trigger stays disarmed and the cooldown prevents a second run; falling below the
clear threshold re-arms; stopping Prometheus sets PrometheusReachable=False and
triggers nothing. Every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tests.e2e.conftest import free_port
from tests.integration.kube_helpers import condition, create, get

from modelops_devcluster.pod_runner import finish_pod


@pytest.fixture
def drift_exporter():
    registry = CollectorRegistry()
    gauge = Gauge("model_input_drift_score", "Test drift score.", ["model"], registry=registry)
    gauge.labels("tiny").set(0.1)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield gauge.labels("tiny"), f"127.0.0.1:{port}"
    server.shutdown()
    thread.join(5)


def drift_status(api, ns):
    return get(api, ns, "ModelAdaptation", "drifty").get("status", {})


def phase_is(api, ns, phase):
    status = drift_status(api, ns)
    return status if status.get("phase") == phase else None


def evaluated_after(api, ns, stamp, **expect):
    status = drift_status(api, ns)
    drift = status.get("drift", {})
    if drift.get("lastEvaluationTime", "") <= stamp:
        return None
    if all(drift.get(k) == v for k, v in expect.items()):
        return status
    return None


def status_with(api, ns, type_, **expect):
    """The status once condition `type_` has the expected fields, else None."""
    status = drift_status(api, ns)
    cond = condition({"status": status}, type_) or {}
    return status if all(cond.get(k) == v for k, v in expect.items()) else None


def jobs(api, ns):
    return sorted(j.metadata.name for j in client.BatchV1Api(api).list_namespaced_job(ns).items)


@pytest.mark.timeout(240)
def test_drift_fires_once_cools_down_rearms_and_survives_prometheus_loss(
    kube_api, namespace, operator, wait_for, drift_exporter, prometheus_factory
):
    gauge, target = drift_exporter
    prom = prometheus_factory({"drift": [target]})
    wait_for(
        "Prometheus scraped the gauge",
        lambda: True if prom.query("model_input_drift_score")["data"]["result"] else None,
    )
    spec = {
        "model": {"uri": "pvc://m/base"},
        "data": {"uri": "pvc://d/new"},
        "output": {"uri": "pvc://m/versions"},
        "trigger": {
            "type": "drift",
            "drift": {
                "prometheusUrl": prom.url,
                "query": 'max(model_input_drift_score{model="tiny"})',
                "fireThreshold": 0.5,
                "clearThreshold": 0.3,
                "for": "3s",
                "interval": "1s",
                "cooldown": "1h",
            },
        },
    }
    create(
        kube_api,
        namespace,
        {"kind": "ModelAdaptation", "metadata": {"name": "drifty"}, "spec": spec},
    )

    # Below the threshold: evaluated, reachable, nothing runs.
    status = wait_for(
        "first evaluation", lambda: evaluated_after(kube_api, namespace, "", lastValue=0.1)
    )
    assert condition({"status": status}, "PrometheusReachable")["status"] == "True"
    assert jobs(kube_api, namespace) == []

    # Above fire for longer than `for`: exactly one Job.
    gauge.set(0.9)
    status = wait_for(
        "run 1 recorded",
        lambda: s if (s := drift_status(kube_api, namespace)).get("runCount") else None,
        timeout=60,
    )
    assert status["runCount"] == 1 and status["drift"]["armed"] is False
    assert jobs(kube_api, namespace) == ["drifty-adapt-1"]
    assert "drift" in status["runs"][0]["trigger"]

    # Finish run 1; the value stays high: the trigger is disarmed and cooling down.
    core = client.CoreV1Api(kube_api)
    pod = wait_for("run 1 pod", lambda: next(iter(core.list_namespaced_pod(namespace).items), None))
    finish_pod(core, pod, 0, '{"ok": true, "reason": "Succeeded", "results": {"newLoss": 1.0}}')
    done = wait_for("run 1 Succeeded", lambda: phase_is(kube_api, namespace, "Succeeded"))
    stamp = done["drift"]["lastEvaluationTime"]
    for _ in range(3):  # three more evaluations while the value stays above fire
        stamp = wait_for(
            "another evaluation", lambda s=stamp: evaluated_after(kube_api, namespace, s)
        )["drift"]["lastEvaluationTime"]
    assert jobs(kube_api, namespace) == ["drifty-adapt-1"], "no second run while disarmed"

    # Below clear: re-armed. Above fire again: held back by the cooldown.
    gauge.set(0.1)
    wait_for(
        "re-armed", lambda: evaluated_after(kube_api, namespace, stamp, armed=True, lastValue=0.1)
    )
    gauge.set(0.9)
    cooling = wait_for(
        "cooldown holds the run",
        lambda: status_with(kube_api, namespace, "DriftDetected", reason="CoolingDown"),
        timeout=60,
    )
    assert cooling["runCount"] == 1 and jobs(kube_api, namespace) == ["drifty-adapt-1"]
    assert cooling["nextRunAllowedTime"] > cooling["drift"]["lastEvaluationTime"]

    # Prometheus goes away: a condition with the reason, no trigger.
    prom.stop()
    down = wait_for(
        "PrometheusReachable=False",
        lambda: status_with(kube_api, namespace, "PrometheusReachable", status="False"),
        timeout=60,
    )
    assert condition({"status": down}, "PrometheusReachable")["reason"] == "PrometheusUnreachable"
    assert down["drift"]["consecutiveErrors"] >= 1 and down["runCount"] == 1
    assert jobs(kube_api, namespace) == ["drifty-adapt-1"]


@pytest.mark.parametrize(
    ("drift_patch", "reason", "needle"),
    [
        ({"query": "model_input_drift_score"}, "NotAScalar", "2 series"),
        # A missing (or not opted-in) Secret sends no query at all: PolicyViolation,
        # tests/e2e/test_security.py and tests/e2e/test_tenant_isolation.py.
    ],
    ids=["many-series"],
)
def test_bad_drift_queries_set_a_condition_and_start_nothing(
    kube_api, namespace, operator, wait_for, prometheus_factory, drift_patch, reason, needle
):
    registry = CollectorRegistry()
    gauge = Gauge("model_input_drift_score", "Test drift score.", ["model"], registry=registry)
    gauge.labels("a").set(0.9)
    gauge.labels("b").set(0.9)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prom = prometheus_factory({"drift": [f"127.0.0.1:{port}"]})
        wait_for(
            "scraped",
            lambda: (
                True if len(prom.query("model_input_drift_score")["data"]["result"]) == 2 else None
            ),
        )
        drift = {
            "prometheusUrl": prom.url,
            "query": 'max(model_input_drift_score{model="a"})',
            "fireThreshold": 0.5,
            "clearThreshold": 0.3,
            "for": "1s",
            "interval": "1s",
            **drift_patch,
        }
        spec = {
            "model": {"uri": "pvc://m/base"},
            "data": {"uri": "pvc://d/new"},
            "output": {"uri": "pvc://m/versions"},
            "trigger": {"type": "drift", "drift": drift},
        }
        create(
            kube_api,
            namespace,
            {"kind": "ModelAdaptation", "metadata": {"name": "drifty"}, "spec": spec},
        )
        status = wait_for(
            f"condition {reason}",
            lambda: status_with(
                kube_api, namespace, "PrometheusReachable", status="False", reason=reason
            ),
        )
        message = condition({"status": status}, "PrometheusReachable")["message"]
        assert needle in message
        stamp = status["drift"]["lastEvaluationTime"]
        wait_for("another evaluation", lambda: evaluated_after(kube_api, namespace, stamp))
        assert (
            jobs(kube_api, namespace) == []
            and drift_status(kube_api, namespace).get("runCount", 0) == 0
        )
    finally:
        server.shutdown()
        thread.join(5)
