"""The ModelRollout state machine: (observed, config, now) -> a plan of actions.

How the service uses it (helper "wire"):
- Observe a `RolloutObserved`: the ModelRollout, the ModelVersions of its candidates and
  the UnlearnRequest versions whose parent is its serving version (oldest first), the
  InferenceService (None with `isvc_missing_reason` InferenceServiceNotFound or
  KServeNotInstalled), the evaluation Job of the current candidate (the Job named
  `status.current.evaluationJob`, or `build.evaluation.evaluation_job_name(rollout,
  candidate's manifest digest)`), the policy, and whether MLflow is configured.
- Before planning, call `analysis_due(resource, now)`; when True, run
  `spec.canary.analysis` against Prometheus (the drift query code; a URL the policy
  does not allow is not queried: pass QueryOutcome(error_reason="PolicyViolation"))
  and pass the outcome as `observed.analysis`.
- Carry the plan out in order: Job/ConfigMap actions, PatchModelVersionStatus,
  PatchStatus, PatchInferenceService, RegisterVersion / SetRegistryAliases (record
  their results in the version's status.registry / the rollout's
  status.registryAliases), Events, RequeueAfter. A PatchInferenceService may come
  without a PatchStatus when it re-makes the patch `status.applied` already records
  (the operator stopped between the two).

The machine (phases: rollout_status.RolloutPhase):
- No InferenceService: Paused (reason InferenceServiceNotFound / KServeNotInstalled);
  nothing is touched; resumes when it exists.
- Adoption: nothing recorded yet: the ISVC's storageUri is the serving URI, and the
  version with that URI (if one is observed) the serving version. Otherwise the first
  candidate rolls out against no baseline (Serving gate rules pass, saying so).
- Hand edit: the ISVC's storageUri/canaryTrafficPercent equal neither `applied` nor
  the state it replaced (rollout_state.py): Paused, reason InferenceServiceEditedByHand;
  nothing is touched until it matches `applied` again. Rejecting the candidate while
  paused rolls back as usual (restoring the serving URI, over the hand edit: the
  rejection is an explicit instruction to take the candidate out).
- Candidate selection and superseding: rollout_select.py. Gate and approval:
  rollout_gate.py. Canary, promotion, rollback: rollout_canary.py. Versions' serving
  records, registry, deletion effectiveness: rollout_versions.py.
- Rejection (annotation modelops.dev/reject=<current version>): before any traffic the
  candidate is Rejected; in canary it is rolled back; a promotion is not undone.
"""

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelops_api.durations import parse_duration
from modelops_api.model_rollout import ANNOTATION_REJECT, ModelRolloutSpec
from modelops_api.model_version import ModelVersionStatus, VersionPhase
from modelops_api.rollout_status import ModelRolloutStatus, RolloutPhase
from modelops_api.validation import spec_error_message
from modelops_operator.config import OperatorConfig
from modelops_operator.reconcile.actions import (
    Action,
    PatchInferenceService,
    PatchModelVersionStatus,
    PatchStatus,
    RecordEvent,
    RequeueAfter,
)
from modelops_operator.reconcile.conditions import get_condition, set_condition
from modelops_operator.reconcile.observed import ResourceView, RolloutObserved
from modelops_operator.reconcile.policy import (
    Refusal,
    cleared_conditions,
    refusal,
    refused_conditions,
)
from modelops_operator.reconcile.rollout_canary import (
    canary_step,
    go_to_step,
    promoting_step,
    rollback,
    rolling_back_step,
)
from modelops_operator.reconcile.rollout_gate import approval_step, gate_step
from modelops_operator.reconcile.rollout_select import (
    add_history,
    decided,
    is_unlearning,
    select_step,
)
from modelops_operator.reconcile.rollout_state import (
    Draft,
    before_state,
    isvc_patch,
    observed_state,
    parse_versions,
)
from modelops_operator.reconcile.rollout_versions import (
    cur_in_canary,
    deletion_step,
    open_record,
    registry_actions,
)
from modelops_operator.reconcile.status_patch import (
    desired_status,
    status_patch,
    typed_status_patch,
)

__all__ = ["analysis_due", "plan_rollout"]


def analysis_due(resource: ResourceView, now: datetime) -> bool:
    """Whether the service should run the analysis query now: a canary step holds
    (its clock started) and the last query is older than analysis.interval."""
    try:
        spec = ModelRolloutSpec.model_validate(resource.spec)
        st = ModelRolloutStatus.model_validate(resource.status or {})
    except ValidationError:
        return False
    a, cur = spec.canary.analysis, st.current
    if a is None or cur is None or cur.step_start_time is None:
        return False
    if st.phase != RolloutPhase.CANARY.value:
        return False
    last = cur.analysis.last_query_time if cur.analysis else None
    if last is None or last < cur.step_start_time:
        return True
    return (now - last).total_seconds() >= parse_duration(a.interval)


