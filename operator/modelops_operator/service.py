"""The reconciler service: observe -> plan -> apply for one resource at a time.

One lock per resource serialises its reconciles (a Job event and a resource event can
arrive together). Reconciles read the informer cache (`k8s/informer.py`), not the API
server; an index of known resources, fed by the same watch events, drives the periodic
resync and the drift and schedule checks (their due times: `trigger_schedule.py`);
what a reconcile decided is recorded as metrics by `run_metrics.py`. The resync loop
runs due resources concurrently, and every failure is counted and logged
(`failures.py`).
"""

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from pydantic import ValidationError

from modelops_api.model_adaptation import ModelAdaptationSpec, parse_duration
from modelops_operator import failures, metrics
from modelops_operator import trigger_schedule as schedule
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.query import query_for
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.k8s.api import ApiSession
from modelops_operator.k8s.apply import Applier
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.jobsets import JobSetObserver
from modelops_operator.k8s.kinds import ROLLOUT_KIND
from modelops_operator.k8s.observe import Observer, resource_view
from modelops_operator.k8s.policy import PolicyReader, observe_gate
from modelops_operator.k8s.release_apply import registry_factory
from modelops_operator.k8s.secrets import SecretReader
from modelops_operator.reconcile import plan
from modelops_operator.reconcile.actions import Action, PatchStatus, RequeueAfter
from modelops_operator.reconcile.policy import Gate, refusal
from modelops_operator.release_service import Releases
from modelops_operator.run_metrics import RunMetrics

log = logging.getLogger("modelops.reconciler")


Key = tuple[str, str, str]  # kind, namespace, name


class Reconciler:
    def __init__(self, api: client.ApiClient, config: OperatorConfig) -> None:
        """`api`: where the kubeconfig led (its configuration only: requests go through
        `k8s/api.py`'s asynchronous session)."""
        self.config = config
        self.api = ApiSession(api.configuration)
        self.cache = InformerCache()
        jobsets = JobSetObserver(self.api, self.cache, watched=config.jobsets)
        self.observer = Observer(self.api, self.cache, jobsets)
        self.applier = Applier(self.api, self.cache, registry_factory(config))
        self.secrets = SecretReader(self.api)
        self.policies = PolicyReader(self.api, config.policy_name, config.policy_namespace)
        self.releases = Releases(
            config, self.cache, self.observer, self.applier, self.secrets, self.policies
        )
        self._locks: dict[Key, asyncio.Lock] = {}
        self.index: dict[Key, schedule.Tracked] = {}
        self.run_metrics = RunMetrics()
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
        if entry is None:
            metrics.track_resource(key[1], key[2], key[0])
            entry = self.index[key] = schedule.start(body, now, self.config.resync_seconds)
            if entry.next_drift is not None:  # due now; else nothing is due before a resync
                self._wake.set()
        elif schedule.update(entry, body, now):
            self._wake.set()
        return body

    def forget(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        self.index.pop(key, None)
        self.cache.drop_resource(key)
        self._locks.pop(key, None)
        self.run_metrics.forget(key)

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
                if kind == ROLLOUT_KIND:
                    actions = await self.releases.reconcile_rollout(body)
                    self._after(key, actions)
                    return actions
                gate = await observe_gate(
                    self.policies, self.secrets, kind, namespace, body.get("spec")
                )
                drift = await self._query_drift(body, gate) if with_drift else None
                observed = replace(
                    await self.observer.observe(body),
                    gate=gate,
                    known_versions=self.releases.known_versions(namespace),
                )
                actions = plan(observed, self.config, datetime.now(UTC), drift=drift)
                if kind == "UnlearnRequest":
                    actions = self.releases.with_deletion_effect(observed.resource, actions)
                # Metrics first: whoever sees the status write sees its metrics too (they
                # record what was decided; recording is idempotent if the write fails).
                errors = self.run_metrics.record(observed.resource, actions, drift)
                entry = self.index.get(key)
                if errors is not None and entry is not None:
                    entry.drift_errors = errors
                await self.applier.apply(observed.resource, actions)
                self._after(key, actions)
                return actions
            except Exception as exc:
                await self._failed(key, body, exc)
                if with_drift:  # a failed evaluation also backs off and shows as drift
                    await self._report_drift_failure(key, exc)
                return []
            finally:
                metrics.RECONCILE_DURATION.labels(kind).observe(time.perf_counter() - started)

    def _after(self, key: Key, actions: list[Action]) -> None:
        """After a successful reconcile: clear its failures, honour RequeueAfter, and
        when a rollout changed what serves, look at the namespace's UnlearnRequests now
        (their deletion may have become effective)."""
        kind, namespace, name = key
        if self._failures.pop(key, 0):
            self._failure_log.recovered(f"{kind} {namespace}/{name}")
        now = time.monotonic()
        entry = self.index.get(key)
        for action in actions:
            if isinstance(action, RequeueAfter) and entry is not None:
                entry.next_resync = min(entry.next_resync, now + max(action.seconds, 0.05))
                self._wake.set()
            serving_changed = isinstance(action, PatchStatus) and "servingVersion" in action.patch
            if kind == ROLLOUT_KIND and serving_changed:
                self.resync_soon("UnlearnRequest", namespace)

    def resync_soon(self, kind: str, namespace: str, names: list[str] | None = None) -> None:
        """Make these tracked resources (all of the kind in the namespace when `names`
        is None) due at once in the resync loop."""
        now = time.monotonic()
        for (k, ns, name), entry in self.index.items():
            if k == kind and ns == namespace and (names is None or name in names):
                entry.next_resync = min(entry.next_resync, now)
                self._wake.set()

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
            res.kind, res.status, cls, failures.describe(exc), datetime.now(UTC), res.generation
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
        name = body["metadata"]["name"]
        return await query_for(self.secrets, namespace, name, trigger, now, "drift")

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
                run, drift_due = schedule.due(entry, now)
                if run:
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
            if with_drift and entry is not None:
                schedule.drift_done(entry, due, time.monotonic())
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
