"""Status writes as JSON merge patches (RFC 7386) that say what they mean.

The API server applies a status patch as a merge patch: a key left out is kept, so a
field that the plan clears must be sent as an explicit null or it stays forever (a
stale `pendingSince` read back next time). `status_patch` diffs the desired status
against the stored one: top-level keys the plan manages are compared one by one, a
None means "remove", and a sub-object is the whole new object, so a key it no longer
has is sent as null. Lists are replaced whole (merge patches cannot address items),
with no nulls inside them. `apply_merge_patch` is the server's side, for the
operator's own bookkeeping and for tests.
"""

import math
from typing import Any


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
