"""Recording what a ModelRollout's reconcile decided as metrics (declared in
`metrics.py`): gate verdicts, promotions and rollbacks, the canary's share.

Read from the plan's writes against what was observed, so each decision counts once:
a history entry the status did not have yet (Promoted, RolledBack), a version
evaluation its status did not hold yet (gate passed or failed). The canary gauge is the
percent the rollout has set on the InferenceService for its candidate (0 without one).
"""

from typing import Any

from modelops_operator import metrics
from modelops_operator.reconcile.actions import Action, PatchModelVersionStatus, PatchStatus
from modelops_operator.reconcile.observed import RolloutObserved
from modelops_operator.reconcile.status_patch import apply_merge_patch


def _entries(status: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (str(h.get("version")), str(h.get("outcome")), str(h.get("time")))
        for h in status.get("history") or []
        if isinstance(h, dict)
    }


def canary_percent(status: dict[str, Any]) -> float:
    """The candidate's share of traffic as last set (0: no candidate takes traffic)."""
    current, applied = status.get("current") or {}, status.get("applied") or {}
    if not current or int(current.get("step", -1)) < 0:
        return 0.0
    percent = applied.get("canaryTrafficPercent")
    if applied.get("storageUri") != current.get("uri"):
        return 0.0
    return float(percent) if isinstance(percent, int) else 100.0


def record_rollout(observed: RolloutObserved, actions: list[Action]) -> None:
    res = observed.resource
    labels = (res.namespace, res.name, res.kind)
    patch: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, PatchStatus):
            patch.update(action.patch)
    after = apply_merge_patch(res.status, patch)
    for _, outcome, _ in _entries(after) - _entries(res.status):
        if outcome == "Promoted":
            metrics.PROMOTIONS.labels(*labels).inc()
        elif outcome == "RolledBack":
            metrics.ROLLBACKS.labels(*labels).inc()
    known = {v.name: v.status for v in observed.versions}
    for action in actions:
        if not isinstance(action, PatchModelVersionStatus):
            continue
        verdict = action.patch.get("evaluation")
        if not isinstance(verdict, dict) or (known.get(action.name) or {}).get("evaluation"):
            continue
        counter = metrics.GATE_PASSES if verdict.get("passed") else metrics.GATE_FAILURES
        counter.labels(*labels).inc()
    metrics.CANARY_PERCENT.labels(*labels).set(canary_percent(after))
