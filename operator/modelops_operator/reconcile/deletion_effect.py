"""Whether an UnlearnRequest's deletion is effective in serving yet (pure).

An unlearned model that is not deployed has forgotten nothing as far as served
predictions go. For a succeeded UnlearnRequest with a recorded version V (its
`status.modelVersion`), whose parent P (the model it unlearned from: V's base parent)
serves or served through a ModelRollout:
- a ModelRollout whose serving version S descends from P (S is P, or P is among S's
  ancestors through the versions' parents) but not from V still serves the deleted
  samples: the deletion is pending, since the request's success
  (`status.deletionPendingSince`), condition DeletionEffective False reason
  DeletionPending naming the InferenceService; past that rollout's
  `spec.unlearning.maxDelay` the reason is DeletionOverdue and a Warning Event fires
  once (the metric modelops_deletion_pending_seconds drives the alert);
- once no rollout serves such an S and one serves V or a version made from V, it is
  effective: `status.deletionEffective` {time (when that version became the default),
  inferenceService, version}, condition DeletionEffective True. It stays recorded.
A request whose parent never served (no rollout serves P's line, none serves V's)
gets none of these fields: there was nothing to take out of service.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelops_api.durations import parse_duration
from modelops_api.times import parse_time
from modelops_api.unlearn_request import UnlearnRequestStatus
from modelops_operator.reconcile.actions import Action, MetricUpdate, RecordEvent
from modelops_operator.reconcile.conditions import get_condition
from modelops_operator.reconcile.extra_status import ConditionUpdate, with_status
from modelops_operator.reconcile.observed import ResourceView, VersionView
from modelops_operator.reconcile.status_patch import desired_status

CONDITION = "DeletionEffective"
PENDING, OVERDUE, EFFECTIVE = "DeletionPending", "DeletionOverdue", "DeletionEffective"
PENDING_METRIC = "modelops_deletion_pending_seconds"
MAX_DELAY_METRIC = "modelops_deletion_max_delay_seconds"
DEFAULT_MAX_DELAY = "24h"
MAX_DEPTH = 64
"""Lineage is followed this many versions back at most (a cycle cannot loop)."""


@dataclass(frozen=True)
class Effect:
    """What the request's status should say about serving."""

    pending_since: datetime | None
    effective: dict[str, Any] | None
    """Wire form {time, inferenceService, version}."""
    condition: ConditionUpdate
    pending_seconds: float
    overdue: bool
    max_delay_seconds: float | None = None
    """The deadline of the rollout(s) still serving the deleted samples (pending only)."""


def ancestors(name: str, parents: dict[str, list[str]]) -> set[str]:
    """`name` and every version it was made from (through the versions' parents)."""
    seen: set[str] = set()
    todo = [(name, 0)]
    while todo:
        current, depth = todo.pop()
        if current in seen or depth > MAX_DEPTH:
            continue
        seen.add(current)
        todo.extend((p, depth + 1) for p in parents.get(current, []))
    return seen


