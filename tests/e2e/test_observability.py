"""The dashboards and alerts, checked against the real thing.

- `promtool check rules` and `promtool test rules` pass on the chart's rule file and
  its unit tests, and every alert has a severity, a summary, a description and a
  runbook anchor that exists in docs/operations.md.
- The committed dashboards are what `dashboards/build.py` generates, every panel uses
  the `${datasource}` variable and sets a unit; every metric a query names is one the
  operator or a Job pod exposes, and docs/operations.md documents every metric.
- A real Prometheus (Debian's binary, started by the test, scraping every second,
  loaded with the rule file) scrapes the real operator's /metrics while the operator,
  in-process against the local control plane, acts on four resources, and a training
  job's metrics endpoint. Every PromQL expression of the dashboards (panels and
  template variables) and of the rule file then runs through /api/v1/query: each
  parses, the core panels listed in CORE_PANELS return data (a few with exact values),
  every rule evaluates without error, and a deleted resource's series disappear.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import free_port
from tests.integration.kube_helpers import create, get, prune

from modelops_devcluster.pod_runner import finish_pod
from modelops_jobs.reporting import ProgressEvent
from modelops_jobs.training_metrics import TrainingMetrics, serve_training_metrics
from modelops_operator import metrics
from modelops_operator.build.names import job_name

RULES = REPO_ROOT / "charts/modelops/files/rules/modelops-alerts.yaml"
RULE_TESTS = sorted((RULES.parent / "tests").glob("*.yaml"))
DASHBOARDS = REPO_ROOT / "charts/modelops/files/dashboards"
BUILD = REPO_ROOT / "dashboards/build.py"
OPERATIONS = REPO_ROOT / "docs/operations.md"
ALERTS = {
    "ModelopsOperatorDown": "critical",
    "ModelopsReconcileErrors": "warning",
    "ModelopsJobsFailing": "warning",
    "ModelopsDriftPendingWithoutRun": "warning",
    "ModelopsPrometheusUnreachable": "warning",
    "ModelopsS3TModelNotServing": "critical",
    "ModelopsS3TShardsOutOfService": "warning",
    "ModelopsRolloutRolledBack": "warning",
    "ModelopsDeletionNotEffective": "critical",
}
OPERATOR_JOB, JOBS_JOB = "modelops-operator", "modelops-jobs"

CORE_PANELS = {
    "operator-overview.json": [
        "Operator replicas up",
        "Reconciles / s",
        "Reconcile error ratio",
        "Active runs",
        "Resources tracked",
        "Reconciles per second by kind",
        "Reconcile duration",
        "Active runs by kind",
        "Runs finished per hour",
        "Run duration",
        "Resources by phase",
        "Resources",
    ],
    "drift-adaptations.json": [
        "Drift value and thresholds",
        "Time past the fire threshold",
        "Drift triggers",
        "Runs started per hour",
        "Runs started since the operator started",
        "Active adaptation runs",
        "Adaptation phases",
    ],
    "training-jobs.json": [
        "Progress",
        "Time left",
        "Training loss",
        "Throughput",
        "Steps",
        "Running jobs",
    ],
    "unlearning.json": [
        "Samples forgotten",
        "Active unlearning runs",
        "Requests by phase",
        "Samples forgotten per request",
        "Unlearn requests",
        "Unlearning runs finished per hour",
    ],
}
"""Panels whose every query must return at least one series with a finite value once
the scenario below has run (the others must parse)."""

KINDS_SELECTED = "(ModelAdaptation|PruneRetrain|UnlearnRequest)"
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


# -- static checks --------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (make system-deps installs Debian's prometheus)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rule_file():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass_and_cover_every_alert():
    assert RULE_TESTS, "no rule unit tests"
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    tested.add(check["alertname"])
    assert tested == set(ALERTS), "every alert has a unit test in which it fires"


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_has_labels_annotations_and_a_runbook():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert set(alerts) == set(ALERTS)
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] == ALERTS[name], name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page.endswith("docs/operations.md") and anchor == name.lower(), name
        assert anchor in anchors, f"docs/operations.md has no heading for #{anchor}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_dashboards_are_generated_and_consistent():
    result = subprocess.run(
        [sys.executable, str(BUILD), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    boards = load_dashboards()
    assert set(boards) == set(CORE_PANELS)
    for file, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert "namespace" in variables, file
        titles = []
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            titles.append(panel["title"])
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
            assert panel["fieldConfig"]["defaults"]["unit"], f"{file}: {panel['title']} has no unit"
            assert panel["description"], panel["title"]
        assert len(titles) == len(set(titles)), f"{file}: panel titles are unique"
        assert set(CORE_PANELS[file]) <= set(titles), file


def declared_series() -> dict[str, str]:
    """Every series name the operator and a Job pod can expose -> the metric's name as
    docs/operations.md lists it (counters with `_total`, histograms without suffix)."""
    job_registry = CollectorRegistry()
    TrainingMetrics({}, job_registry)
    out = {}
    for registry in (metrics.REGISTRY, job_registry):
        for family in registry.collect():
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
            }.get(family.type, [""])
            documented = family.name + ("_total" if family.type == "counter" else "")
            for suffix in suffixes:
                out[family.name + suffix] = documented
    return out


def test_every_metric_queried_exists_and_every_metric_is_documented():
    series = declared_series()
    exprs = [e for _, e in rule_queries()]
    for board in load_dashboards().values():
        exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
        exprs += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"(?<![\w:])modelops_\w+", e)}
    assert used - set(series) == set(), "queries name metrics nobody exposes"
    documented = set(re.findall(r"^\| `(modelops_\w+)` \|", OPERATIONS.read_text(), re.M))
    assert set(series.values()) == documented, "docs/operations.md lists every metric"


# -- PromQL from the dashboards and the rules ---------------------------------------------------


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana variables ($name, ${name}) the way Grafana would."""
    every = {**GRAFANA_BUILTINS, **values}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in every:
            raise AssertionError(f"no test value for ${name} in {expr}")
        return every[name]

    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)
    assert "$" not in out, out
    return out


