"""The reconciler service: observe -> plan -> apply for one resource at a time.

One lock per resource serialises its reconciles (a Job event and a resource event can
arrive together). An index of known resources, fed by the watch events, drives the
periodic resync and the drift and schedule checks without extra list calls.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from modelops_api.model_adaptation import ModelAdaptationSpec, parse_duration
from modelops_operator import failures, metrics
from modelops_operator.config import OperatorConfig
from modelops_operator.drift import prometheus
from modelops_operator.drift.state import QueryOutcome, backoff_seconds, state_from_status
from modelops_operator.k8s.apply import Applier
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.observe import Observer, resource_view
from modelops_operator.k8s.policy import PolicyReader, observe_gate
from modelops_operator.k8s.secrets import SecretNotFound, SecretReader
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import Action, PatchStatus
from modelops_operator.reconcile.observed import ResourceView
from modelops_operator.reconcile.policy import Gate, refusal
from modelops_operator.reconcile.status_patch import apply_merge_patch

log = logging.getLogger("modelops.reconciler")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _count_finished_run(kind: str, phase: str, start: str | None, end: str | None) -> None:
    """One finished run: its phase counted, its wall time observed when both ends are known."""
    metrics.RUNS_FINISHED.labels(kind, phase).inc()
    if start and end:
        seconds = (_parse(end) - _parse(start)).total_seconds()
        metrics.RUN_DURATION.labels(kind).observe(max(seconds, 0.0))


Key = tuple[str, str, str]  # kind, namespace, name


@dataclass
class Tracked:
    """What the resync loop knows about one resource (times are time.monotonic())."""

    body: dict[str, Any]
    next_resync: float
    next_drift: float | None = None
    drift_errors: int = 0
    """Failed drift evaluations in a row, as this process saw them (backoff)."""
    schedule_seen: str | None = None
    """The nextScheduleTime a reconcile was already started for: a schedule wakes the
    loop once per time, never on every tick (a failing reconcile backs off instead)."""


class Reconciler:
    def __init__(self, api: client.ApiClient, config: OperatorConfig) -> None:
        self.config = config
        self.cache = InformerCache()
        self.observer = Observer(api, self.cache)
        self.applier = Applier(api, self.cache)
        self.secrets = SecretReader(api)
        self.policies = PolicyReader(api, config.policy_name, config.policy_namespace)
        self._locks: dict[Key, asyncio.Lock] = {}
        self.index: dict[Key, Tracked] = {}
        self._phases: dict[Key, str] = {}
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._failures: dict[Key, int] = {}
        self._failure_log = failures.FailureLog(log)

    # -- the index ---------------------------------------------------------------
    def track(self, body: dict[str, Any]) -> dict[str, Any]:
        """Keep a watched (or just written) body in the cache and the resync index;
        return the newest body held (a queued older event never replaces a newer one)."""
        meta = body["metadata"]
        key = (body["kind"], meta.get("namespace", "default"), meta["name"])
        body = self.cache.put_resource(key, body)
        entry = self.index.get(key)
        now = time.monotonic()
        interval = self._drift_interval(body)
        if entry is None:
            metrics.track_resource(key[1], key[2], key[0])
            self.index[key] = Tracked(
                body, now + self.config.resync_seconds, now if interval else None
            )
            self._wake.set()
        else:
            entry.body = body
            if interval is None:
                entry.next_drift = None
            elif entry.next_drift is None or entry.next_drift > now + interval:
                # New, or the interval was shortened: do not wait out the old one.
                entry.next_drift = now if entry.next_drift is None else now + interval
                self._wake.set()
        return body

    def forget(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        self.index.pop(key, None)
        self.cache.drop_resource(key)
        self._locks.pop(key, None)
        self._phases.pop(key, None)
        metrics.forget_resource(namespace, name, kind)
        self._update_active_runs()

    @staticmethod
    def _drift_interval(body: dict[str, Any]) -> float | None:
        if body.get("kind") != "ModelAdaptation":
            return None
        trigger = (body.get("spec") or {}).get("trigger") or {}
        if trigger.get("type") != "drift" or not trigger.get("drift"):
            return None
        try:
            return parse_duration(trigger["drift"].get("interval", "1m"))
        except ValueError:
            return None

    # -- reconciling -------------------------------------------------------------
    async def reconcile(
        self,
        kind: str,
        namespace: str,
        name: str,
        with_drift: bool = False,
        body: dict[str, Any] | None = None,
    ) -> list[Action]:
        """Observe, plan and apply for one resource. `body` is the resource as a watch
        event just delivered it; without it the informer cache's copy is used, and only
        a resource the cache never saw is read."""
        key = (kind, namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            metrics.RECONCILES.labels(kind).inc()
            try:
                if body is None:
                    body = self.cache.resource(key)
                if body is None:
                    body = await self.observer.get_resource(kind, namespace, name)
                if body is None:
                    self.forget(kind, namespace, name)
                    return []
                body.setdefault("kind", kind)
                body = self.track(body)
                gate = await observe_gate(
                    self.policies, self.secrets, kind, namespace, body.get("spec")
                )
                drift = await self._query_drift(body, gate) if with_drift else None
                observed = replace(await self.observer.observe(body), gate=gate)
                actions = plan(observed, self.config, datetime.now(UTC), drift=drift)
                await self.applier.apply(observed.resource, actions)
                self._record(observed.resource, actions, drift)
                if self._failures.pop(key, 0):
                    self._failure_log.recovered(f"{kind} {namespace}/{name}")
                return actions
            except Exception as exc:
                await self._failed(key, body, exc)
                if with_drift:  # a failed evaluation also backs off and shows as drift
                    await self._report_drift_failure(key, exc)
                return []
            finally:
                metrics.RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - started)

    async def _failed(self, key: Key, body: dict[str, Any] | None, exc: Exception) -> None:
        """Count, log (rate-limited), back off, and show the error on the resource. A
        reconcile never raises: kopf would log each failure with its traceback."""
        kind, namespace, name = key
        cls = failures.classify(exc)
        metrics.RECONCILE_ERRORS.labels(kind).inc()
        metrics.RECONCILE_FAILURES.labels(kind, cls).inc()
        count = self._failures[key] = self._failures.get(key, 0) + 1
        self._failure_log.report(cls, f"{kind} {namespace}/{name}", exc)
        entry = self.index.get(key)
        if entry is not None:
            entry.next_resync = time.monotonic() + failures.backoff_seconds(count)
        if body is None:
            return
        res = resource_view(body)
        actions = failures.error_plan(
            res.status, cls, failures.describe(exc), datetime.now(UTC), res.generation
        )
        try:
            await self.applier.apply(res, actions)
        except Exception as again:  # the error is counted and logged already
            log.debug("could not record the reconcile error on %s: %s", key, again)

    async def _query_drift(self, body: dict[str, Any], gate: Gate) -> QueryOutcome | None:
        """One drift query; every failure is an outcome with a reason, never an exception."""
        try:
            spec = ModelAdaptationSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None
        trigger = spec.trigger.drift
        if spec.trigger.type != "drift" or trigger is None:
            return None
        if refusal("ModelAdaptation", spec, gate) is not None:
            # No query, no credential: plan() reports the refusal; look again next interval.
            meta = body["metadata"]
            entry = self.index.get(
                ("ModelAdaptation", meta.get("namespace", "default"), meta["name"])
            )
            if entry is not None:
                entry.next_drift = time.monotonic() + parse_duration(trigger.interval)
            return None
        now = datetime.now(UTC)
        namespace = body["metadata"].get("namespace", "default")
        try:
            creds = await self.secrets.credentials(namespace, trigger)
            return await asyncio.to_thread(
                prometheus.query_value,
                trigger.prometheus_url,
                trigger.query,
                now,
                parse_duration(trigger.timeout),
                creds,
            )
        except SecretNotFound as exc:
            return QueryOutcome(now, error=str(exc)[:1024], error_reason="SecretNotFound")
        except Exception as exc:  # a bug or an API error: reported on the resource
            log.warning("drift query of %s/%s failed: %s", namespace, body["metadata"]["name"], exc)
            return QueryOutcome(
                now, error=f"drift query failed: {type(exc).__name__}", error_reason="QueryFailed"
            )

    def _record(self, res: ResourceView, actions: list[Action], drift: QueryOutcome | None) -> None:
        key = (res.kind, res.namespace, res.name)
        patch: dict[str, Any] = {}
        for action in actions:
            if isinstance(action, PatchStatus):
                patch.update(action.patch)
        status = apply_merge_patch(res.status, patch)
        phase = status.get("phase")
        old = self._phases.get(key)
        if phase:
            self._phases[key] = phase
            metrics.set_phase(res.namespace, res.name, res.kind, phase)
            if (
                phase != old
                and phase in ("Succeeded", "Failed")
                and old is not None
                and res.kind != "ModelAdaptation"
            ):
                _count_finished_run(
                    res.kind, phase, status.get("startTime"), status.get("completionTime")
                )
                if res.kind == "UnlearnRequest" and phase == "Succeeded":
                    deleted = (status.get("results") or {}).get("deletedSamples") or 0
                    metrics.DELETED_SAMPLES.labels(res.namespace, res.name, res.kind).inc(deleted)
        if res.kind == "UnlearnRequest" and phase == "Succeeded":
            metrics.record_store_serving(res.namespace, res.spec, status)
        if "runCount" in patch and int(patch["runCount"]) > int(res.status.get("runCount", 0)):
            metrics.TRIGGERS.labels(res.namespace, res.name, res.kind).inc(
                int(patch["runCount"]) - int(res.status.get("runCount", 0))
            )
        if res.kind == "ModelAdaptation":
            self._record_runs(res, patch)
            self._record_drift(res, status, drift)
        self._update_active_runs()

    @staticmethod
    def _record_runs(res: ResourceView, patch: dict[str, Any]) -> None:
        """ModelAdaptation keeps start and end per run: count each run that just finished."""
        if "runs" not in patch:
            return
        before = {r.get("run"): r.get("phase") for r in res.status.get("runs", [])}
        for run in patch["runs"]:
            phase = run.get("phase")
            if phase not in ("Succeeded", "Failed") or before.get(run.get("run")) == phase:
                continue
            _count_finished_run(res.kind, phase, run.get("startTime"), run.get("completionTime"))

    def _record_drift(
        self, res: ResourceView, status: dict[str, Any], drift: QueryOutcome | None
    ) -> None:
        trig = (res.spec.get("trigger") or {}).get("drift")
        if not trig:
            return
        labels = (res.namespace, res.name, res.kind)
        for gauge, key in (
            (metrics.DRIFT_FIRE, "fireThreshold"),
            (metrics.DRIFT_CLEAR, "clearThreshold"),
        ):
            if isinstance(trig.get(key), int | float):
                gauge.labels(*labels).set(float(trig[key]))
        state = state_from_status(status.get("drift"))
        metrics.DRIFT_VALUE.labels(*labels).set(
            state.last_value if state.last_value is not None else float("nan")
        )
        pending = (
            (datetime.now(UTC) - state.pending_since).total_seconds()
            if state.pending_since
            else 0.0
        )
        metrics.DRIFT_PENDING.labels(*labels).set(pending)
        entry = self.index.get((res.kind, res.namespace, res.name))
        if drift is not None:
            if state.consecutive_errors:
                metrics.PROMETHEUS_ERRORS.labels(*labels).inc()
            if entry is not None:
                entry.drift_errors = state.consecutive_errors

    def _update_active_runs(self) -> None:
        counts: dict[str, int] = {}
        for (kind, _, _), phase in self._phases.items():
            counts.setdefault(kind, 0)
            if phase in ("Pending", "Running"):
                counts[kind] += 1
        for kind, n in counts.items():
            metrics.ACTIVE_RUNS.labels(kind).set(n)

    # -- the resync loop -----------------------------------------------------------
    async def resync_forever(self, tick: float = 1.0) -> None:
        """Reconcile each tracked resource every resync interval, drift ones on their own
        interval (with backoff after failures), scheduled ones at their cron time. The
        loop sleeps until the next thing is due (at most `tick`, so cron times and new
        resources are noticed) and runs due resources concurrently, so one slow
        Prometheus never delays another resource's evaluation."""
        while True:
            now = time.monotonic()
            next_due = now + tick
            for key, entry in list(self.index.items()):
                if key in self._inflight:
                    continue
                drift_due = entry.next_drift is not None and now >= entry.next_drift
                if drift_due or now >= entry.next_resync or self._schedule_due(entry):
                    entry.next_resync = now + self.config.resync_seconds
                    self._inflight[key] = asyncio.create_task(self._resync_one(key, drift_due))
                elif entry.next_drift is not None:
                    next_due = min(next_due, entry.next_drift)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(next_due - time.monotonic(), 0.001))
            except TimeoutError:
                pass

    async def _resync_one(self, key: Key, with_drift: bool) -> None:
        kind, ns, name = key
        due = time.monotonic()
        try:
            await self.reconcile(kind, ns, name, with_drift=with_drift)
        except Exception as exc:
            if with_drift:
                await self._report_drift_failure(key, exc)
        finally:
            self._inflight.pop(key, None)
            entry = self.index.get(key)
            if with_drift and entry is not None and entry.next_drift is not None:
                interval = self._drift_interval(entry.body) or 60.0
                delay = backoff_seconds(interval, entry.drift_errors)
                entry.next_drift = max(due + delay, time.monotonic())
            self._wake.set()

    async def _report_drift_failure(self, key: Key, exc: Exception) -> None:
        """A drift evaluation that failed outside the query (the plan, the status write):
        count it, back off, and try once to put the failure on the resource."""
        kind, ns, name = key
        entry = self.index.get(key)
        if entry is None:
            return
        entry.drift_errors += 1
        metrics.PROMETHEUS_ERRORS.labels(ns, name, kind).inc()
        outcome = QueryOutcome(
            datetime.now(UTC),
            error=f"drift evaluation failed: {type(exc).__name__}: {exc}"[:1024],
            error_reason="EvaluationFailed",
        )
        try:
            body = self.cache.resource(key) or await self.observer.get_resource(kind, ns, name)
            if body is None:
                return
            body.setdefault("kind", kind)
            observed = await self.observer.observe(body)
            actions = plan(observed, self.config, datetime.now(UTC), drift=outcome)
            await self.applier.apply(observed.resource, actions)
        except Exception as again:
            log.warning("could not report the drift failure on %s %s/%s: %s", kind, ns, name, again)

    @staticmethod
    def _schedule_due(entry: Tracked) -> bool:
        """Whether a cron time has passed that no reconcile was started for yet."""
        body = entry.body
        if body.get("kind") != "ModelAdaptation":
            return False
        nxt = (body.get("status") or {}).get("nextScheduleTime")
        if not nxt or nxt == entry.schedule_seen or datetime.now(UTC) < _parse(nxt):
            return False
        entry.schedule_seen = nxt
        return True
