"""The failures an algorithm can signal, and what the runner does with each.

`PermanentError` (bad spec, missing model or data, unsupported architecture) ends the
Job at once through the permanent exit code; `RetryableError` and `Preempted` (a
checkpoint was saved after SIGTERM) exit with the retryable code so the Job's pod is
retried and resumes.
"""


class JobError(Exception):
    """Base class: a failure with a CamelCase reason for the status condition."""

    reason = "JobFailed"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class PermanentError(JobError):
    """Retrying cannot help: the input is wrong."""

    reason = "InvalidInput"


class RetryableError(JobError):
    """A transient failure; a retry may succeed."""

    reason = "TransientFailure"


class Preempted(JobError):
    """SIGTERM arrived; a checkpoint was saved and the run can resume."""

    reason = "Preempted"