def _lineage(versions: list[VersionView]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(version -> parent versions, uri -> version) over the namespace's versions."""
    by_uri = {str(v.spec.get("uri")): v.name for v in versions if v.spec.get("uri")}
    parents: dict[str, list[str]] = {}
    for v in versions:
        found = []
        for p in v.spec.get("parents") or []:
            name = p.get("version") or by_uri.get(str(p.get("uri")))
            if name and name != v.name:
                found.append(str(name))
        parents[v.name] = found
    return parents, by_uri


def _base_parent(version: VersionView, by_uri: dict[str, str]) -> str | None:
    for p in version.spec.get("parents") or []:
        if p.get("role") == "base":
            return p.get("version") or by_uri.get(str(p.get("uri")))
    return None


def _max_delay(rollout: ResourceView) -> float:
    text = (rollout.spec.get("unlearning") or {}).get("maxDelay") or DEFAULT_MAX_DELAY
    try:
        return parse_duration(str(text))
    except ValueError:
        return parse_duration(DEFAULT_MAX_DELAY)


def _isvc(rollout: ResourceView) -> str:
    return str((rollout.spec.get("inferenceService") or {}).get("name") or rollout.name)


def deletion_effect(
    request: ResourceView,
    versions: list[VersionView],
    rollouts: list[ResourceView],
    now: datetime,
) -> Effect | None:
    """The deletion's effect in serving, or None when it does not apply (not succeeded,
    no version recorded, its parent never served)."""
    st = request.status
    mine = st.get("modelVersion")
    done = parse_time(st.get("completionTime"))
    if st.get("phase") != "Succeeded" or not mine or done is None:
        return None
    if st.get("deletionEffective"):
        return _effective(st["deletionEffective"])
    parents, by_uri = _lineage(versions)
    own = next((v for v in versions if v.name == mine), None)
    unlearned = _base_parent(own, by_uri) if own is not None else None
    tainted: list[ResourceView] = []
    cleaned: list[tuple[ResourceView, str]] = []
    for rollout in sorted(rollouts, key=lambda r: r.name):
        serving = rollout.status.get("servingVersion")
        if not serving:
            continue
        line = ancestors(str(serving), parents)
        if mine in line:
            cleaned.append((rollout, str(serving)))
        elif unlearned is not None and unlearned in line:
            tainted.append(rollout)
    if tainted:
        return _pending(tainted, done, now)
    if cleaned:
        rollout, serving = cleaned[0]
        since = parse_time(rollout.status.get("servingSince")) or now
        return _effective({"time": since, "inferenceService": _isvc(rollout), "version": serving})
    return None


def _pending(tainted: list[ResourceView], since: datetime, now: datetime) -> Effect:
    waited = max((now - since).total_seconds(), 0.0)
    deadline = min(_max_delay(r) for r in tainted)
    overdue = waited > deadline
    names = ", ".join(sorted({_isvc(r) for r in tainted}))
    message = (
        f"InferenceService {names} still serves a version made from the model the samples"
        f" were deleted from (pending since {since.strftime('%Y-%m-%dT%H:%M:%SZ')})"
    )
    if overdue:
        message += "; past the ModelRollout's spec.unlearning.maxDelay"
    reason = OVERDUE if overdue else PENDING
    return Effect(since, None, (CONDITION, "False", reason, message), waited, overdue, deadline)


def _effective(record: dict[str, Any]) -> Effect:
    message = (
        f"ModelVersion {record['version']} serves as InferenceService"
        f" {record['inferenceService']}'s default: the deleted samples are out of service"
    )
    return Effect(None, record, (CONDITION, "True", EFFECTIVE, message), 0.0, False)


def deletion_plan(
    actions: list[Action], res: ResourceView, effect: Effect | None, now: datetime
) -> list[Action]:
    """`actions` (the request's own plan) with the effect folded into its status write,
    the overdue Event once, and the pending-seconds gauge."""
    labels = {"namespace": res.namespace, "name": res.name, "kind": res.kind}
    if effect is None:
        return [*actions, MetricUpdate(PENDING_METRIC, 0.0, labels)]
    record = effect.effective
    fields = desired_status(  # through the status model: its names, limits, time format
        UnlearnRequestStatus,
        deletion_pending_since=effect.pending_since,
        deletion_effective=record,
    )
    out = with_status(actions, res.status, now, res.generation, (effect.condition,), fields)
    held = get_condition(list(res.status.get("conditions") or []), CONDITION)
    if effect.overdue and (held is None or held.get("reason") != OVERDUE):
        out.append(RecordEvent("Warning", OVERDUE, effect.condition[3]))
    if record is not None and (held is None or held.get("status") != "True"):
        out.append(RecordEvent("Normal", EFFECTIVE, effect.condition[3]))
    out.append(MetricUpdate(PENDING_METRIC, effect.pending_seconds, labels))
    if effect.max_delay_seconds is not None:
        out.append(MetricUpdate(MAX_DELAY_METRIC, effect.max_delay_seconds, labels))
    return out
