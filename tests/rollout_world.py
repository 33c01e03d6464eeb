"""A small world for the rollout state machine's unit tests: the API server's side of
a ModelRollout (its status, the ModelVersions, the evaluation Job, the MLflow registry)
and a KServe stand-in for the InferenceService.

There is no KServe controller in the unit tier: `World.kserve()` plays it, writing what
it would write after acting on the spec (observedGeneration, Ready, the traffic split:
the latest revision takes canaryTrafficPercent, the previous one the rest; without a
canary the latest takes 100). Every status patch is applied with RFC 7386 merge-patch
semantics (what the API server does), checked to be strict JSON and re-parsed with
the status models, so a status the CRD would refuse fails the test.
"""

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modelops_api.model_version import ModelVersionStatus
from modelops_api.rollout_status import ModelRolloutStatus
from modelops_operator.config import OperatorConfig
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.reconcile.actions import (
    Action,
    CreateJob,
    DeleteJob,
    PatchInferenceService,
    PatchModelVersionStatus,
    PatchStatus,
    RecordEvent,
    RegisterVersion,
    SetRegistryAliases,
)
from modelops_operator.reconcile.observed import (
    InferenceServiceView,
    JobView,
    PodTermination,
    ResourceView,
    RolloutObserved,
    VersionView,
)
from modelops_operator.reconcile.rollout import plan_rollout
from modelops_operator.reconcile.status_patch import apply_merge_patch

T0 = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
ISVC = "isvc"
SERVED = "pvc://m/v0"


def version(
    name: str,
    created: datetime,
    source: tuple[str, str] = ("ModelAdaptation", "adapt"),
    metrics: dict[str, float] | None = None,
    parents: list[dict[str, Any]] | None = None,
    uri: str | None = None,
) -> VersionView:
    """A ModelVersion as the API server stores it (spec only; status empty)."""
    spec: dict[str, Any] = {
        "uri": uri or f"pvc://m/{name}",
        "manifestDigest": "sha256:" + name.encode().hex().ljust(64, "0")[:64],
        "source": {"kind": source[0], "name": source[1], "uid": "uid-src"},
        "parents": parents or [],
        "metrics": {"perplexity": 30.0} if metrics is None else metrics,
        "createdTime": created.isoformat(),
    }
    if source[0] == "UnlearnRequest":
        spec["deletion"] = {
            "request": source[1],
            "deletedSamples": 3,
            "requestedTime": created.isoformat(),
        }
    return VersionView(name, spec, {})


def rollout_spec(**changes: Any) -> dict[str, Any]:
    """A ModelRollout spec: one candidate source, an absolute perplexity gate, canary
    10 -> 50 -> 100 held 10s each with an analysis (max 0.1) every 5s."""
    spec: dict[str, Any] = {
        "inferenceService": {"name": ISVC},
        "candidates": [{"kind": "ModelAdaptation", "name": "adapt"}],
        "gate": {
            "rules": [
                {
                    "metric": "perplexity",
                    "comparison": "LessOrEqual",
                    "baseline": "Absolute",
                    "threshold": 40.0,
                }
            ]
        },
        "canary": {
            "steps": [10, 50, 100],
            "interval": "10s",
            "analysis": {
                "prometheusUrl": "http://prometheus:9090",
                "query": "canary_error_rate",
                "max": 0.1,
                "interval": "5s",
            },
        },
    }
    spec.update(changes)
    return spec


@dataclass
class Isvc:
    uri: str | None
    percent: int | None = None
    generation: int = 1
    observed_generation: int | None = 1
    ready: bool = True
    latest_percent: int | None = 100
    """The latest revision's share as KServe last reported it (None: no traffic yet)."""

    def view(self) -> InferenceServiceView:
        traffic: tuple[tuple[str, int, bool], ...] = ()
        if self.latest_percent is not None:
            latest = ("rev-latest", self.latest_percent, True)
            rest = 100 - self.latest_percent
            traffic = (("rev-prev", rest, False), latest) if rest else (latest,)
        return InferenceServiceView(
            ISVC,
            self.generation,
            self.uri,
            self.percent,
            self.ready,
            self.observed_generation,
            traffic,
        )


