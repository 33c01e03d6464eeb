"""Every operator metric, declared once. Prefixed `modelops_`, units in the names,
labelled by kind (aggregates) or by namespace, name and kind (per resource) only.
Series of a deleted resource are removed by `forget_resource`."""

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
PER_RESOURCE = ("namespace", "name", "kind")

RECONCILES = Counter(
    "modelops_reconciles_total", "Reconciliations run, by kind.", ["kind"], registry=REGISTRY
)
RECONCILE_ERRORS = Counter(
    "modelops_reconcile_errors_total",
    "Reconciliations that raised, by kind.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_FAILURES = Counter(
    "modelops_reconcile_failures_total",
    "Reconciliations that failed, by kind and failure class (ApiUnavailable: the API"
    " server is down; ApiBusy: it answered 429; ApiRejected: it refused a request;"
    " InternalError: a bug).",
    ["kind", "reason"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "modelops_reconcile_duration_seconds",
    "Time to observe, plan and apply one reconciliation.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
ACTIVE_RUNS = Gauge(
    "modelops_active_runs", "Runs (Jobs) in progress, by kind.", ["kind"], registry=REGISTRY
)
RUNS_FINISHED = Counter(
    "modelops_runs_finished_total",
    "Runs that reached a terminal phase.",
    ["kind", "phase"],
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "modelops_run_duration_seconds",
    "Wall time of finished runs, from Job start to completion.",
    ["kind"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400),
    registry=REGISTRY,
)
RESOURCE_PHASE = Gauge(
    "modelops_resource_phase_info",
    "1 for the phase each resource is in.",
    [*PER_RESOURCE, "phase"],
    registry=REGISTRY,
)
DRIFT_VALUE = Gauge(
    "modelops_drift_value", "Last drift value queried.", PER_RESOURCE, registry=REGISTRY
)
DRIFT_FIRE = Gauge(
    "modelops_drift_fire_threshold", "Drift fire threshold.", PER_RESOURCE, registry=REGISTRY
)
DRIFT_CLEAR = Gauge(
    "modelops_drift_clear_threshold", "Drift clear threshold.", PER_RESOURCE, registry=REGISTRY
)
DRIFT_PENDING = Gauge(
    "modelops_drift_pending_seconds",
    "How long drift has been past the fire threshold.",
    PER_RESOURCE,
    registry=REGISTRY,
)
TRIGGERS = Counter(
    "modelops_triggers_total", "Runs started by any trigger.", PER_RESOURCE, registry=REGISTRY
)
DELETED_SAMPLES = Counter(
    "modelops_deleted_samples_total",
    "Training samples forgotten by UnlearnRequests.",
    PER_RESOURCE,
    registry=REGISTRY,
)
PROMETHEUS_ERRORS = Counter(
    "modelops_prometheus_query_errors_total",
    "Failed drift queries.",
    PER_RESOURCE,
    registry=REGISTRY,
)
S3T_SHARDS = Gauge(
    "modelops_s3t_shards",
    "Shards in an S3T store (spec.model.uri of its UnlearnRequests), by its latest deletion.",
    ["namespace", "store"],
    registry=REGISTRY,
)
S3T_SHARDS_IN_SERVICE = Gauge(
    "modelops_s3t_shards_in_service",
    "Shards of an S3T store with a live order after its latest deletion (0: serves nothing).",
    ["namespace", "store"],
    registry=REGISTRY,
)
_STORE_STAMPS: dict[tuple[str, str], str] = {}

# -- releases (issue 15): versions, gates, rollouts, deletions in serving -------------
VERSIONS_RECORDED = Counter(
    "modelops_versions_recorded_total",
    "ModelVersions recorded, by the resource whose output they are.",
    PER_RESOURCE,
    registry=REGISTRY,
)
GATE_PASSES = Counter(
    "modelops_gate_passes_total",
    "Candidates that passed a ModelRollout's evaluation gate.",
    PER_RESOURCE,
    registry=REGISTRY,
)
GATE_FAILURES = Counter(
    "modelops_gate_failures_total",
    "Candidates that failed a ModelRollout's evaluation gate (serving untouched).",
    PER_RESOURCE,
    registry=REGISTRY,
)
CANARY_PERCENT = Gauge(
    "modelops_rollout_canary_percent",
    "Percent of the InferenceService's traffic the ModelRollout's canary gets (0: none).",
    PER_RESOURCE,
    registry=REGISTRY,
)
PROMOTIONS = Counter(
    "modelops_rollout_promotions_total",
    "Candidates a ModelRollout promoted to the InferenceService's default.",
    PER_RESOURCE,
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "modelops_rollout_rollbacks_total",
    "Canaries a ModelRollout rolled back (analysis out of bounds, or rejected).",
    PER_RESOURCE,
    registry=REGISTRY,
)
DELETION_PENDING = Gauge(
    "modelops_deletion_pending_seconds",
    "Seconds since an UnlearnRequest succeeded while a served version still holds the"
    " deleted samples (0 once its version serves, or when nothing it unlearned serves).",
    PER_RESOURCE,
    registry=REGISTRY,
)
DELETION_MAX_DELAY = Gauge(
    "modelops_deletion_max_delay_seconds",
    "How long an UnlearnRequest's deletion may take to reach serving: the spec.unlearning"
    ".maxDelay of the ModelRollout whose InferenceService still serves the deleted samples.",
    PER_RESOURCE,
    registry=REGISTRY,
)

KIND_NAMES = ("PruneRetrain", "UnlearnRequest", "LoRATransfer", "ModelAdaptation")
# Counters exist at 0 from the start, so increase() counts their first event.
for _kind in KIND_NAMES:
    RECONCILES.labels(_kind)
    RECONCILE_ERRORS.labels(_kind)
    for _reason in ("ApiUnavailable", "ApiBusy", "ApiRejected", "InternalError"):
        RECONCILE_FAILURES.labels(_kind, _reason)
    ACTIVE_RUNS.labels(_kind)
    for _phase in ("Succeeded", "Failed"):
        RUNS_FINISHED.labels(_kind, _phase)
# ModelRollouts are reconciled too (no runs of their own: their evaluation Jobs are not
# counted as runs).
RECONCILES.labels("ModelRollout")
RECONCILE_ERRORS.labels("ModelRollout")
for _reason in ("ApiUnavailable", "ApiBusy", "ApiRejected", "InternalError"):
    RECONCILE_FAILURES.labels("ModelRollout", _reason)


def track_resource(namespace: str, name: str, kind: str) -> None:
    """Create a resource's counters at 0 when it is first seen."""
    TRIGGERS.labels(namespace, name, kind)
    if kind == "UnlearnRequest":
        DELETED_SAMPLES.labels(namespace, name, kind)
    if kind == "ModelAdaptation":
        PROMETHEUS_ERRORS.labels(namespace, name, kind)
    if kind == "ModelRollout":
        for counter in (GATE_PASSES, GATE_FAILURES, PROMOTIONS, ROLLBACKS):
            counter.labels(namespace, name, kind)
        CANARY_PERCENT.labels(namespace, name, kind)
    elif kind != "ModelVersion":
        VERSIONS_RECORDED.labels(namespace, name, kind)


_PER_RESOURCE_METRICS = (
    DRIFT_VALUE,
    DRIFT_FIRE,
    DRIFT_CLEAR,
    DRIFT_PENDING,
    TRIGGERS,
    DELETED_SAMPLES,
    PROMETHEUS_ERRORS,
    VERSIONS_RECORDED,
    GATE_PASSES,
    GATE_FAILURES,
    CANARY_PERCENT,
    PROMOTIONS,
    ROLLBACKS,
    DELETION_PENDING,
    DELETION_MAX_DELAY,
)
_PHASES = ("Pending", "Running", "Suspended", "Succeeded", "Failed", "Idle")


def set_phase(namespace: str, name: str, kind: str, phase: str) -> None:
    for p in _PHASES:
        RESOURCE_PHASE.labels(namespace, name, kind, p).set(1 if p == phase else 0)


def forget_resource(namespace: str, name: str, kind: str) -> None:
    """Remove every per-resource series of a deleted resource."""
    for metric in _PER_RESOURCE_METRICS:
        try:
            metric.remove(namespace, name, kind)
        except KeyError:
            pass
    for p in _PHASES:
        try:
            RESOURCE_PHASE.remove(namespace, name, kind, p)
        except KeyError:
            pass


def record_store_serving(namespace: str, spec: dict[str, Any], status: dict[str, Any]) -> None:
    """The shards of the store an UnlearnRequest deleted from, if this is its newest
    deletion seen (older requests on the same store are resynced too)."""
    results = status.get("results") or {}
    total, live = results.get("shards"), results.get("shardsInService")
    store = (spec.get("model") or {}).get("uri")
    if total is None or live is None or not store:
        return
    stamp = str((status.get("receipt") or {}).get("time") or status.get("completionTime") or "")
    key = (namespace, str(store))
    if _STORE_STAMPS.get(key, "") > stamp:
        return
    _STORE_STAMPS[key] = stamp
    S3T_SHARDS.labels(*key).set(float(total))
    S3T_SHARDS_IN_SERVICE.labels(*key).set(float(live))