def dashboard_queries(
    values: dict[str, dict[str, str]],
) -> list[tuple[str, str, str]]:
    """(file, panel title or variable, PromQL) for every target and variable query."""
    out = []
    for file, board in load_dashboards().items():
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
            assert found, variable["definition"]
            out.append((file, f"${variable['name']}", substitute(found.group(1), values[file])))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((file, panel["title"], substitute(target["expr"], values[file])))
    return out


def rule_queries() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("alert") or r["record"], r["expr"]) for g in groups for r in g["rules"]]


def prom_query(url: str, expr: str) -> dict[str, Any]:
    """/api/v1/query; a 4xx answer (bad expression) is returned, not raised."""
    full = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(full, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}") or {"status": "error", "error": str(exc)}


def prom_get(url: str, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def finite_series(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The series of an instant-query answer that have a finite value."""
    if answer.get("status") != "success":
        return []
    data = answer["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return [s for s in data["result"] if math.isfinite(float(s["value"][1]))]


def values_by(answer: dict[str, Any], label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in finite_series(answer)}


# -- the scenario -------------------------------------------------------------------------------


@pytest.fixture
def operator_metrics() -> Iterator[str]:
    """The operator's registry on a loopback port, as `modelops operator` serves it."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class JobEndpoint:
    """A training job's metrics endpoint on a port chosen up front (Prometheus is told
    about it before the job exists, as a PodMonitor would be)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sink: Any = None

    def start(self, document: dict[str, Any]) -> Any:
        self.sink = serve_training_metrics(self.port, document, addr="127.0.0.1")
        return self.sink


@pytest.fixture
def job_endpoint() -> Iterator[JobEndpoint]:
    endpoint = JobEndpoint()
    try:
        yield endpoint
    finally:
        if endpoint.sink is not None:
            endpoint.sink.close()


def pending_pod(api: client.ApiClient, namespace: str, job: str) -> Any:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    )
    return next((p for p in pods.items if p.status.phase == "Pending"), None)


def phase_is(api: client.ApiClient, namespace: str, kind: str, name: str, phase: str) -> Any:
    obj = get(api, namespace, kind, name)
    return obj if obj.get("status", {}).get("phase") == phase else None


def result(ok: bool = True, reason: str = "Succeeded", **results: Any) -> str:
    body: dict[str, Any] = {"ok": ok, "reason": reason, "message": reason, "results": results}
    if ok:
        body["artifact"] = {"uri": "pvc://models/out", "manifestDigest": "sha256:abc"}
    return json.dumps(body)


def finished_prune_runs() -> float:
    """PruneRetrain runs in the operator's run-duration histogram (this process)."""
    value = metrics.REGISTRY.get_sample_value(
        "modelops_run_duration_seconds_count", {"kind": "PruneRetrain"}
    )
    return value or 0.0


def scraped(prom_url: str, expr: str, at_least: float) -> bool | None:
    """True once Prometheus holds a value of at least `at_least` for `expr`."""
    got = values_by(prom_query(prom_url, expr), "").values()
    return True if any(v >= at_least for v in got) else None


@pytest.mark.timeout(240)
def test_every_dashboard_and_rule_query_runs_against_a_real_prometheus(
    kube_api, namespace, operator, wait_for, prometheus_factory, operator_metrics, job_endpoint
):
    started = time.monotonic()
    prom = prometheus_factory(
        {
            OPERATOR_JOB: [operator_metrics],
            JOBS_JOB: [f"127.0.0.1:{job_endpoint.port}"],
        },
        rule_files=[RULES],
    )
    core = client.CoreV1Api(kube_api)

    # Four resources: two PruneRetrains (one succeeds, one fails), an UnlearnRequest
    # that forgets two samples, and a drift-triggered ModelAdaptation whose query is
    # past its fire threshold, so it starts run 1 at once.
    for name in ("p-ok", "p-fail"):
        create(kube_api, namespace, prune(name))
    create(
        kube_api,
        namespace,
        {
            "kind": "UnlearnRequest",
            "metadata": {"name": "forget"},
            "spec": {"model": {"uri": "pvc://models/s3t"}, "sampleIds": ["s-1", "s-2"]},
        },
    )
    drift = {
        "prometheusUrl": prom.url,
        "query": "vector(0.8)",
        "fireThreshold": 0.5,
        "clearThreshold": 0.2,
        "for": "1s",
        "interval": "1s",
        "cooldown": "1h",
    }
    create(
        kube_api,
        namespace,
        {
            "kind": "ModelAdaptation",
            "metadata": {"name": "drifty"},
            "spec": {
                "model": {"uri": "pvc://models/base"},
                "data": {"uri": "pvc://data/new"},
                "output": {"uri": "pvc://models/versions"},
                "trigger": {"type": "drift", "drift": drift},
            },
        },
    )

    # Finish two runs, let Prometheus scrape that, then fail the third, so the run
    # counters and the duration histogram grow between two scrapes.
    ok_pod = wait_for("p-ok pod", lambda: pending_pod(kube_api, namespace, "p-ok-prune"))
    unlearn_job = job_name("UnlearnRequest", "forget")
    forget_pod = wait_for("forget pod", lambda: pending_pod(kube_api, namespace, unlearn_job))
    before = finished_prune_runs()
    finish_pod(core, ok_pod, 0, result(sparsity=0.5))
    finish_pod(core, forget_pod, 0, result(deletedSamples=2, unknownIds=0))
    wait_for(
        "p-ok Succeeded", lambda: phase_is(kube_api, namespace, "PruneRetrain", "p-ok", "Succeeded")
    )
    wait_for(
        "forget Succeeded",
        lambda: phase_is(kube_api, namespace, "UnlearnRequest", "forget", "Succeeded"),
    )
    # The status patch is visible a moment before the operator records the metrics.
    wait_for("the run's duration recorded", lambda: finished_prune_runs() > before or None)
    count = finished_prune_runs()
    wait_for(
        "Prometheus scraped the finished run",
        lambda: scraped(
            prom.url, 'modelops_run_duration_seconds_count{kind="PruneRetrain"}', count
        ),
    )
    fail_pod = wait_for("p-fail pod", lambda: pending_pod(kube_api, namespace, "p-fail-prune"))
    finish_pod(core, fail_pod, 3, result(False, "NotACausalLM"))
    wait_for(
        "p-fail Failed", lambda: phase_is(kube_api, namespace, "PruneRetrain", "p-fail", "Failed")
    )

    # The drift run's Job exists: its pod's training metrics come up (emulated: the
    # job's own gauges, fed one step report, labelled from the Job's spec document).
    run_job = job_name("ModelAdaptation", "drifty", 1)
    configmap = wait_for(
        "run 1 ConfigMap",
        lambda: next(
            (
                c
                for c in core.list_namespaced_config_map(namespace).items
                if c.metadata.name == run_job
            ),
            None,
        ),
    )
    document = json.loads(configmap.data["spec.json"])
    sink = job_endpoint.start(document)
    sink(
        ProgressEvent(
            phase="train", step=30, total=120, loss=2.5, tokens_per_second=4096.0, eta_seconds=90.0
        )
    )

    def targets_up() -> bool | None:
        active = prom_get(prom.url, "/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in active}
        return True if health == {OPERATOR_JOB: "up", JOBS_JOB: "up"} else None

    wait_for("both targets up", targets_up)

    # Every expression, with the variables set to what the scenario created.
    values = {
        "operator-overview.json": {"namespace": namespace, "kind": KINDS_SELECTED},
        "drift-adaptations.json": {"namespace": namespace, "name": "drifty"},
        "training-jobs.json": {"namespace": namespace, "kind": "ModelAdaptation", "name": "drifty"},
        "unlearning.json": {"namespace": namespace, "name": "forget"},
    }
    queries = dashboard_queries(values)
    core_queries = [
        (file, title, expr)
        for file, title, expr in queries
        if title in CORE_PANELS[file] or title.startswith("$")
    ]
    assert {(f, t) for f, t, _ in core_queries} >= {
        (f, t) for f, titles in CORE_PANELS.items() for t in titles
    }

    missing: list[str] = []

    def core_has_data() -> bool | None:
        missing[:] = [
            f"{file} / {title}: {expr}"
            for file, title, expr in core_queries
            if not finite_series(prom_query(prom.url, expr))
        ]
        return None if missing else True

    deadline = time.monotonic() + 60
    while not core_has_data() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not missing, "core panels without data:\n" + "\n".join(missing)

    errors = []
    for file, title, expr in queries:
        answer = prom_query(prom.url, expr)
        if answer.get("status") != "success":
            errors.append(f"{file} / {title}: {expr}: {answer.get('error')}")
    for name, expr in rule_queries():
        answer = prom_query(prom.url, expr)
        if answer.get("status") != "success":
            errors.append(f"rule {name}: {expr}: {answer.get('error')}")
    assert not errors, "expressions Prometheus rejected:\n" + "\n".join(errors)

    # A few exact values, so "data" means the right data (polled: the last scrape may
    # be a second behind the API server).
    by_title: dict[tuple[str, str], str] = {}
    for file, title, expr in queries:
        by_title.setdefault((file, title), expr)
    expected = [
        (
            "operator-overview.json",
            "Resources by phase",
            "phase",
            {"Succeeded": 2, "Failed": 1, "Pending": 1},
        ),
        ("drift-adaptations.json", "Drift value and thresholds", "name", {"drifty": 0.8}),
        ("unlearning.json", "Samples forgotten per request", "name", {"forget": 2}),
        ("training-jobs.json", "Progress", "name", {"drifty": 0.25}),
        ("training-jobs.json", "Throughput", "name", {"drifty": 4096}),
    ]
    for file, title, label, want in expected:
        expr = by_title[file, title]  # the panel's first query
        deadline = time.monotonic() + 15
        while True:
            got = values_by(prom_query(prom.url, expr), label)
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == want, f"{file} / {title}: {expr}"

    # Every rule, loaded into this Prometheus, evaluates without error.
    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = prom_get(prom.url, "/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        done = all(not r.get("lastEvaluation", "").startswith("0001") for r in rules)
        return rules if rules and done else None

    rules = wait_for("every rule evaluated", rules_evaluated)
    assert len(rules) == len(rule_queries())
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    recorded = prom_query(prom.url, "kind:modelops_reconciles:rate5m")
    assert finite_series(recorded), "the recording rules produce series"

    # Series of a deleted resource are removed from the operator's /metrics.
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        "modelops.dev", "v1alpha1", namespace, "unlearnrequests", "forget"
    )
    needle = f'namespace="{namespace}",name="forget"'
    wait_for(
        "forget's series removed",
        lambda: True if needle not in generate_latest(metrics.REGISTRY).decode() else None,
    )
    assert time.monotonic() - started < 120, "the scenario stays under two minutes"
