"""Status writes as JSON merge patches (RFC 7386) that say what they mean.

The API server applies a status patch as a merge patch: a key left out is kept, so a
field that the plan clears must be sent as an explicit null or it stays forever (a
stale `pendingSince` read back next time). `status_patch` diffs the desired status
against the stored one: top-level keys the plan manages are compared one by one, a
None means "remove", and a sub-object is the whole new object, so a key it no longer
has is sent as null. Lists are replaced whole (merge patches cannot address items),
with no nulls inside them. `apply_merge_patch` is the server's side, for the
operator's own bookkeeping and for tests.

Every status the plans write is built here through the kind's pydantic status model
(`desired_status`): the one definition of its fields, names and limits, validated in
production before anything is sent, and serialised to the wire form once.
"""

import math
from typing import Any

from pydantic import BaseModel


def _finite(value: Any) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


def _strip_none(value: Any) -> Any:
    """No nulls inside (they would mean "remove" in a merge patch, or be invalid in a
    list), and no NaN or ±Inf anywhere (JSON cannot carry them: the write would fail)."""
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None and _finite(v)}
    if isinstance(value, list):
        return [_strip_none(v) for v in value if v is not None and _finite(v)]
    return value


def non_finite_as_text(value: Any) -> Any:
    """Free-form data (a run's results) with NaN and ±Inf written as "NaN", "+Inf",
    "-Inf": explicit, and valid JSON. Typed fields never hold them (the models refuse)."""
    if isinstance(value, dict):
        return {k: non_finite_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [non_finite_as_text(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return value


def _diff_object(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning `current` into exactly `desired`."""
    out: dict[str, Any] = {}
    for key in current:
        if (desired.get(key) is None or not _finite(desired[key])) and current[key] is not None:
            out[key] = None
    for key, value in desired.items():
        if value is None or not _finite(value):
            continue
        old = current.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            sub = _diff_object(old, value)
            if sub:
                out[key] = sub
        elif old != value:
            out[key] = _strip_none(value)
    return out


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch for the keys of `desired` whose value changes: None removes a
    field, a dict replaces the whole sub-object (keys it lacks are removed). Keys the
    plan does not manage (absent from `desired`) are left alone."""
    managed = {key: current[key] for key in desired if key in current}
    return _diff_object(managed, desired)


def desired_status(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """The managed status fields, by their Python names, built and validated through
    `model` (the kind's status model) and serialised once to the wire form (camelCase,
    RFC 3339 times). A field given as None is kept as an explicit None: the plan clears
    it. Raises `pydantic.ValidationError` naming the field if the plan would write a
    status the model (and so the CRD) refuses."""
    built = model.model_validate(fields)
    wire = built.model_dump(mode="json", by_alias=True, exclude_none=True, include=set(fields))
    for name, value in fields.items():
        if value is None:
            wire[model.model_fields[name].alias or name] = None
    return wire


def typed_status_patch(
    model: type[BaseModel], current: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    """`status_patch` of the stored status against `desired_status(model, **fields)`."""
    return status_patch(current, desired_status(model, **fields))


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: the document `target` with the merge patch `patch` applied."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result
