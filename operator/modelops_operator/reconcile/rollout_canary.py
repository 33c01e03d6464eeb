"""The canary: traffic steps held while the analysis stays in bounds, then promotion
or rollback.

Write-ahead: a step is recorded in `status.applied` (and `current.step`) in the same
plan, before the InferenceService patch. A step's clock starts when the ISVC reports the
step (its spec, Ready, observedGeneration caught up, the latest revision's share):
`current.stepStartTime`. The step advances when its interval has elapsed and, with an
analysis, every query since `analysis.inBoundsSince` returned a value in bounds, the
last of them at least one interval after that and after the interval elapsed. A failed
query, no data or NaN holds the step (AnalysisHealthy Unknown, the in-bounds window
restarts): never a promotion on missing data. A value out of bounds (±Inf included)
rolls back. The last step (100) is the promotion: storageUri = candidate, no
canaryTrafficPercent; once the ISVC reports it, the candidate serves.
"""

import math
from datetime import timedelta

from modelops_api.durations import parse_duration
from modelops_api.model_version import VersionPhase
from modelops_api.rollout_status import AnalysisState, RolloutPhase
from modelops_operator.drift.state import QueryOutcome, value_text
from modelops_operator.reconcile.rollout_select import add_history
from modelops_operator.reconcile.rollout_state import (
    Draft,
    interval_seconds,
    isvc_patch,
    reports,
    serving_state,
    step_state,
    steps,
)
from modelops_operator.reconcile.rollout_versions import close_records, open_record

WAIT_SECONDS = 5.0
"""Look again this soon while waiting for KServe to report a step."""


def go_to_step(d: Draft, index: int) -> None:
    """Record step `index` (write-ahead) and patch the ISVC to it."""
    cur = d.st.current
    assert cur is not None
    state = step_state(d.spec, cur, index)
    d.set_current(step=index, step_start_time=None, analysis=None)
    d.set(applied=state)
    d.isvc_patch = isvc_patch(state)
    d.after(WAIT_SECONDS)
    if state.canary_traffic_percent is None:
        d.set(phase=RolloutPhase.PROMOTING.value, message=f"promoting {cur.version}")
        d.event("Normal", "Promoting", f"{cur.version}: all traffic to {cur.uri}")
        return
    percent = state.canary_traffic_percent
    d.set(phase=RolloutPhase.CANARY.value, message=f"{cur.version}: canary {percent}%")
    d.change_version(cur.version, phase=VersionPhase.CANARY.value)
    d.event("Normal", "CanaryStep", f"{cur.version}: canary step {index + 1} ({percent}%) applied")


def in_bounds(d: Draft, value: float) -> str | None:
    """None when in bounds, else why not."""
    a = d.spec.canary.analysis
    assert a is not None
    text = value_text(value)
    if a.min is not None and not value >= a.min:
        return f"analysis value {text} < min {a.min:g}"
    if a.max is not None and not value <= a.max:
        return f"analysis value {text} > max {a.max:g}"
    return None


def analysis_update(d: Draft, outcome: QueryOutcome) -> str | None:
    """Fold one query outcome into the step's analysis; the rollback reason if out of
    bounds."""
    cur = d.st.current
    assert cur is not None
    a = cur.analysis or AnalysisState()
    t, value = outcome.time, outcome.value
    if outcome.error is not None or value is None or math.isnan(value):
        reason = outcome.error_reason or ("QueryFailed" if outcome.error else "NoData")
        error = outcome.error or f"query returned {value_text(value)}"
        a = a.model_copy(
            update={
                "last_value": None,
                "last_value_text": None if outcome.error else value_text(value),
                "last_query_time": t,
                "in_bounds_since": None,
                "last_error": f"{error}; the step holds"[:1024],
                "last_error_reason": reason[:64],
            }
        )
        d.set_current(analysis=a)
        d.condition("AnalysisHealthy", "Unknown", reason[:64], a.last_error or "")
        return None
    out = in_bounds(d, value)
    a = a.model_copy(
        update={
            "last_value": value if math.isfinite(value) else None,
            "last_value_text": value_text(value),
            "last_query_time": t,
            "in_bounds_since": (a.in_bounds_since or t) if out is None else None,
            "last_error": None,
            "last_error_reason": None,
        }
    )
    d.set_current(analysis=a)
    if out is not None:
        d.condition("AnalysisHealthy", "False", "OutOfBounds", out)
        return out
    d.condition("AnalysisHealthy", "True", "InBounds", f"analysis value {value_text(value)}")
    return None


