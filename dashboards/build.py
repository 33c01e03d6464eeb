"""The modelops Grafana dashboards, kept as code.

    python dashboards/build.py           # write charts/modelops/files/dashboards/*.json
    python dashboards/build.py --check   # exit 1 when a committed file differs

Plain Python that writes Grafana's dashboard JSON (schema version 39, Grafana 10.x and
11.x), with no SDK: a handful of small panel builders below, then one function per
dashboard. Every panel queries the `${datasource}` template variable, so the same JSON
works with any Prometheus data source; per-resource panels filter by the `$namespace`
and `$name` variables (multi-value, regex-matched). Every panel sets its unit.

The PromQL here is run against a real Prometheus scraping the real operator by
tests/e2e/test_observability.py, which also lists the panels that must return data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "charts" / "modelops" / "files" / "dashboards"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
OPERATOR_JOB = 'job="modelops-operator"'
"""The operator's scrape job, as the chart's ServiceMonitor labels it (see the rules)."""

Panel = dict[str, Any]

# -- queries and template variables ----------------------------------------------------


def query(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Panel:
    """One PromQL target. `table` asks for an instant query in table format."""
    target: Panel = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not (instant or table),
        "instant": instant or table,
    }
    if table:
        target["format"] = "table"
    return target


def datasource_variable() -> Panel:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def label_variable(name: str, label: str, metric_selector: str, title: str) -> Panel:
    """A multi-value variable listing the values of `label` on `metric_selector`."""
    definition = f"label_values({metric_selector}, {label})"
    return {
        "name": name,
        "label": title,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": definition,
        "query": definition,
        "current": {},
        "hide": 0,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


# -- panels ------------------------------------------------------------------------------


def _field_config(
    unit: str,
    *,
    decimals: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    custom: Panel | None = None,
) -> Panel:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    defaults: Panel = {
        "unit": unit,
        "color": {"mode": "thresholds" if thresholds else "palette-classic"},
        "thresholds": {"mode": "absolute", "steps": steps},
        "mappings": [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if custom is not None:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": []}


def _panel(
    kind: str, title: str, description: str, targets: list[Panel], size: tuple[int, int]
) -> Panel:
    for ref, target in zip("ABCDEFGH", targets, strict=False):
        target["refId"] = ref
    width, height = size
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "gridPos": {"w": width, "h": height},
    }


def timeseries(
    title: str,
    description: str,
    targets: list[Panel],
    unit: str,
    *,
    size: tuple[int, int] = (12, 8),
    minimum: float | None = 0,
    maximum: float | None = None,
    stack: bool = False,
    bars: bool = False,
) -> Panel:
    panel = _panel("timeseries", title, description, targets, size)
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 30 if (stack or bars) else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    panel["fieldConfig"] = _field_config(unit, minimum=minimum, maximum=maximum, custom=custom)
    panel["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(
    title: str,
    description: str,
    target: Panel,
    unit: str,
    *,
    thresholds: list[tuple[float | None, str]] | None = None,
    decimals: int | None = None,
    size: tuple[int, int] = (4, 4),
) -> Panel:
    panel = _panel("stat", title, description, [target], size)
    panel["fieldConfig"] = _field_config(unit, decimals=decimals, thresholds=thresholds)
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value" if thresholds else "none",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    }
    return panel


def bargauge(
    title: str,
    description: str,
    target: Panel,
    unit: str,
    *,
    minimum: float | None = 0,
    maximum: float | None = None,
    size: tuple[int, int] = (12, 8),
) -> Panel:
    panel = _panel("bargauge", title, description, [target], size)
    panel["fieldConfig"] = _field_config(unit, minimum=minimum, maximum=maximum)
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "displayMode": "gradient",
        "orientation": "horizontal",
        "showUnfilled": True,
    }
    return panel


def table(
    title: str,
    description: str,
    targets: list[Panel],
    *,
    columns: dict[str, str],
    units: dict[str, str] | None = None,
    size: tuple[int, int] = (24, 8),
) -> Panel:
    """An instant table. `columns` maps the fields to keep to their display names (in
    order); with several targets, their rows are merged on the shared labels and each
    target's value column is `Value #<refId>`."""
    panel = _panel("table", title, description, targets, size)
    panel["fieldConfig"] = _field_config("none")
    panel["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": field}, "properties": [{"id": "unit", "value": u}]}
        for field, u in (units or {}).items()
    ]
    transformations: list[Panel] = []
    if len(targets) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append(
        {
            "id": "filterFieldsByName",
            "options": {"include": {"names": list(columns)}},
        }
    )
    transformations.append(
        {
            "id": "organize",
            "options": {
                "excludeByName": {},
                "indexByName": {field: i for i, field in enumerate(columns)},
                "renameByName": columns,
            },
        }
    )
    panel["transformations"] = transformations
    panel["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel


def row(title: str) -> Panel:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"w": 24, "h": 1},
    }


