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

from typing import Any


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def _diff_object(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning `current` into exactly `desired`."""
    out: dict[str, Any] = {}
    for key in current:
        if desired.get(key) is None and current[key] is not None:
            out[key] = None
    for key, value in desired.items():
        if value is None:
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
