"""Kubernetes-style conditions: set one by type, keeping lastTransitionTime when the
status did not change, so reconciling twice writes nothing new."""

from datetime import datetime
from typing import Any

from modelops_api.model_adaptation import RunRecord
from modelops_api.status import Condition
from modelops_api.times import iso, iso_precise

__all__ = [
    "condition",
    "get_condition",
    "iso",
    "iso_precise",
    "latest_run_conditions",
    "set_condition",
]


def condition(
    type_: str, status: str, reason: str, message: str, transition: datetime | str, generation: int
) -> dict[str, Any]:
    """One condition built through the API's `Condition` model (its names and limits),
    in wire form. The transition time is kept to the second."""
    if isinstance(transition, datetime):
        transition = transition.replace(microsecond=0)
    return Condition.model_validate(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message[:2048],
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    ).to_wire()


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> list[dict[str, Any]]:
    """A new list with the condition of `type_` set; others unchanged, order kept."""
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        kept = cond.get("lastTransitionTime") if cond.get("status") == status else None
        out.append(condition(type_, status, reason, message, kept or now, generation))
    if not found:
        out.append(condition(type_, status, reason, message, now, generation))
    return out


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    for cond in conditions:
        if cond.get("type") == type_:
            return cond
    return None


def latest_run_conditions(
    conditions: list[dict[str, Any]], runs: list[RunRecord], now: datetime, generation: int
) -> list[dict[str, Any]]:
    """ModelAdaptation: Succeeded and Failed describe its latest run, as they describe
    the one request of the other kinds (so the same `kubectl wait` works on every kind).
    While a run is active both are False (reason RunActive)."""
    latest = max(runs, key=lambda r: r.run, default=None)
    if latest is None:
        reason, message, phase = "NoRun", "no run yet", ""
    else:
        phase = str(latest.phase)
        reason = {"Succeeded": "RunSucceeded", "Failed": "RunFailed"}.get(phase, "RunActive")
        message = f"run {latest.run}: {latest.message or phase}"
    for type_ in ("Succeeded", "Failed"):
        status = "True" if phase == type_ else "False"
        conditions = set_condition(conditions, type_, status, reason, message, now, generation)
    return conditions
