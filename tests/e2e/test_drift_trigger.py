"""A drift signal scraped by a real Prometheus triggers exactly one adaptation.

A test exporter serves a drift gauge; Prometheus (Debian's binary) scrapes it every
second; the operator, against the local control plane, queries Prometheus. Raising the
gauge above the fire threshold for longer than `for` creates exactly one Job; the
trigger stays disarmed and the cooldown prevents a second run; falling below the
clear threshold re-arms; stopping Prometheus sets PrometheusReachable=False and
triggers nothing. Every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import http.server
import itertools
import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tests.drift_cases import drift_adaptation, drift_trigger
from tests.e2e.conftest import free_port
from tests.integration.kube_helpers import condition, create, get

from modelops_devcluster.pod_runner import finish_pod
from modelops_operator.drift.prometheus import Credentials, query_value


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


def ts(stamp):
    """An RFC 3339 time from status (seconds or microseconds) as a datetime."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def evaluated_after(api, ns, stamp, **expect):
    status = drift_status(api, ns)
    drift = status.get("drift", {})
    last = drift.get("lastEvaluationTime")
    if last is None or (stamp and ts(last) <= ts(stamp)):
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
    spec = drift_adaptation(
        drift_trigger(
            prom.url,
            'max(model_input_drift_score{model="tiny"})',
            **{"for": "3s", "interval": "1s", "cooldown": "1h"},
        )
    )
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
    assert ts(cooling["nextRunAllowedTime"]) > ts(cooling["drift"]["lastEvaluationTime"])

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
            **drift_trigger(
                prom.url,
                'max(model_input_drift_score{model="a"})',
                **{"for": "1s", "interval": "1s"},
            ),
            **drift_patch,
        }
        spec = drift_adaptation(drift)
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


# -- issue 11: the trigger fires only when its spec says so -------------------------------


def drift_spec(prom_url, **drift):
    trigger = drift_trigger(
        prom_url,
        'max(model_input_drift_score{model="tiny"})',
        **{"interval": "1s", "timeout": "1s", **drift},
    )
    return drift_adaptation(trigger, successfulRunsHistoryLimit=100)


def create_drifty(api, ns, spec):
    create(api, ns, {"kind": "ModelAdaptation", "metadata": {"name": "drifty"}, "spec": spec})


def finish_open_pods(core, ns):
    """Play the kubelet's part for every pod of a run: report it Succeeded."""
    for pod in core.list_namespaced_pod(ns).items:
        statuses = pod.status.container_statuses or []
        if pod.status.phase not in ("Succeeded", "Failed") and not any(
            s.state and s.state.terminated for s in statuses
        ):
            finish_pod(core, pod, 0, '{"ok": true, "reason": "Succeeded", "results": {}}')


def events(api, ns, reason=None):
    items = (
        client.CoreV1Api(api)
        .list_namespaced_event(ns, field_selector="involvedObject.name=drifty")
        .items
    )
    return [e for e in items if reason is None or e.reason == reason]


def query_errors(ns):
    from modelops_operator import metrics

    value = metrics.REGISTRY.get_sample_value(
        "modelops_prometheus_query_errors_total",
        {"namespace": ns, "name": "drifty", "kind": "ModelAdaptation"},
    )
    return value or 0.0


def now_utc():
    return datetime.now(UTC)


def started_runs(api, ns):
    return drift_status(api, ns).get("runCount", 0)


def run_started(api, ns, run):
    status = drift_status(api, ns)
    return status if status.get("runCount", 0) >= run else None


@pytest.mark.timeout(240)
def test_fire_disarm_rearm_fire_again_respects_for_and_the_interval(
    kube_api, namespace, operator, wait_for, drift_exporter, prometheus_factory
):
    """Observed: after a re-arm a run started 2.4 s after the value went above fire, with
    `for: 10s` (a stale pendingSince); and `interval: 1s` evaluated every ~2 s."""
    gauge, target = drift_exporter
    prom = prometheus_factory({"drift": [target]})
    wait_for(
        "scraped", lambda: True if prom.query("model_input_drift_score")["data"]["result"] else None
    )
    hold = 5  # `for`: long enough that a run 2.4 s after the rise would show
    drift = drift_spec(prom.url, **{"for": f"{hold}s", "cooldown": "2s"})
    create_drifty(kube_api, namespace, drift)
    first = wait_for("evaluated", lambda: evaluated_after(kube_api, namespace, "", lastValue=0.1))

    # The interval is honoured: ~1 evaluation per second (not one every 2 s).
    seen = {first["drift"]["lastEvaluationTime"]}
    deadline = now_utc() + timedelta(seconds=6)
    while now_utc() < deadline:
        seen.add(drift_status(kube_api, namespace)["drift"]["lastEvaluationTime"])
        time.sleep(0.1)
    assert len(seen) >= 5, f"{len(seen)} evaluations in 6 s with interval 1s"

    core = client.CoreV1Api(kube_api)
    for run in (1, 2):
        high = now_utc()
        gauge.set(0.9)
        status = wait_for(f"run {run}", lambda r=run: run_started(kube_api, namespace, r), 60)
        assert status["runCount"] == run, "exactly one run per firing"
        fired = ts(status["drift"]["lastTriggerTime"])
        assert (fired - high).total_seconds() >= hold, f"run {run} started before `for` elapsed"
        started = [e.message for e in events(kube_api, namespace, "RunStarted")]
        held = [float(m.split(" for ")[1].split("s ")[0]) for m in started]
        assert len(held) == run and min(held) >= hold, started
        assert status["drift"]["armed"] is False and "pendingSince" not in status["drift"]
        wait_for("run pod", lambda: core.list_namespaced_pod(namespace).items or None)
        finish_open_pods(core, namespace)
        wait_for("run done", lambda: phase_is(kube_api, namespace, "Succeeded"))
        gauge.set(0.1)
        rearmed = wait_for(
            "re-armed",
            lambda: evaluated_after(kube_api, namespace, "", armed=True, lastValue=0.1),
            timeout=30,
        )
        assert "pendingSince" not in rearmed["drift"]


