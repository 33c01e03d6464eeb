"""From a Job's status and its pods' termination messages to a phase and a result.

The Job's own conditions decide the phase (Complete, Failed, suspended, active); the
newest termination message, parsed with the `JobResult` model, supplies the reason,
the message and the results. A message that does not parse is reported, not trusted.
"""

import re
from dataclasses import dataclass

from pydantic import ValidationError

from modelops_api.status import JobResult, Phase
from modelops_operator.reconcile.observed import JobView


@dataclass(frozen=True)
class JobOutcome:
    phase: Phase
    reason: str
    message: str
    result: JobResult | None
    retries: int


REASON = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def failure_reason(result: JobResult) -> tuple[str, str]:
    """(reason, message) of a failed run as the Job reported it. The reason is the
    tenant's text: one that is no CamelCase word (the Condition model and the CRD
    refuse it) becomes JobFailed, and the text goes into the message."""
    if REASON.match(result.reason):
        return result.reason, result.message
    return "JobFailed", f"{result.reason}: {result.message}"[:1024]


def latest_result(job: JobView) -> JobResult | None:
    for term in job.terminations:
        if not term.message:
            continue
        try:
            return JobResult.model_validate_json(term.message)
        except ValidationError:
            continue
    return None


def job_outcome(job: JobView) -> JobOutcome:
    result = latest_result(job)
    if job.complete:
        if result is not None and result.ok:
            return JobOutcome(
                Phase.SUCCEEDED, "Succeeded", result.message or "run completed", result, job.failed
            )
        return JobOutcome(
            Phase.SUCCEEDED, "Succeeded", "Job completed but reported no result", result, job.failed
        )
    if job.failed_terminally:
        cond = job.conditions.get("Failed") or job.conditions.get("FailureTarget") or ("", "", "")
        if result is not None and not result.ok:
            reason, message = failure_reason(result)
        else:
            reason, message = cond[1] or "JobFailed", cond[2] or "the Job failed"
        return JobOutcome(Phase.FAILED, reason, message, result, max(job.failed - 1, 0))
    if job.suspended and job.active == 0:
        return JobOutcome(
            Phase.SUSPENDED, "Suspended", "the Job is suspended (queued)", None, job.failed
        )
    if job.ready > 0:
        return JobOutcome(Phase.RUNNING, "Running", "the Job's pod is running", None, job.failed)
    message = "waiting for the Job's pod to start"
    if job.failed:
        last = latest_result(job)
        detail = f": {last.reason}: {last.message}" if last else ""
        message = f"retrying after {job.failed} failed attempt(s){detail}"
    return JobOutcome(Phase.PENDING, "Pending", message, None, job.failed)
