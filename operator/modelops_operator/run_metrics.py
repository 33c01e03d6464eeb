"""Recording what a reconcile decided as metrics, next to their declarations in
`metrics.py`.

The input is the plan's status write, read back through the kind's typed status model
(`modelops_api`): phases are `Phase` members (their `terminal` property says which
runs finished), and what a kind records follows from its status model's fields (runs
for a kind that keeps a run history, deleted samples for one whose results count
them, drift for one with a drift state), not from kind names. A reconcile that wrote
nothing costs no validation: its resource's phase is already recorded.
"""

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from modelops_api.kinds import kind_info
from modelops_api.status import Phase
from modelops_operator import metrics
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile.actions import Action, PatchStatus
from modelops_operator.reconcile.observed import ResourceView
from modelops_operator.reconcile.status_patch import apply_merge_patch

log = logging.getLogger("modelops.metrics")
Key = tuple[str, str, str]
ACTIVE = (Phase.PENDING, Phase.RUNNING)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return max((end - start).total_seconds(), 0.0) if start and end else None


def _count_finished(kind: str, phase: Phase, seconds: float | None) -> None:
    metrics.RUNS_FINISHED.labels(kind, phase.value).inc()
    if seconds is not None:
        metrics.RUN_DURATION.labels(kind).observe(seconds)


class RunMetrics:
    """Per-resource phases (for the active-runs gauge) and the recording itself."""

    def __init__(self) -> None:
        self.phases: dict[Key, Phase] = {}
        self._active: dict[str, int] = {}
        """Resources in an active phase, by kind (kept as phases change: a count over
        every resource on each reconcile was quadratic in a burst)."""

    def _set(self, key: Key, phase: Phase | None) -> None:
        old = self.phases.pop(key, None) if phase is None else self.phases.get(key)
        if phase is not None:
            self.phases[key] = phase
        change = (phase in ACTIVE) - (old in ACTIVE)
        self._active[key[0]] = self._active.get(key[0], 0) + change
        metrics.ACTIVE_RUNS.labels(key[0]).set(self._active[key[0]])

    def forget(self, key: Key) -> None:
        self._set(key, None)
        metrics.forget_resource(key[1], key[2], key[0])

    def record(
        self, res: ResourceView, actions: list[Action], drift: QueryOutcome | None
    ) -> int | None:
        """Record one reconcile's outcome; return the drift trigger's consecutive query
        errors when this reconcile queried Prometheus (the resync loop backs off)."""
        key = (res.kind, res.namespace, res.name)
        patch: dict[str, Any] = {}
        for action in actions:
            if isinstance(action, PatchStatus):
                patch.update(action.patch)
        if not patch and key in self.phases and drift is None:
            return None
        info = kind_info(res.kind)
        keeps_runs = "runs" in info.status.model_fields
        try:
            after = info.status.model_validate(apply_merge_patch(res.status, patch))
            before = info.status.model_validate(res.status) if keeps_runs and patch else after
        except ValidationError as exc:  # a status an older operator wrote: no metrics
            log.warning("metrics of %s %s/%s not recorded: %s", *key, exc)
            return None
        self._phase(key, before, after)
        self._runs(res.kind, before, after)
        self._results(res, after)
        return self._drift(res, after, drift)

    def _phase(self, key: Key, before: BaseModel, after: BaseModel) -> None:
        if getattr(after, "phase", None) is None:
            return
        phase = Phase(after.phase)  # type: ignore[attr-defined]
        old = self.phases.get(key)
        self._set(key, phase)
        metrics.set_phase(key[1], key[2], key[0], phase.value)
        keeps_runs = "runs" in type(after).model_fields
        if phase != old and phase.terminal and old is not None and not keeps_runs:
            start, end = getattr(after, "start_time", None), getattr(after, "completion_time", None)
            _count_finished(key[0], phase, _seconds(start, end))
            results = getattr(after, "results", None)
            deleted = getattr(results, "deleted_samples", None)
            if phase == Phase.SUCCEEDED and deleted:
                metrics.DELETED_SAMPLES.labels(key[1], key[2], key[0]).inc(deleted)

    @staticmethod
    def _runs(kind: str, before: BaseModel, after: BaseModel) -> None:
        """A kind with a run history: count each run that just finished, and each
        run started (runCount grew)."""
        runs = getattr(after, "runs", None)
        if runs is None:
            return
        seen = {r.run: Phase(r.phase) for r in getattr(before, "runs", [])}
        for run in runs:
            phase = Phase(run.phase)
            if phase.terminal and seen.get(run.run) != phase:
                _count_finished(kind, phase, _seconds(run.start_time, run.completion_time))

    @staticmethod
    def _results(res: ResourceView, after: BaseModel) -> None:
        started = int(getattr(after, "run_count", 0) or 0) - int(res.status.get("runCount", 0))
        if started > 0:
            metrics.TRIGGERS.labels(res.namespace, res.name, res.kind).inc(started)
        results = getattr(after, "results", None)
        if getattr(after, "phase", None) == Phase.SUCCEEDED.value and hasattr(results, "shards"):
            wire = after.model_dump(mode="json", by_alias=True, exclude_none=True)
            metrics.record_store_serving(res.namespace, res.spec, wire)

    @staticmethod
    def _drift(res: ResourceView, after: BaseModel, drift: QueryOutcome | None) -> int | None:
        trig = (res.spec.get("trigger") or {}).get("drift")
        if "drift" not in type(after).model_fields or not trig:
            return None
        labels = (res.namespace, res.name, res.kind)
        for gauge, field in (
            (metrics.DRIFT_FIRE, "fireThreshold"),
            (metrics.DRIFT_CLEAR, "clearThreshold"),
        ):
            if isinstance(trig.get(field), int | float):
                gauge.labels(*labels).set(float(trig[field]))
        state = getattr(after, "drift", None)
        value = state.last_value if state is not None else None
        metrics.DRIFT_VALUE.labels(*labels).set(value if value is not None else float("nan"))
        since = state.pending_since if state is not None else None
        pending = (datetime.now(UTC) - since).total_seconds() if since else 0.0
        metrics.DRIFT_PENDING.labels(*labels).set(pending)
        if drift is None:
            return None
        errors = state.consecutive_errors if state is not None else 0
        if errors:
            metrics.PROMETHEUS_ERRORS.labels(*labels).inc()
        return errors
