"""One ModelRollout per InferenceService: which one acts when two name the same one.

Two rollouts patching one InferenceService would fight over its storageUri, so exactly
one acts: the older (creationTimestamp, then name, so the choice is total and every
replica of the operator makes the same one). The other does nothing but say so:
condition Conflict True naming the rollout that holds the InferenceService, and a
Warning Event when that starts. Once it is alone (the other deleted, or either now
names another InferenceService) Conflict turns False and it proceeds.
"""

from datetime import UTC, datetime
from typing import Any

from modelops_operator.reconcile.actions import Action, RecordEvent
from modelops_operator.reconcile.conditions import get_condition
from modelops_operator.reconcile.extra_status import with_status
from modelops_operator.reconcile.observed import ResourceView

CONFLICT = "Conflict"
_LATEST = datetime.max.replace(tzinfo=UTC)


def isvc_name(spec: dict[str, Any]) -> str | None:
    ref = spec.get("inferenceService")
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) and name else None


def holder(rollout: ResourceView, others: list[ResourceView]) -> str | None:
    """The name of the older ModelRollout (same namespace) that holds the
    InferenceService `rollout` names, or None when `rollout` itself holds it."""
    target = isvc_name(rollout.spec)
    if target is None:
        return None
    rivals = [
        o
        for o in others
        if o.name != rollout.name
        and o.namespace == rollout.namespace
        and not o.deleting
        and isvc_name(o.spec) == target
    ]
    oldest = min([rollout, *rivals], key=lambda r: (r.creation_time or _LATEST, r.name))
    return None if oldest.name == rollout.name else oldest.name


def conflict_plan(res: ResourceView, held_by: str, now: datetime) -> list[Action]:
    """The plan of a rollout that must not act: Conflict True (and an Event once)."""
    target = isvc_name(res.spec)
    message = (
        f"ModelRollout {held_by} is older and rolls out InferenceService {target}; this one"
        " does nothing while both name it (delete one, or point this one at another)"
    )
    actions: list[Action] = with_status(
        [],
        res.status,
        now,
        res.generation,
        ((CONFLICT, "True", "InferenceServiceClaimed", message),),
    )
    held = get_condition(list(res.status.get("conditions") or []), CONFLICT)
    if held is None or held.get("status") != "True":
        actions.append(RecordEvent("Warning", "InferenceServiceClaimed", message))
    return actions


def cleared(actions: list[Action], res: ResourceView, now: datetime) -> list[Action]:
    """A rollout that holds its InferenceService: Conflict False if it was True."""
    held = get_condition(list(res.status.get("conditions") or []), CONFLICT)
    if held is None or held.get("status") != "True":
        return actions
    message = f"this ModelRollout alone names InferenceService {isvc_name(res.spec)}"
    return with_status(
        actions, res.status, now, res.generation, ((CONFLICT, "False", "Sole", message),)
    )