def pause(d: Draft, reason: str, message: str) -> None:
    if d.st.phase != RolloutPhase.PAUSED.value:
        d.event("Warning", "Paused", message)
    d.condition("Paused", "True", reason, message)
    d.set(phase=RolloutPhase.PAUSED.value, message=message[:2048])


def adopt_step(d: Draft) -> None:
    """Nothing recorded yet: what the ISVC serves is the baseline."""
    st, isvc = d.st, d.obs.isvc
    if st.serving_uri is not None or st.current is not None or st.applied is not None:
        return
    state = observed_state(isvc) if isvc is not None else None
    if state is None:
        return
    match = [v for v in d.versions.values() if v.spec.uri == state.storage_uri]
    version = max(match, key=lambda v: v.order()) if match else None
    d.set(serving_uri=state.storage_uri, serving_since=d.now, applied=state)
    if version is None:
        d.event("Normal", "Adopted", f"serving {state.storage_uri} (no recorded version)")
        return
    d.set(serving_version=version.name)
    d.change_version(version.name, phase=VersionPhase.SERVING.value)
    open_record(d, version.name, "default")
    d.event("Normal", "Adopted", f"serving {version.name} ({state.storage_uri})")


def edited_by_hand(d: Draft) -> bool:
    """Whether the ISVC was edited by hand (then Paused); re-makes an interrupted
    write-ahead patch when the ISVC still shows the state `applied` replaced."""
    isvc, applied = d.obs.isvc, d.st.applied
    assert isvc is not None
    state = observed_state(isvc)
    if applied is None or state == applied:
        return False
    if state == before_state(d.spec, d.st):
        d.isvc_patch = isvc_patch(applied)
        return False
    shown = f"{state.storage_uri} at {state.canary_traffic_percent}%" if state else "no model"
    message = (
        f"InferenceService {isvc.name} was edited by hand: it serves {shown}, the rollout"
        f" set {applied.storage_uri} at {applied.canary_traffic_percent}%; nothing is"
        " touched until it matches again (or reject the candidate to roll back)"
    )
    pause(d, "InferenceServiceEditedByHand", message)
    return True


def reject_step(d: Draft) -> bool:
    """modelops.dev/reject names the current candidate: Rejected before traffic,
    rolled back in canary. True when it acted."""
    cur = d.st.current
    if cur is None or d.obs.resource.annotations.get(ANNOTATION_REJECT) != cur.version:
        return False
    message = f"rejected by annotation {ANNOTATION_REJECT}={cur.version}"
    if cur.step < 0:
        add_history(d, cur.version, "Rejected", message)
        d.change_version(cur.version, phase=VersionPhase.REJECTED.value, rollout_message=message)
        d.event("Normal", "Rejected", f"{cur.version}: {message}")
        d.condition("AwaitingApproval", "False", "Rejected", message)
        d.set(current=None, phase=RolloutPhase.IDLE.value, message=message)
        return True
    if cur_in_canary(d):
        rollback(d, message)
        return True
    return False


def advance(d: Draft) -> None:
    """One step of the machine for the current candidate."""
    cur, applied = d.st.current, d.st.applied
    if cur is None:
        d.set(phase=RolloutPhase.IDLE.value)
        return
    if applied is not None and cur.step >= 0:
        if applied.storage_uri != cur.uri:
            d.set(phase=RolloutPhase.ROLLING_BACK.value)
            rolling_back_step(d)
        elif applied.canary_traffic_percent is None:
            d.set(phase=RolloutPhase.PROMOTING.value)
            promoting_step(d)
        else:
            d.set(phase=RolloutPhase.CANARY.value)
            canary_step(d)
        return
    if gate_step(d) and approval_step(d) and kserve_serves(d):
        go_to_step(d, 0)


def kserve_serves(d: Draft) -> bool:
    """Whether KServe has served the InferenceService's current spec (Ready, and its
    observedGeneration caught up), so a canary can be split from a rolled-out revision.
    Patched earlier, KServe's first revision would be the canary's with all of the
    traffic, and the step would wait forever for its split (a defect the e2e tier
    found). An InferenceService with no model has nothing to split from: no wait."""
    isvc = d.obs.isvc
    assert isvc is not None
    if isvc.storage_uri is None:
        return True
    caught_up = isvc.observed_generation is not None and isvc.observed_generation >= isvc.generation
    if caught_up and isvc.ready:
        return True
    message = (
        f"waiting for KServe to serve InferenceService {isvc.name} (generation"
        f" {isvc.generation}, observed {isvc.observed_generation}, ready {isvc.ready})"
        " before the canary"
    )
    # The candidate is in its canary stage, before its first step: never left showing a
    # phase it no longer is in (Paused after a hand edit was undone, Idle, ...).
    d.set(phase=RolloutPhase.CANARY.value, message=message)
    d.after(5.0)
    return False


