"""Fold more status into a plan's status write, as one merge patch.

A plan writes its resource's status with one PatchStatus; the operator adds a few
things decided outside that plan (a ModelRollout's Conflict condition, an
UnlearnRequest's deletion-effect fields). Two patches that both carry `conditions`
would each replace the whole list (merge patches cannot address list items), so the
additions are applied on top of the status the plan's own patch leaves, and the
result is sent as that one patch.
"""

from datetime import datetime
from typing import Any

from modelops_operator.reconcile.actions import Action, PatchStatus
from modelops_operator.reconcile.conditions import set_condition
from modelops_operator.reconcile.status_patch import apply_merge_patch, status_patch

ConditionUpdate = tuple[str, str, str, str]
"""(type, status, reason, message)."""


def with_status(
    actions: list[Action],
    current: dict[str, Any],
    now: datetime,
    generation: int,
    conditions: tuple[ConditionUpdate, ...] = (),
    fields: dict[str, Any] | None = None,
) -> list[Action]:
    """`actions` with the plan's status write (the last PatchStatus; a new one if it
    has none) extended by these conditions and wire-form `fields` (None clears one).
    Unchanged when the status after the plan already says all of it."""
    index = max((i for i, a in enumerate(actions) if isinstance(a, PatchStatus)), default=None)
    held = actions[index] if index is not None else None
    patch = dict(held.patch) if isinstance(held, PatchStatus) else {}
    after = apply_merge_patch(current, patch)
    conds = list(after.get("conditions") or [])
    for type_, status, reason, message in conditions:
        conds = set_condition(conds, type_, status, reason, message, now, generation)
    desired = {**(fields or {}), "conditions": conds}
    extra = status_patch(after, desired)
    if not extra:
        return actions
    merged = PatchStatus({**patch, **extra})
    if index is None:
        return [*actions, merged]
    return [*actions[:index], merged, *actions[index + 1 :]]
