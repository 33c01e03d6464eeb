"""The reconcile paths of issue 15 beside the job kinds': a ModelRollout (observe ->
analysis query when due -> `plan_rollout` -> apply) and the deletion effect of an
UnlearnRequest on serving.

`service.Reconciler` owns the locks, the index and the resync loop and calls in here.
A rollout is observed from the informer cache: its ModelVersions, its InferenceService
(`k8s/inferenceservices.py`), its evaluation Job (the same Job observation as the job
kinds), the policy gate; the canary analysis queries Prometheus exactly as a drift
trigger does (`drift/prometheus.query_value`, credentials from opted-in Secrets) and
never a URL the policy refuses. Two rollouts naming one InferenceService: only the
older acts (`reconcile/isvc_claims.py`).
"""

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelops_api.model_rollout import Analysis, ModelRolloutSpec
from modelops_operator import metrics
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.query import query_for
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.k8s.apply import Applier
from modelops_operator.k8s.inferenceservices import InferenceServiceObserver
from modelops_operator.k8s.informer import InformerCache
from modelops_operator.k8s.kinds import ROLLOUT_KIND
from modelops_operator.k8s.observe import Observer, resource_view
from modelops_operator.k8s.policy import PolicyReader, observe_gate
from modelops_operator.k8s.secrets import SecretReader
from modelops_operator.reconcile.actions import Action, MetricUpdate
from modelops_operator.reconcile.candidate_versions import rollout_versions, version_view
from modelops_operator.reconcile.deletion_effect import deletion_effect, deletion_plan
from modelops_operator.reconcile.isvc_claims import cleared, conflict_plan, holder, isvc_name
from modelops_operator.reconcile.observed import ResourceView, RolloutObserved, VersionView
from modelops_operator.reconcile.policy import Gate, refusal
from modelops_operator.reconcile.rollout import analysis_due, plan_rollout
from modelops_operator.release_metrics import record_rollout

log = logging.getLogger("modelops.reconciler")
GAUGES = {
    "modelops_deletion_pending_seconds": metrics.DELETION_PENDING,
    "modelops_deletion_max_delay_seconds": metrics.DELETION_MAX_DELAY,
}
"""The gauges a plan may set with MetricUpdate."""


class Releases:
    """Rollout reconciles and deletion effects, on the reconciler's cache and clients."""

    def __init__(
        self,
        config: OperatorConfig,
        cache: InformerCache,
        observer: Observer,
        applier: Applier,
        secrets: SecretReader,
        policies: PolicyReader,
    ) -> None:
        self.config = config
        self.cache = cache
        self.observer = observer
        self.applier = applier
        self.secrets = secrets
        self.policies = policies
        self.isvcs = InferenceServiceObserver(observer.api, cache)

    # -- what the cache holds -------------------------------------------------------
    def rollouts_in(self, namespace: str) -> list[ResourceView]:
        return [
            resource_view({**body, "kind": ROLLOUT_KIND})
            for (kind, ns, _), body in list(self.cache.resources.items())
            if kind == ROLLOUT_KIND and ns == namespace
        ]

    def versions_in(self, namespace: str) -> list[VersionView]:
        return [version_view(v) for v in self.cache.versions_in(namespace)]

    def known_versions(self, namespace: str) -> dict[str, str]:
        """URI -> ModelVersion name in the namespace (a new version's parents). Where
        several were published at one URI, the newest is what the URI holds now."""
        out: dict[str, str] = {}
        ordered = sorted(
            self.versions_in(namespace),
            key=lambda v: (str(v.spec.get("createdTime") or ""), v.name),
        )
        for view in ordered:
            uri = view.spec.get("uri")
            if isinstance(uri, str):
                out[uri] = view.name
        return out

    def rollouts_of_isvc(self, namespace: str, name: str) -> list[str]:
        return [r.name for r in self.rollouts_in(namespace) if isvc_name(r.spec) == name]

    def rollouts_considering(self, namespace: str, version: dict[str, Any]) -> list[str]:
        """The rollouts whose plan sees this version (a version event wakes them)."""
        view = version_view(version)
        out = []
        for r in self.rollouts_in(namespace):
            if rollout_versions(r.spec, r.status, [view], None):
                out.append(r.name)
        return out

    # -- a ModelRollout ---------------------------------------------------------------
    async def reconcile_rollout(self, body: dict[str, Any]) -> list[Action]:
        res = resource_view(body)
        now = datetime.now(UTC)
        held_by = holder(res, self.rollouts_in(res.namespace))
        if held_by is not None:
            actions = conflict_plan(res, held_by, now)
            await self.applier.apply(res, actions)
            return actions
        observed = await self._observe(body, res, now)
        actions = cleared(plan_rollout(observed, self.config, now), res, now)
        record_rollout(observed, actions)
        await self.applier.apply(res, actions)
        return actions

    async def _observe(
        self, body: dict[str, Any], res: ResourceView, now: datetime
    ) -> RolloutObserved:
        gate = await observe_gate(
            self.policies, self.secrets, ROLLOUT_KIND, res.namespace, res.spec
        )
        target = isvc_name(res.spec)
        isvc, missing = (None, None)
        if target is not None:
            isvc, missing = await self.isvcs.observe(res.namespace, target)
        versions = rollout_versions(
            res.spec,
            res.status,
            self.versions_in(res.namespace),
            isvc.storage_uri if isvc is not None else None,
        )
        jobs = (await self.observer.observe(body)).jobs
        current = res.status.get("current") or {}
        eval_job = jobs.get(str(current.get("evaluationJob") or ""))
        analysis = None
        if analysis_due(res, now):
            analysis = await self.query_analysis(res, gate, now)
        return RolloutObserved(
            resource=res,
            versions=versions,
            isvc=isvc,
            isvc_missing_reason=missing,
            analysis=analysis,
            eval_job=eval_job,
            gate=gate,
            registry_configured=bool(self.config.mlflow_url),
        )

    async def query_analysis(
        self, res: ResourceView, gate: Gate, now: datetime
    ) -> QueryOutcome | None:
        """The canary analysis query; every failure is an outcome with a reason (the step
        holds), never an exception. A URL or Secret the policy refuses is not queried."""
        try:
            spec = ModelRolloutSpec.model_validate(res.spec)
        except ValidationError:
            return None
        analysis: Analysis | None = spec.canary.analysis
        if analysis is None:
            return None
        refused = refusal(ROLLOUT_KIND, spec, gate)
        if refused is not None:
            return QueryOutcome(now, error=refused.message[:1024], error_reason="PolicyViolation")
        return await query_for(self.secrets, res.namespace, res.name, analysis, now, "analysis")

    # -- an UnlearnRequest's deletion in serving -------------------------------------
    def with_deletion_effect(self, res: ResourceView, actions: list[Action]) -> list[Action]:
        """The request's plan with its deletion effect folded in (and the gauge set)."""
        now = datetime.now(UTC)
        effect = deletion_effect(
            res, self.versions_in(res.namespace), self.rollouts_in(res.namespace), now
        )
        out = deletion_plan(actions, res, effect, now)
        for action in out:
            if isinstance(action, MetricUpdate) and action.name in GAUGES:
                labels = action.labels
                GAUGES[action.name].labels(labels["namespace"], labels["name"], labels["kind"]).set(
                    action.value
                )
        return out