@pytest.mark.timeout(240)
def test_an_outage_in_a_pending_window_starts_nothing_after_recovery(
    kube_api, namespace, operator, wait_for, drift_exporter, prometheus_factory
):
    """Observed: Prometheus stopped in a `for` window and came back; the first query
    after it started a run with 0 s of 30 s elapsed, and pendingSince, lastError and
    DriftDetected=Pending stayed in status. Also (issue 12): an unreachable Prometheus
    showed Ready=True Idle."""
    gauge, target = drift_exporter
    gauge.set(0.9)
    prom = prometheus_factory({"drift": [target]})
    wait_for(
        "scraped 0.9",
        lambda: (
            True
            if [
                r
                for r in prom.query("model_input_drift_score")["data"]["result"]
                if r["value"][1] == "0.9"
            ]
            else None
        ),
    )
    create_drifty(kube_api, namespace, drift_spec(prom.url, **{"for": "20s", "cooldown": "1h"}))
    wait_for("pending", lambda: status_with(kube_api, namespace, "DriftDetected", reason="Pending"))

    prom.stop_process()
    down_at = now_utc()
    down = wait_for(
        "unreachable",
        lambda: status_with(kube_api, namespace, "PrometheusReachable", status="False"),
        timeout=30,
    )
    assert "pendingSince" not in down["drift"] and down["drift"]["lastErrorReason"]
    ready = condition({"status": down}, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "DriftEvaluationFailing"
    assert events(kube_api, namespace, "PrometheusUnreachable"), "a Warning Event"
    assert query_errors(namespace) >= 1
    wait_for(  # the outage lasts a few evaluations (backoff 2 s, 4 s, ...)
        "two failed evaluations",
        lambda: (
            True
            if drift_status(kube_api, namespace)["drift"].get("consecutiveErrors", 0) >= 2
            else None
        ),
        timeout=30,
    )

    prom.start()
    up = wait_for(
        "reachable again",
        lambda: status_with(kube_api, namespace, "PrometheusReachable", status="True"),
        timeout=60,
    )
    assert started_runs(kube_api, namespace) == 0 and jobs(kube_api, namespace) == []
    drift = up["drift"]
    assert "lastError" not in drift and "lastErrorReason" not in drift
    assert drift["consecutiveErrors"] == 0
    assert condition({"status": up}, "DriftDetected")["reason"] == "Pending"
    assert ts(drift["pendingSince"]) > down_at, "the window restarted after the outage"
    assert condition({"status": up}, "Ready")["status"] == "True"


@pytest.mark.timeout(240)
def test_flapping_for_half_a_minute_gives_at_most_one_run_per_cooldown(
    kube_api, namespace, operator, wait_for, drift_exporter, prometheus_factory
):
    gauge, target = drift_exporter
    prom = prometheus_factory({"drift": [target]})
    wait_for(
        "scraped", lambda: True if prom.query("model_input_drift_score")["data"]["result"] else None
    )
    cooldown, flapping = 8, 30  # four cooldowns of flapping
    create_drifty(
        kube_api, namespace, drift_spec(prom.url, **{"for": "2s", "cooldown": f"{cooldown}s"})
    )
    wait_for("evaluated", lambda: evaluated_after(kube_api, namespace, ""))
    core = client.CoreV1Api(kube_api)
    # Every 7 s a 4 s burst above fire (more than `for`: a run is due each time, more
    # often than the cooldown allows), then 3 s of random flapping across both
    # thresholds. (A purely random sequence once held no 2 s above fire in 30 s.)
    rng = random.Random(11)
    flaps = [0.9, 0.9, 0.55, 0.4, 0.31, 0.29, 0.1]
    values = [0.9 if i % 7 < 4 else rng.choice(flaps) for i in range(flapping)]
    for value in values:
        gauge.set(value)
        finish_open_pods(core, namespace)
        time.sleep(1)  # the signal's pace, one value a second (not a wait for a state)
    runs = drift_status(kube_api, namespace).get("runs", [])
    starts = sorted(ts(r["startTime"]) for r in runs)
    assert 2 <= len(starts) <= flapping // cooldown + 1, starts
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(g >= cooldown - 1 for g in gaps), gaps  # startTime is cut to the second
    held = [
        float(e.message.split(" for ")[1].split("s ")[0])
        for e in events(kube_api, namespace, "RunStarted")
    ]
    assert held and min(held) >= 2, held


@pytest.mark.timeout(180)
def test_a_non_finite_value_is_reported_and_evaluation_continues(
    kube_api, namespace, operator, wait_for, drift_exporter, prometheus_factory
):
    """Observed: +Inf made the status patch invalid JSON and stopped evaluation for an
    hour, with no condition, no Event and no metric."""
    gauge, target = drift_exporter
    gauge.set(float("inf"))
    prom = prometheus_factory({"drift": [target]})
    wait_for(
        "scraped +Inf",
        lambda: (
            True
            if [
                r
                for r in prom.query("model_input_drift_score")["data"]["result"]
                if r["value"][1] == "+Inf"
            ]
            else None
        ),
    )
    create_drifty(kube_api, namespace, drift_spec(prom.url, **{"for": "1s"}))
    bad = wait_for(
        "NonFiniteValue",
        lambda: status_with(kube_api, namespace, "PrometheusReachable", reason="NonFiniteValue"),
    )
    assert bad["drift"]["lastValueText"] == "+Inf" and "lastValue" not in bad["drift"]
    assert events(kube_api, namespace, "NonFiniteValue") and query_errors(namespace) >= 1
    gauge.set(0.1)
    wait_for(
        "evaluation continues",
        lambda: evaluated_after(
            kube_api, namespace, bad["drift"]["lastEvaluationTime"], lastValue=0.1
        ),
        timeout=60,
    )
    assert jobs(kube_api, namespace) == []


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A test HTTP server: records each request's headers, answers what it is told."""

    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")
    seen: list[dict[str, str]]

    def do_GET(self):
        self.seen.append(dict(self.headers))
        status, headers, body = self.answer
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """Start test HTTP servers on 127.0.0.1: make(status, headers, body) -> (url, seen)."""
    servers = []

    def make(status=200, headers=None, body=b""):
        seen: list[dict[str, str]] = []
        handler = type("H", (_Recorder,), {"answer": (status, headers or {}, body), "seen": seen})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


TOKEN = "e2e-bearer-5b0d3c7a9f"
CREDENTIALS_DOC = json.dumps(
    {"Code": "Success", "AccessKeyId": "ASIAE2ELEAKCHECK", "SecretAccessKey": "wJalrE2Esecret"}
).encode()


def test_a_redirect_is_refused_and_carries_no_credential(http_server):
    """Observed: a redirect forwarded the Authorization header to another host."""
    other, other_seen = http_server(200, {"Content-Type": "application/json"}, b"{}")
    first, first_seen = http_server(302, {"Location": f"{other}/api/v1/query?query=up"})
    outcome = query_value(first, "up", now_utc(), 2.0, Credentials(bearer_token=TOKEN))
    assert outcome.error_reason == "QueryFailed" and "302" in outcome.error
    assert first_seen and first_seen[0].get("Authorization") == f"Bearer {TOKEN}"
    assert not any("Authorization" in h for h in other_seen), "credential sent to another host"
    assert other_seen == [], "the redirect was not followed at all"


def test_a_non_prometheus_body_never_reaches_status(http_server):
    """Observed: a cloud metadata credentials document was copied into status.drift.lastError."""
    url, _ = http_server(200, {"Content-Type": "application/json"}, CREDENTIALS_DOC)
    outcome = query_value(url, "up", now_utc(), 2.0)
    assert outcome.error_reason == "QueryFailed"
    assert "wJalrE2Esecret" not in outcome.error and "ASIAE2E" not in outcome.error


@pytest.mark.timeout(180)
def test_a_non_prometheus_endpoint_is_a_condition_event_metric_and_evaluation_continues(
    kube_api, namespace, operator, wait_for, http_server
):
    url, seen = http_server(200, {"Content-Type": "application/json"}, CREDENTIALS_DOC)
    create_drifty(kube_api, namespace, drift_spec(url, **{"for": "1s"}))
    bad = wait_for(
        "QueryFailed",
        lambda: status_with(kube_api, namespace, "PrometheusReachable", reason="QueryFailed"),
    )
    stamp = bad["drift"]["lastEvaluationTime"]
    for _ in range(2):  # the next evaluations come, backing off (2 s, 4 s)
        stamp = wait_for(
            "another evaluation",
            lambda s=stamp: evaluated_after(kube_api, namespace, s),
            timeout=30,
        )["drift"]["lastEvaluationTime"]
    status = drift_status(kube_api, namespace)
    assert status["drift"]["consecutiveErrors"] >= 3
    text = json.dumps(status) + json.dumps([e.message for e in events(kube_api, namespace)])
    assert "wJalrE2Esecret" not in text and "ASIAE2E" not in text
    assert events(kube_api, namespace, "QueryFailed") and query_errors(namespace) >= 3
    assert len(seen) >= 3
