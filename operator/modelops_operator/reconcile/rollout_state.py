"""The rollout's working state for one plan: the draft, the versions, the ISVC states.

`rollout.py` builds a `Draft` from what is observed, the steps (`rollout_gate.py`,
`rollout_canary.py`, `rollout_select.py`, `rollout_versions.py`) change it, and
`rollout.py` turns it into actions. Nothing here talks to the API server.

The InferenceService states the machine knows (`IsvcState`: storageUri and
canaryTrafficPercent) follow from the persisted status alone:
- serving state: (serving URI, no canary);
- canary step i: (candidate URI, steps[i]); the last step (100): (candidate URI, no
  canary), which is the promotion;
- `applied` is what the operator last wrote (write-ahead), and `before` the state it
  replaced: step i-1's, or the serving state for the first step and for every state
  written while no candidate held traffic; the candidate's last step for a rollback.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelops_api.durations import parse_duration
from modelops_api.model_rollout import ModelRolloutSpec
from modelops_api.model_version import ModelVersionSpec, ModelVersionStatus
from modelops_api.rollout_status import CurrentRollout, IsvcState, ModelRolloutStatus
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile.actions import Action, RecordEvent
from modelops_operator.reconcile.conditions import set_condition
from modelops_operator.reconcile.observed import InferenceServiceView, RolloutObserved

MIN_REQUEUE = 0.2


@dataclass(frozen=True)
class Version:
    """A ModelVersion as parsed (one that does not parse is left out)."""

    name: str
    spec: ModelVersionSpec
    status: ModelVersionStatus
    raw_status: dict[str, Any]

    def order(self) -> tuple[datetime, str]:
        """Newer sorts later: by creation time, then name."""
        return (self.spec.created_time, self.name)


def parse_versions(obs: RolloutObserved) -> dict[str, Version]:
    out: dict[str, Version] = {}
    for view in obs.versions:
        try:
            spec = ModelVersionSpec.model_validate(view.spec)
            status = ModelVersionStatus.model_validate(view.status or {})
        except ValidationError:
            continue
        out[view.name] = Version(view.name, spec, status, dict(view.status or {}))
    return out


@dataclass
class Draft:
    """The plan being drawn up: the working status (validated at the end through
    `ModelRolloutStatus`), conditions, version status changes, actions and Events."""

    obs: RolloutObserved
    spec: ModelRolloutSpec
    config: OperatorConfig
    now: datetime
    st: ModelRolloutStatus
    conds: list[dict[str, Any]]
    versions: dict[str, Version]
    jobs: list[Action] = field(default_factory=list)
    version_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Version name -> ModelVersionStatus fields (Python names) to write."""
    isvc_patch: dict[str, Any] | None = None
    events: list[RecordEvent] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.obs.resource.name

    def set(self, **changes: Any) -> None:
        self.st = self.st.model_copy(update=changes)

    def set_current(self, **changes: Any) -> None:
        assert self.st.current is not None
        self.set(current=self.st.current.model_copy(update=changes))

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        gen = self.obs.resource.generation
        self.conds = set_condition(self.conds, type_, status, reason, message, self.now, gen)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(RecordEvent(type_, reason, message[:1024]))

    def version_status(self, name: str) -> ModelVersionStatus | None:
        """The version's status with this plan's changes applied (None: not observed)."""
        version = self.versions.get(name)
        if version is None:
            return None
        changes = self.version_changes.get(name, {})
        return version.status.model_copy(update=changes)

    def change_version(self, name: str, **changes: Any) -> None:
        if name in self.versions:
            self.version_changes.setdefault(name, {}).update(changes)

    def after(self, seconds: float) -> None:
        """Look again in `seconds` (at least MIN_REQUEUE: never a busy loop)."""
        self.requeue.append(max(seconds, MIN_REQUEUE))


def steps(spec: ModelRolloutSpec) -> list[int]:
    return list(spec.canary.steps)


def interval_seconds(spec: ModelRolloutSpec) -> float:
    return parse_duration(spec.canary.interval)


def serving_state(st: ModelRolloutStatus) -> IsvcState | None:
    if st.serving_uri is None:
        return None
    return IsvcState(storage_uri=st.serving_uri, canary_traffic_percent=None)


def step_state(spec: ModelRolloutSpec, cur: CurrentRollout, index: int) -> IsvcState:
    """The ISVC state of canary step `index`; the last step (100) is the promotion."""
    all_steps = steps(spec)
    percent = None if index >= len(all_steps) - 1 else all_steps[index]
    return IsvcState(storage_uri=cur.uri, canary_traffic_percent=percent)


def before_state(spec: ModelRolloutSpec, st: ModelRolloutStatus) -> IsvcState | None:
    """The state `applied` replaced (see the module docstring)."""
    cur, applied = st.current, st.applied
    if cur is None or cur.step < 0 or applied is None:
        return serving_state(st) if applied != serving_state(st) else None
    if applied.storage_uri != cur.uri:  # a rollback: it replaced the last canary step
        return step_state(spec, cur, cur.step)
    if cur.step == 0:
        return serving_state(st)
    return step_state(spec, cur, cur.step - 1)


def observed_state(isvc: InferenceServiceView) -> IsvcState | None:
    if isvc.storage_uri is None:
        return None
    try:
        return IsvcState(
            storage_uri=isvc.storage_uri, canary_traffic_percent=isvc.canary_traffic_percent
        )
    except ValidationError:
        return None


def isvc_patch(state: IsvcState) -> dict[str, Any]:
    """The merge patch that makes the ISVC's predictor `state` (None removes the canary)."""
    return {
        "spec": {
            "predictor": {
                "model": {"storageUri": state.storage_uri},
                "canaryTrafficPercent": state.canary_traffic_percent,
            }
        }
    }


def reports(isvc: InferenceServiceView, state: IsvcState) -> bool:
    """The ISVC shows `state` applied: its spec, Ready, the controller caught up with
    this generation, and (for a canary) the latest revision takes its share."""
    if observed_state(isvc) != state or not isvc.ready:
        return False
    if isvc.observed_generation is None or isvc.observed_generation < isvc.generation:
        return False
    percent = state.canary_traffic_percent
    latest = [p for _, p, is_latest in isvc.traffic if is_latest]
    if percent is None:
        return not isvc.traffic or latest == [100]
    return latest == [percent]