@dataclass
class World:
    """The API server, KServe stand-in, Jobs and registry for one ModelRollout."""

    spec: dict[str, Any] = field(default_factory=rollout_spec)
    status: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    versions: dict[str, VersionView] = field(default_factory=dict)
    isvc: Isvc | None = field(default_factory=lambda: Isvc(SERVED))
    jobs: dict[str, JobView] = field(default_factory=dict)
    registry_configured: bool = False
    registry: dict[str, str] = field(default_factory=dict)
    now: datetime = T0
    isvc_writes: list[dict[str, Any]] = field(default_factory=list)
    events: list[RecordEvent] = field(default_factory=list)

    def add(self, view: VersionView) -> None:
        self.versions[view.name] = view

    def resource(self) -> ResourceView:
        return ResourceView(
            "ModelRollout", "ro", "ns", "uid-ro", 1, self.spec, self.status, dict(self.annotations)
        )

    def observed(self, analysis: QueryOutcome | None = None) -> RolloutObserved:
        current = self.status.get("current") or {}
        job = self.jobs.get(current.get("evaluationJob", ""))
        return RolloutObserved(
            self.resource(),
            tuple(self.versions.values()),
            self.isvc.view() if self.isvc else None,
            None if self.isvc else "InferenceServiceNotFound",
            analysis,
            job,
            registry_configured=self.registry_configured,
        )

    def plan(self, analysis: QueryOutcome | None = None) -> list[Action]:
        return plan_rollout(self.observed(analysis), OperatorConfig(), self.now)

    def step(self, analysis: QueryOutcome | None = None, prefix: int | None = None) -> list[Action]:
        """Plan and carry out the plan (only its first `prefix` actions: a crash)."""
        actions = self.plan(analysis)
        self.apply(actions[:prefix] if prefix is not None else actions)
        return actions

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            self.apply_one(a)

    def apply_one(self, a: Action) -> None:
        if isinstance(a, PatchStatus):
            json.dumps(a.patch, allow_nan=False)
            self.status = apply_merge_patch(self.status, a.patch)
            ModelRolloutStatus.model_validate(self.status)
        elif isinstance(a, PatchModelVersionStatus):
            json.dumps(a.patch, allow_nan=False)
            v = self.versions[a.name]
            new = apply_merge_patch(v.status, a.patch)
            ModelVersionStatus.model_validate(new)
            self.versions[a.name] = replace(v, status=new)
        elif isinstance(a, PatchInferenceService):
            assert a.name == ISVC and self.isvc is not None
            self.isvc_writes.append(a.patch)
            predictor = a.patch["spec"]["predictor"]
            self.isvc.uri = predictor["model"]["storageUri"]
            self.isvc.percent = predictor["canaryTrafficPercent"]
            self.isvc.generation += 1
        elif isinstance(a, CreateJob):
            name = a.manifest["metadata"]["name"]
            self.jobs.setdefault(name, JobView(name, uid=f"uid-{name}"))
        elif isinstance(a, DeleteJob):
            self.jobs.pop(a.name, None)
        elif isinstance(a, RegisterVersion):
            self.registry.setdefault(a.version, str(len(self.registry) + 1))
            v = self.versions[a.version]
            entry = {"modelName": a.model_name, "version": self.registry[a.version]}
            self.versions[a.version] = replace(v, status={**v.status, "registry": entry})
        elif isinstance(a, SetRegistryAliases):
            aliases = {"champion": a.champion, "challenger": a.challenger}
            self.status = apply_merge_patch(self.status, {"registryAliases": aliases})
        elif isinstance(a, RecordEvent):
            self.events.append(a)

    def kserve(self, ready: bool = True) -> None:
        """The KServe stand-in acts on the spec: what its controller would report."""
        assert self.isvc is not None
        self.isvc.observed_generation = self.isvc.generation
        self.isvc.ready = ready
        self.isvc.latest_percent = 100 if self.isvc.percent is None else self.isvc.percent

    def finish_eval(
        self, candidate: dict[str, Any], baseline: dict[str, Any] | None = None, ok: bool = True
    ) -> None:
        """The evaluation Job completes (or fails) with these scores."""
        name = (self.status.get("current") or {}).get("evaluationJob")
        assert name, "no evaluation Job"
        results = {
            "candidate": candidate,
            **({"baseline": baseline} if baseline is not None else {}),
        }
        message = json.dumps(
            {
                "ok": ok,
                "reason": "Succeeded" if ok else "EvalFailed",
                "message": "",
                "results": results,
            }
        )
        cond = "Complete" if ok else "Failed"
        self.jobs[name] = JobView(
            name,
            uid=f"uid-{name}",
            succeeded=int(ok),
            failed=int(not ok),
            conditions={cond: ("True", "", "")},
            terminations=(PodTermination(f"{name}-pod", 0 if ok else 3, message),),
        )

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def version_phase(self, name: str) -> str | None:
        return self.versions[name].status.get("phase")


# -- helpers of the plan tests ---------------------------------------------------


def kinds(actions):
    return [
        type(a).__name__ + (f":{a.reason}" if isinstance(a, RecordEvent) else "") for a in actions
    ]


def cond(world, type_):
    return next((c for c in world.status.get("conditions", []) if c["type"] == type_), None)


def world_with(*names, **spec):
    w = World(spec=rollout_spec(**spec))
    w.add(version("v0", T0 - timedelta(hours=3), uri=SERVED))
    for i, name in enumerate(names):
        w.add(version(name, T0 - timedelta(hours=2 - i)))
    return w


def in_bounds(w, value=0.05):
    return QueryOutcome(w.now, value)


def to_canary(w):
    """Adopt v0, take v1, pass the gate, apply step 1 and let KServe report it."""
    w.step()
    w.kserve()
    w.step()
    assert w.status["current"]["stepStartTime"]


def promote(w):
    to_canary(w)
    for _ in range(10):
        w.tick(5)
        w.step(in_bounds(w))
        w.kserve()
        if w.status["phase"] != "Canary":
            break


EVAL_GATE = {
    "rules": [{"metric": "perplexity", "comparison": "LessOrEqual", "tolerance": 0.02}],
    "evaluation": {"data": {"uri": "pvc://d/heldout.jsonl"}},
}