def body(d: Draft) -> None:
    isvc = d.obs.isvc
    if isvc is None:
        reason = d.obs.isvc_missing_reason or "InferenceServiceNotFound"
        name = d.spec.inference_service.name
        pause(d, reason, f"InferenceService {name} not found ({reason}); nothing is touched")
        return
    adopt_step(d)
    paused = edited_by_hand(d)
    rejected = reject_step(d)
    if paused and not rejected:
        return
    if get_condition(d.conds, "Paused"):
        d.condition("Paused", "False", "Resumed", "the rollout acts on the InferenceService again")
    if rejected:
        return
    select_step(d)
    advance(d)


def summary(d: Draft) -> None:
    """Ready, and DeletionEffective over the UnlearnRequest versions considered."""
    idle = d.st.phase == RolloutPhase.IDLE.value
    serving = d.st.serving_version or d.st.serving_uri or "nothing"
    d.condition(
        "Ready",
        "True" if idle else "False",
        "Idle" if idle else str(d.st.phase),
        f"serving {serving}" if idle else (d.st.message or str(d.st.phase)),
    )
    moving = d.st.current is not None and d.st.phase != RolloutPhase.PAUSED.value
    d.condition(
        "Progressing",
        "True" if moving else "False",
        str(d.st.phase) if moving else ("Paused" if d.st.phase == "Paused" else "NoCandidate"),
        (d.st.message or str(d.st.phase)) if moving else f"serving {serving}",
    )
    if d.st.current is None:  # no step holds: no analysis to report
        d.conds = [c for c in d.conds if c.get("type") != "AnalysisHealthy"]
    known = decided(d)
    considered = [
        v
        for v in d.versions.values()
        if v.spec.source.kind == "UnlearnRequest" and (v.name in known or is_unlearning(d, v))
    ]
    deletion_step(d, considered)


def actions(d: Draft) -> list[Action]:
    """The plan, in the order the service carries it out (see the module docstring)."""
    res = d.obs.resource
    out: list[Action] = list(d.jobs)
    for name, changes in d.version_changes.items():
        patch = typed_status_patch(ModelVersionStatus, d.versions[name].raw_status, **changes)
        if patch:
            out.append(PatchModelVersionStatus(name, patch))
    fields: dict[str, Any] = {n: getattr(d.st, n) for n in ModelRolloutStatus.model_fields}
    fields.update(conditions=d.conds, observed_generation=res.generation)
    # not typed_status_patch: its `current` parameter is also a field of this status
    patch = status_patch(res.status, desired_status(ModelRolloutStatus, **fields))
    if patch:
        out.append(PatchStatus(patch))
    if d.isvc_patch is not None:
        out.append(PatchInferenceService(d.spec.inference_service.name, d.isvc_patch))
    out.extend(registry_actions(d))
    out.extend(d.events)
    if d.requeue:
        out.append(RequeueAfter(min(d.requeue)))
    return out


def invalid_plan(res: ResourceView, message: str, now: datetime) -> list[Action]:
    conds = set_condition(
        res.status.get("conditions", []),
        "SpecValid",
        "False",
        "InvalidSpec",
        message,
        now,
        res.generation,
    )
    patch = typed_status_patch(
        ModelRolloutStatus, res.status, conditions=conds, message=message[:2048]
    )
    if not patch:
        return []
    return [PatchStatus(patch), RecordEvent("Warning", "InvalidSpec", message[:1024])]


def refused_rollout_plan(res: ResourceView, refused: Refusal, now: datetime) -> list[Action]:
    """The ModelOpsPolicy refuses the rollout (a rollout admitted before the policy was
    tightened, or a Secret not opted in): PolicyViolation, and nothing is touched (no
    evaluation Job, no InferenceService patch, no query) until it is allowed again; a
    canary in progress holds where it is."""
    status = res.status
    before = get_condition(status.get("conditions", []), "PolicyViolation")
    if before and before.get("status") == "True" and before.get("message") == refused.message:
        return []
    conds = refused_conditions(status.get("conditions", []), refused, now, res.generation)
    patch = typed_status_patch(
        ModelRolloutStatus, status, conditions=conds, message=refused.message[:2048]
    )
    return [PatchStatus(patch), RecordEvent("Warning", refused.reason, refused.message[:1024])]


def plan_rollout(observed: RolloutObserved, config: OperatorConfig, now: datetime) -> list[Action]:
    """Everything the rollout does now (see the module docstring)."""
    res = observed.resource
    if res.deleting:
        return []
    try:
        spec = ModelRolloutSpec.model_validate(res.spec)
    except ValidationError as exc:
        return invalid_plan(res, spec_error_message(exc), now)
    st = ModelRolloutStatus.model_validate(res.status or {})
    conds = list(res.status.get("conditions", []))
    refused = refusal(res.kind, spec, observed.gate)
    if refused is not None:
        return refused_rollout_plan(res, refused, now)
    conds = cleared_conditions(conds, now, res.generation)
    d = Draft(observed, spec, config, now, st, conds, parse_versions(observed))
    d.condition("SpecValid", "True", "Valid", "spec is valid")
    body(d)
    summary(d)
    return actions(d)