def analysis_held(d: Draft) -> bool:
    """Every query in bounds for a whole interval, the last after the step's interval."""
    cur = d.st.current
    assert cur is not None and cur.step_start_time is not None
    if d.spec.canary.analysis is None:
        return True
    a = cur.analysis
    if a is None or a.in_bounds_since is None or a.last_query_time is None:
        return False
    hold = timedelta(seconds=interval_seconds(d.spec))
    return (
        a.last_error is None
        and a.last_query_time >= cur.step_start_time + hold
        and a.last_query_time - a.in_bounds_since >= hold
    )


def start_step_clock(d: Draft) -> bool:
    """Start the step's clock once the ISVC reports it; False while it does not."""
    cur, isvc, applied = d.st.current, d.obs.isvc, d.st.applied
    assert cur is not None and isvc is not None and applied is not None
    if cur.step_start_time is not None:
        return True
    if not reports(isvc, applied):
        d.after(WAIT_SECONDS)
        return False
    d.set_current(step_start_time=d.now, analysis=None)
    if cur.step == 0:
        open_record(d, cur.version, "canary")
    percent = applied.canary_traffic_percent
    d.event("Normal", "StepReached", f"{cur.version}: {percent}% of traffic, step {cur.step + 1}")
    return True


def canary_step(d: Draft) -> None:
    """Hold the step, fold in the analysis, advance, or roll back."""
    if not start_step_clock(d):
        return
    if d.spec.canary.analysis is not None and d.obs.analysis is not None:
        out = analysis_update(d, d.obs.analysis)
        if out is not None:
            rollback(d, out)
            return
    cur = d.st.current
    assert cur is not None and cur.step_start_time is not None
    due = cur.step_start_time + timedelta(seconds=interval_seconds(d.spec))
    if d.now >= due and analysis_held(d):
        go_to_step(d, cur.step + 1)
        return
    d.set(phase=RolloutPhase.CANARY.value)
    if d.now < due:
        d.after((due - d.now).total_seconds())
    a = d.spec.canary.analysis
    if a is not None:
        last = cur.analysis.last_query_time if cur.analysis else None
        d.after(0 if last is None else (last - d.now).total_seconds() + parse_duration(a.interval))


def promoting_step(d: Draft) -> None:
    """Once the ISVC reports the candidate as the default, it serves."""
    cur, isvc, applied = d.st.current, d.obs.isvc, d.st.applied
    assert cur is not None and isvc is not None and applied is not None
    d.set(phase=RolloutPhase.PROMOTING.value)
    if not reports(isvc, applied):
        d.after(WAIT_SECONDS)
        return
    old = d.st.serving_version
    close_records(d, cur.version)
    open_record(d, cur.version, "default")
    d.change_version(cur.version, phase=VersionPhase.SERVING.value, rollout_message=None)
    if old is not None:
        close_records(d, old)
        d.change_version(old, phase=VersionPhase.RETIRED.value)
    n = len(steps(d.spec))
    add_history(d, cur.version, "Promoted", f"all traffic after {n} step(s)")
    d.set(
        serving_version=cur.version,
        serving_uri=cur.uri,
        serving_since=d.now,
        previous_version=old,
        current=None,
        phase=RolloutPhase.IDLE.value,
        message=f"serving {cur.version}",
    )
    d.event("Normal", "Promoted", f"{cur.version} serves all traffic ({cur.uri})")


def rollback(d: Draft, reason: str) -> None:
    """Take the candidate out: restore the serving URI (KServe's rollback), record it."""
    cur = d.st.current
    assert cur is not None
    add_history(d, cur.version, "RolledBack", reason)
    d.change_version(
        cur.version,
        phase=VersionPhase.ROLLED_BACK.value,
        rolled_back_time=d.now,
        rollout_message=reason[:1024],
    )
    close_records(d, cur.version)
    d.event("Warning", "RolledBack", f"{cur.version}: {reason}")
    target = serving_state(d.st)
    if target is None:  # nothing served before it: nothing to restore
        d.set(current=None, phase=RolloutPhase.IDLE.value, message=f"{cur.version}: {reason}")
        return
    d.set(
        applied=target,
        phase=RolloutPhase.ROLLING_BACK.value,
        message=f"rolling back {cur.version}: {reason}"[:2048],
    )
    d.isvc_patch = isvc_patch(target)
    d.after(WAIT_SECONDS)


def rolling_back_step(d: Draft) -> None:
    """Once the ISVC reports the serving URI again, the rollout is idle."""
    cur, isvc, applied = d.st.current, d.obs.isvc, d.st.applied
    assert cur is not None and isvc is not None and applied is not None
    if not reports(isvc, applied):
        d.set(phase=RolloutPhase.ROLLING_BACK.value)
        d.after(WAIT_SECONDS)
        return
    d.set(current=None, phase=RolloutPhase.IDLE.value, message=f"rolled back {cur.version}")