# -- the dashboard --------------------------------------------------------------------------


def _layout(panels: list[Panel]) -> list[Panel]:
    """Give each panel an id and a grid position: left to right, wrapping at 24 columns."""
    x = y = line_height = 0
    for number, panel in enumerate(panels, start=1):
        grid = panel["gridPos"]
        if panel["type"] == "row" or x + grid["w"] > 24:
            x, y, line_height = 0, y + line_height, 0
        panel["id"] = number
        panel["gridPos"] = {"h": grid["h"], "w": grid["w"], "x": x, "y": y}
        x += grid["w"]
        line_height = max(line_height, grid["h"])
        if panel["type"] == "row":
            x, y, line_height = 0, y + grid["h"], 0
    return panels


def dashboard(uid: str, title: str, description: str, variables: list[Panel], panels: list[Panel]):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["modelops"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [
            {
                "title": "modelops",
                "type": "dashboards",
                "tags": ["modelops"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": _layout(panels),
    }


# -- operator overview ------------------------------------------------------------------------

RATE = "$__rate_interval"


def operator_overview() -> Panel:
    kind = 'kind=~"$kind"'
    res = 'namespace=~"$namespace", kind=~"$kind"'

    def quantile(q: str, metric: str, window: str, selector: str) -> str:
        return f"histogram_quantile({q}, sum by (le, kind) (rate({metric}_bucket{{{selector}}}[{window}])))"

    panels = [
        row("Health"),
        stat(
            "Operator replicas up",
            "Operator targets Prometheus scrapes successfully (job modelops-operator). "
            "0 means nothing reconciles: see the ModelopsOperatorDown runbook.",
            query(f"sum(up{{{OPERATOR_JOB}}})"),
            "none",
            thresholds=[(None, "red"), (1, "green")],
            decimals=0,
        ),
        stat(
            "Reconciles / s",
            "Reconciliations per second, all selected kinds.",
            query(f"sum(rate(modelops_reconciles_total{{{kind}}}[{RATE}]))"),
            "ops",
        ),
        stat(
            "Reconcile error ratio",
            "Share of reconciliations that raised. Above 5% for 15 minutes: ModelopsReconcileErrors.",
            query(
                f"(sum(rate(modelops_reconcile_errors_total{{{kind}}}[{RATE}])) or vector(0))"
                f" / sum(rate(modelops_reconciles_total{{{kind}}}[{RATE}]))"
            ),
            "percentunit",
            thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
        ),
        stat(
            "Active runs",
            "Runs (Jobs) pending or running, all selected kinds.",
            query(f"sum(modelops_active_runs{{{kind}}})"),
            "none",
            decimals=0,
        ),
        stat(
            "Runs failed (24h)",
            "Runs that ended Failed in the last 24 hours (as seen by the running operator).",
            query(
                f'sum(increase(modelops_runs_finished_total{{{kind}, phase="Failed"}}[24h])) or vector(0)'
            ),
            "none",
            thresholds=[(None, "green"), (1, "orange")],
            decimals=0,
        ),
        stat(
            "Resources tracked",
            "modelops resources the operator tracks in the selected namespaces.",
            query(f"count(modelops_resource_phase_info{{{res}}} == 1)"),
            "none",
            decimals=0,
        ),
        row("Reconciliation"),
        timeseries(
            "Reconciles per second by kind",
            "Every watch event, resync and drift evaluation runs one reconciliation.",
            [
                query(
                    f"sum by (kind) (rate(modelops_reconciles_total{{{kind}}}[{RATE}]))", "{{kind}}"
                )
            ],
            "ops",
            size=(8, 8),
        ),
        timeseries(
            "Reconcile errors per second by kind",
            "Reconciliations that raised (API errors, conflicts, bugs); the operator retries "
            "after 5 seconds. See the operator's log for the traceback.",
            [
                query(
                    f"sum by (kind) (rate(modelops_reconcile_errors_total{{{kind}}}[{RATE}]))",
                    "{{kind}}",
                )
            ],
            "ops",
            size=(8, 8),
        ),
        timeseries(
            "Reconcile duration",
            "Time to observe, plan and apply one reconciliation (p50, p95, p99 by kind).",
            [
                query(
                    quantile("0.5", "modelops_reconcile_duration_seconds", RATE, kind),
                    "p50 {{kind}}",
                ),
                query(
                    quantile("0.95", "modelops_reconcile_duration_seconds", RATE, kind),
                    "p95 {{kind}}",
                ),
                query(
                    quantile("0.99", "modelops_reconcile_duration_seconds", RATE, kind),
                    "p99 {{kind}}",
                ),
            ],
            "s",
            size=(8, 8),
        ),
        row("Runs"),
        timeseries(
            "Active runs by kind",
            "Runs (Jobs) pending or running.",
            [query(f"sum by (kind) (modelops_active_runs{{{kind}}})", "{{kind}}")],
            "none",
            size=(8, 8),
            stack=True,
        ),
        timeseries(
            "Runs finished per hour",
            "Runs that reached Succeeded or Failed in the preceding hour, by kind and phase.",
            [
                query(
                    f"sum by (kind, phase) (increase(modelops_runs_finished_total{{{kind}}}[1h]))",
                    "{{kind}} {{phase}}",
                )
            ],
            "none",
            size=(8, 8),
        ),
        timeseries(
            "Run duration",
            "Wall time from Job start to completion of the runs finished in the preceding "
            "6 hours (p50 and p90 by kind, from the histogram buckets).",
            [
                query(quantile("0.5", "modelops_run_duration_seconds", "6h", kind), "p50 {{kind}}"),
                query(quantile("0.9", "modelops_run_duration_seconds", "6h", kind), "p90 {{kind}}"),
            ],
            "s",
            size=(8, 8),
        ),
        row("Resources"),
        bargauge(
            "Resources by phase",
            "How many resources are in each phase (Idle: a ModelAdaptation waiting for its "
            "next trigger).",
            query(
                f"sum by (phase) (modelops_resource_phase_info{{{res}}} == 1)",
                "{{phase}}",
                instant=True,
            ),
            "none",
            size=(8, 8),
        ),
        table(
            "Resources",
            "Every tracked resource and its phase. `kubectl describe <kind> <name> -n <namespace>` "
            "shows its conditions and events.",
            [query(f"modelops_resource_phase_info{{{res}}} == 1", table=True)],
            columns={"namespace": "Namespace", "kind": "Kind", "name": "Name", "phase": "Phase"},
            size=(16, 8),
        ),
        *releases_row(),
    ]
    variables = [
        label_variable("namespace", "namespace", "modelops_resource_phase_info", "Namespace"),
        label_variable("kind", "kind", "modelops_reconciles_total", "Kind"),
    ]
    return dashboard(
        "modelops-operator-overview",
        "modelops / Operator overview",
        "Health of the modelops operator: reconciliations, errors, latency, runs and the "
        "phase of every resource.",
        variables,
        panels,
    )


def releases_row() -> list[Panel]:
    """Issue 15's loop: versions recorded, gate verdicts, canaries, promotions and
    rollbacks, and deletions not yet effective in serving."""
    ns = 'namespace=~"$namespace"'
    who = "{{namespace}}/{{name}}"
    return [
        row("Releases"),
        timeseries(
            "Canary traffic",
            "Percent of each InferenceService's traffic its ModelRollout's candidate gets "
            "(0: no canary; it reaches 100 on promotion, then drops to 0).",
            [query(f"modelops_rollout_canary_percent{{{ns}}}", who)],
            "percent",
            maximum=100,
            size=(12, 8),
        ),
        timeseries(
            "Promotions and rollbacks",
            "Candidates promoted to an InferenceService's default and canaries rolled back, "
            "per hour (a rollback fires ModelopsRolloutRolledBack).",
            [
                query(
                    f"sum by (namespace, name) (increase(modelops_rollout_promotions_total{{{ns}}}[1h]))",
                    f"promoted {who}",
                ),
                query(
                    f"sum by (namespace, name) (increase(modelops_rollout_rollbacks_total{{{ns}}}[1h]))",
                    f"rolled back {who}",
                ),
            ],
            "none",
            bars=True,
            size=(12, 8),
        ),
        timeseries(
            "Gate verdicts and versions recorded",
            "Candidates that passed or failed a ModelRollout's evaluation gate, and "
            "ModelVersions recorded from published outputs, per hour.",
            [
                query(
                    f"sum by (namespace, name) (increase(modelops_gate_passes_total{{{ns}}}[1h]))",
                    f"gate passed {who}",
                ),
                query(
                    f"sum by (namespace, name) (increase(modelops_gate_failures_total{{{ns}}}[1h]))",
                    f"gate failed {who}",
                ),
                query(
                    f"sum by (namespace) (increase(modelops_versions_recorded_total{{{ns}}}[1h]))",
                    "versions recorded {{namespace}}",
                ),
            ],
            "none",
            bars=True,
            size=(12, 8),
        ),
        timeseries(
            "Deletions pending in serving",
            "How long each succeeded UnlearnRequest has waited for its unlearned version to "
            "serve, against its ModelRollout's maxDelay (past it: ModelopsDeletionNotEffective).",
            [
                query(f"modelops_deletion_pending_seconds{{{ns}}} > 0", f"pending {who}"),
                query(
                    f"modelops_deletion_max_delay_seconds{{{ns}}}"
                    f" and on (namespace, name) modelops_deletion_pending_seconds{{{ns}}} > 0",
                    f"max delay {who}",
                ),
            ],
            "s",
            size=(12, 8),
        ),
    ]


# -- drift and adaptations --------------------------------------------------------------------


def drift_adaptations() -> Panel:
    sel = 'namespace=~"$namespace", name=~"$name"'
    ma = f'kind="ModelAdaptation", {sel}'
    panels = [
        row("Drift"),
        timeseries(
            "Drift value and thresholds",
            "The last value of each drift query, with its fire threshold (a run starts once the "
            "value has been past it for `for`) and its clear threshold (the trigger re-arms once "
            "the value is back past it).",
            [
                query(f"modelops_drift_value{{{sel}}}", "{{namespace}}/{{name}} value"),
                query(f"modelops_drift_fire_threshold{{{sel}}}", "{{namespace}}/{{name}} fire"),
                query(f"modelops_drift_clear_threshold{{{sel}}}", "{{namespace}}/{{name}} clear"),
            ],
            "short",
            minimum=None,
            size=(16, 9),
        ),
        timeseries(
            "Time past the fire threshold",
            "How long each drift value has been past its fire threshold (0 when it is not). Over "
            "an hour with no run: ModelopsDriftPendingWithoutRun.",
            [query(f"modelops_drift_pending_seconds{{{sel}}}", "{{namespace}}/{{name}}")],
            "s",
            size=(8, 9),
        ),
        table(
            "Drift triggers",
            "Each drift-triggered ModelAdaptation: last value, thresholds and pending time.",
            [
                query(f"modelops_drift_value{{{sel}}}", table=True),
                query(f"modelops_drift_fire_threshold{{{sel}}}", table=True),
                query(f"modelops_drift_clear_threshold{{{sel}}}", table=True),
                query(f"modelops_drift_pending_seconds{{{sel}}}", table=True),
            ],
            columns={
                "namespace": "Namespace",
                "name": "Name",
                "Value #A": "Value",
                "Value #B": "Fire threshold",
                "Value #C": "Clear threshold",
                "Value #D": "Past fire for",
            },
            units={"Value #D": "s"},
        ),
        row("Adaptations"),
        timeseries(
            "Runs started per hour",
            "Runs started by any trigger (creation, run-now annotation, schedule, drift) in the "
            "preceding hour.",
            [
                query(
                    f"sum by (namespace, name) (increase(modelops_triggers_total{{{ma}}}[1h]))",
                    "{{namespace}}/{{name}}",
                )
            ],
            "none",
            size=(8, 8),
        ),
        timeseries(
            "Runs started since the operator started",
            "The trigger counter of each ModelAdaptation (reset when the operator restarts).",
            [
                query(
                    f"sum by (namespace, name) (modelops_triggers_total{{{ma}}})",
                    "{{namespace}}/{{name}}",
                )
            ],
            "none",
            size=(8, 8),
        ),
        timeseries(
            "Active adaptation runs",
            "ModelAdaptation runs pending or running, all namespaces (at most one per resource).",
            [query('sum(modelops_active_runs{kind="ModelAdaptation"})', "active")],
            "none",
            size=(8, 8),
        ),
        table(
            "Adaptation phases",
            "The phase of each ModelAdaptation: Idle (waiting for a trigger), Pending / Running "
            "(a run is active), Succeeded / Failed (the last run's outcome).",
            [query(f"modelops_resource_phase_info{{{ma}}} == 1", table=True)],
            columns={"namespace": "Namespace", "name": "Name", "phase": "Phase"},
            size=(8, 8),
        ),
        timeseries(
            "Adaptation runs finished per hour",
            "ModelAdaptation runs that ended in the preceding hour, by phase (all namespaces).",
            [
                query(
                    'sum by (phase) (increase(modelops_runs_finished_total{kind="ModelAdaptation"}[1h]))',
                    "{{phase}}",
                )
            ],
            "none",
            size=(8, 8),
        ),
        timeseries(
            "Adaptation run duration",
            "Wall time of ModelAdaptation runs finished in the preceding 6 hours (p50, p90).",
            [
                query(
                    "histogram_quantile(0.5, sum by (le) (rate("
                    'modelops_run_duration_seconds_bucket{kind="ModelAdaptation"}[6h])))',
                    "p50",
                ),
                query(
                    "histogram_quantile(0.9, sum by (le) (rate("
                    'modelops_run_duration_seconds_bucket{kind="ModelAdaptation"}[6h])))',
                    "p90",
                ),
            ],
            "s",
            size=(8, 8),
        ),
        row("Drift queries"),
        timeseries(
            "Drift query errors per second",
            "Failed drift queries (Prometheus unreachable or erroring, missing Secret, a query "
            "that does not return one value). The condition PrometheusReachable has the reason. "
            "Persisting 10 minutes: ModelopsPrometheusUnreachable.",
            [
                query(
                    f"sum by (namespace, name) (rate(modelops_prometheus_query_errors_total{{{sel}}}[{RATE}]))",
                    "{{namespace}}/{{name}}",
                )
            ],
            "ops",
            size=(24, 7),
        ),
    ]
    variables = [
        label_variable("namespace", "namespace", "modelops_drift_value", "Namespace"),
        label_variable(
            "name", "name", 'modelops_drift_value{namespace=~"$namespace"}', "ModelAdaptation"
        ),
    ]
    return dashboard(
        "modelops-drift-adaptations",
        "modelops / Drift and adaptations",
        "Drift triggers of ModelAdaptations (values against thresholds, pending time, query "
        "errors) and the runs they start.",
        variables,
        panels,
    )


# -- training jobs ------------------------------------------------------------------------------


def training_jobs() -> Panel:
    sel = 'namespace=~"$namespace", kind=~"$kind", name=~"$name"'
    by = "max by (namespace, kind, name)"
    panels = [
        bargauge(
            "Progress",
            "Share of the current phase's steps done, per run.",
            query(
                f"{by} (modelops_job_progress_ratio{{{sel}}})",
                "{{kind}} {{namespace}}/{{name}}",
                instant=True,
            ),
            "percentunit",
            maximum=1,
        ),
        timeseries(
            "Time left",
            "Estimated time left in the current phase, from its step rate.",
            [query(f"{by} (modelops_job_eta_seconds{{{sel}}})", "{{namespace}}/{{name}}")],
            "s",
        ),
        timeseries(
            "Training loss",
            "Loss at the last reported step, per pod (S3T shard pods report separately).",
            [query(f"modelops_job_loss{{{sel}}}", "{{namespace}}/{{name}} {{pod}}")],
            "short",
            minimum=None,
        ),
        timeseries(
            "Throughput",
            "Training tokens per second, summed over a run's pods.",
            [
                query(
                    f"sum by (namespace, kind, name) (modelops_job_tokens_per_second{{{sel}}})",
                    "{{namespace}}/{{name}}",
                )
            ],
            "suffix: tok/s",
        ),
        timeseries(
            "Steps",
            "Optimizer steps done and the steps of the current phase.",
            [
                query(f"{by} (modelops_job_step{{{sel}}})", "{{namespace}}/{{name}} step"),
                query(f"{by} (modelops_job_total_steps{{{sel}}})", "{{namespace}}/{{name}} total"),
            ],
            "none",
        ),
        table(
            "Running jobs",
            "Every run that reports training metrics, with its latest numbers.",
            [
                query(f"{by} (modelops_job_progress_ratio{{{sel}}})", table=True),
                query(f"{by} (modelops_job_step{{{sel}}})", table=True),
                query(f"{by} (modelops_job_total_steps{{{sel}}})", table=True),
                query(f"avg by (namespace, kind, name) (modelops_job_loss{{{sel}}})", table=True),
                query(
                    f"sum by (namespace, kind, name) (modelops_job_tokens_per_second{{{sel}}})",
                    table=True,
                ),
                query(f"{by} (modelops_job_eta_seconds{{{sel}}})", table=True),
            ],
            columns={
                "namespace": "Namespace",
                "kind": "Kind",
                "name": "Name",
                "Value #A": "Progress",
                "Value #B": "Step",
                "Value #C": "Steps",
                "Value #D": "Loss",
                "Value #E": "Tokens / s",
                "Value #F": "Time left",
            },
            units={"Value #A": "percentunit", "Value #E": "suffix: tok/s", "Value #F": "s"},
            size=(12, 8),
        ),
    ]
    variables = [
        label_variable("namespace", "namespace", "modelops_job_step", "Namespace"),
        label_variable("kind", "kind", 'modelops_job_step{namespace=~"$namespace"}', "Kind"),
        label_variable(
            "name", "name", 'modelops_job_step{namespace=~"$namespace", kind=~"$kind"}', "Resource"
        ),
    ]
    return dashboard(
        "modelops-training-jobs",
        "modelops / Training jobs",
        "Live training metrics of modelops Job pods (PodMonitor on the pods' metrics port): "
        "progress, loss, throughput and time left.",
        variables,
        panels,
    )


# -- unlearning ---------------------------------------------------------------------------------


def unlearning() -> Panel:
    sel = 'namespace=~"$namespace", name=~"$name"'
    ur = f'kind="UnlearnRequest", {sel}'
    panels = [
        stat(
            "Samples forgotten",
            "Training samples forgotten by the selected UnlearnRequests that succeeded while "
            "the operator ran (the counter starts again when the operator restarts; "
            "status.results.deletedSamples of each request is the record).",
            query(f"sum(modelops_deleted_samples_total{{{ur}}}) or vector(0)"),
            "none",
            decimals=0,
        ),
        stat(
            "Active unlearning runs",
            "UnlearnRequest Jobs pending or running (all namespaces).",
            query('sum(modelops_active_runs{kind="UnlearnRequest"})'),
            "none",
            decimals=0,
        ),
        stat(
            "Failed requests",
            "Selected UnlearnRequests in phase Failed: the samples are NOT forgotten yet.",
            query(f'count(modelops_resource_phase_info{{{ur}, phase="Failed"}} == 1) or vector(0)'),
            "none",
            thresholds=[(None, "green"), (1, "red")],
            decimals=0,
        ),
        bargauge(
            "Requests by phase",
            "Selected UnlearnRequests in each phase.",
            query(
                f"sum by (phase) (modelops_resource_phase_info{{{ur}}} == 1)",
                "{{phase}}",
                instant=True,
            ),
            "none",
            size=(12, 4),
        ),
        bargauge(
            "Samples forgotten per request",
            "deletedSamples of each UnlearnRequest that succeeded while the operator ran.",
            query(
                f"sum by (namespace, name) (modelops_deleted_samples_total{{{ur}}})",
                "{{namespace}}/{{name}}",
                instant=True,
            ),
            "none",
        ),
        table(
            "Unlearn requests",
            "Every selected UnlearnRequest and its phase; `kubectl describe unlearnrequest` "
            "shows the deletion receipt and the conditions.",
            [query(f"modelops_resource_phase_info{{{ur}}} == 1", table=True)],
            columns={"namespace": "Namespace", "name": "Name", "phase": "Phase"},
            size=(12, 8),
        ),
        timeseries(
            "Unlearning runs finished per hour",
            "UnlearnRequest runs that ended in the preceding hour, by phase (all namespaces).",
            [
                query(
                    'sum by (phase) (increase(modelops_runs_finished_total{kind="UnlearnRequest"}[1h]))',
                    "{{phase}}",
                )
            ],
            "none",
        ),
        timeseries(
            "Unlearning run duration",
            "Wall time of UnlearnRequest runs finished in the preceding 6 hours (p50, p95): "
            "S3T deactivation should take seconds to minutes, SSD longer.",
            [
                query(
                    "histogram_quantile(0.5, sum by (le) (rate("
                    'modelops_run_duration_seconds_bucket{kind="UnlearnRequest"}[6h])))',
                    "p50",
                ),
                query(
                    "histogram_quantile(0.95, sum by (le) (rate("
                    'modelops_run_duration_seconds_bucket{kind="UnlearnRequest"}[6h])))',
                    "p95",
                ),
            ],
            "s",
        ),
        timeseries(
            "Unlearning job progress",
            "Progress of running UnlearnRequest Jobs that report steps (SSD importance passes, "
            "evaluation).",
            [
                query(
                    f"max by (namespace, name) (modelops_job_progress_ratio{{{ur}}})",
                    "{{namespace}}/{{name}}",
                )
            ],
            "percentunit",
            maximum=1,
            size=(24, 7),
        ),
    ]
    variables = [
        label_variable(
            "namespace",
            "namespace",
            'modelops_resource_phase_info{kind="UnlearnRequest"}',
            "Namespace",
        ),
        label_variable(
            "name",
            "name",
            'modelops_resource_phase_info{kind="UnlearnRequest", namespace=~"$namespace"}',
            "UnlearnRequest",
        ),
    ]
    return dashboard(
        "modelops-unlearning",
        "modelops / Unlearning",
        "UnlearnRequests: samples forgotten, requests by phase, run durations.",
        variables,
        panels,
    )


DASHBOARDS = {
    "operator-overview.json": operator_overview,
    "drift-adaptations.json": drift_adaptations,
    "training-jobs.json": training_jobs,
    "unlearning.json": unlearning,
}


def render() -> dict[str, str]:
    """File name -> JSON text (2-space indent, trailing newline), deterministic."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a file differs")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"default: {OUT_DIR}")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        for path in stale:
            print(
                f"{path} differs from dashboards/build.py; run `make dashboards`", file=sys.stderr
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
