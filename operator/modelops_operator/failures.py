"""Reconcile failures: which class each is, one log line per class (rate-limited),
per-resource exponential backoff, and the condition and Event that show an error on
the resource itself.

Why a module of its own: during an API-server outage every resource fails every few
seconds. Logging each failure with its traceback wrote ~19 MB a minute (issue 12), and
an error the API server keeps returning (a label value over 63 characters) left the
user an empty phase and no hint. Here a failure is classified once, counted by class,
logged at most once per window per class, and planned into status like any other
outcome.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelops_operator.k8s.kinds import status_model
from modelops_operator.reconcile.actions import Action, PatchStatus, RecordEvent
from modelops_operator.reconcile.conditions import get_condition, set_condition
from modelops_operator.reconcile.status_patch import desired_status

API_UNAVAILABLE = "ApiUnavailable"
"""Connection refused or reset, timeouts and 5xx: the API server is down."""
API_BUSY = "ApiBusy"
"""429 (for example `storage is (re)initializing` while it starts): retried quietly."""
API_REJECTED = "ApiRejected"
"""Another 4xx: the API server refused what the operator sent (a bug or a limit)."""
INTERNAL = "InternalError"
"""Anything else: a bug in the operator. The only class logged with a traceback."""
CLASSES = (API_UNAVAILABLE, API_BUSY, API_REJECTED, INTERNAL)
_LEVEL = {API_BUSY: logging.INFO, API_UNAVAILABLE: logging.WARNING}

REASON = "ReconcileError"
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
LOG_WINDOW_S = 30.0


def classify(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 429:
            return API_BUSY
        return API_UNAVAILABLE if status == 0 or status >= 500 else API_REJECTED
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return API_UNAVAILABLE
    # urllib3's MaxRetryError / ProtocolError / NewConnectionError and aiohttp's
    # ServerDisconnectedError / ClientPayloadError (k8s/api.py), without importing them.
    module = type(exc).__module__
    if module.startswith(("urllib3", "http.client", "aiohttp")):
        return API_UNAVAILABLE
    return INTERNAL


def describe(exc: BaseException) -> str:
    """One short line: the API server's own message when there is one."""
    if isinstance(exc, ApiException):
        detail = ""
        body = exc.body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        if isinstance(body, str) and body.startswith("{"):
            try:
                detail = json.loads(body).get("message", "")
            except ValueError:
                detail = ""
        return f"API server answered {exc.status} {exc.reason}" + (f": {detail}" if detail else "")
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]


def backoff_seconds(failures: int) -> float:
    """1, 2, 4, ... seconds after 1, 2, 3, ... failures in a row, at most a minute."""
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(failures - 1, 16)))


@dataclass
class FailureLog:
    """At most one log line per failure class per window; the line says how many
    failures (and of how many resources) it stands for."""

    logger: logging.Logger
    window_s: float = LOG_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    _last: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def report(self, cls: str, what: str, exc: BaseException) -> bool:
        """Log (or hold back) one failure; True when a line was written."""
        now = self.clock()
        last = self._last.get(cls)
        if last is not None and now - last < self.window_s:
            self._held[cls] = self._held.get(cls, 0) + 1
            return False
        held = self._held.pop(cls, 0)
        self._last[cls] = now
        more = f" (and {held} more failures of this class in the last {self.window_s:.0f}s)"
        self.logger.log(
            _LEVEL.get(cls, logging.ERROR),
            "%s: reconcile of %s failed: %s; retrying with backoff%s",
            cls,
            what,
            describe(exc),
            more if held else "",
            exc_info=exc if cls == INTERNAL else None,
        )
        return True

    def recovered(self, what: str) -> None:
        """Called when a resource that was failing reconciles again."""
        if self._last:
            self.logger.info("reconcile of %s succeeded again", what)


def error_plan(
    kind: str, status: dict[str, Any], cls: str, message: str, now: datetime, generation: int
) -> list[Action]:
    """`Ready=False` with reason ReconcileError and a Warning Event, once per message,
    written through the kind's status model like every other status write.

    Nothing for an unavailable or busy API server: the write would fail the same way."""
    if cls in (API_UNAVAILABLE, API_BUSY):
        return []
    message = f"reconcile failed ({cls}): {message}"[:1024]
    conditions = status.get("conditions", [])
    ready = get_condition(conditions, "Ready")
    if ready and ready.get("reason") == REASON and ready.get("message") == message:
        return []
    conds = set_condition(conditions, "Ready", "False", REASON, message, now, generation)
    patch = desired_status(status_model(kind), conditions=conds, message=message)
    return [PatchStatus(patch), RecordEvent("Warning", REASON, message)]


class QuietRetries(logging.Filter):
    """kopf logs each retried request at ERROR ("Request attempt #1/9 failed; will
    retry"): at start-up `429 storage is (re)initializing` (harmless, alarming), during
    an outage one line per watch per attempt. A retry that will happen is INFO for a
    429 and WARNING otherwise; the final, escalated failure stays an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        if "will retry" not in message:
            return True
        busy = "429" in message or "TooManyRequests" in message or "initializing" in message
        record.levelno = logging.INFO if busy else logging.WARNING
        record.levelname = logging.getLevelName(record.levelno)
        record.exc_info = None
        record.exc_text = None
        # The logger let an ERROR through; the downgraded record must pass its level too.
        return logging.getLogger(record.name).isEnabledFor(record.levelno)


class QuietUrllib3Retries(logging.Filter):
    """urllib3 warns once per retried request ("Retrying (Retry(total=2...)) after
    connection broken"): three lines per API call while the server is down. The call's
    final failure is classified and logged (rate-limited) by the reconciler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage().startswith("Retrying"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def install_log_filters() -> None:
    """Attach QuietRetries to every kopf logger (kopf's API client logs its retries on
    the logger of whichever module or object made the request), and QuietUrllib3Retries
    to urllib3's connection pool logger."""
    pool = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, QuietUrllib3Retries) for f in pool.filters):
        pool.addFilter(QuietUrllib3Retries())
    import kopf  # noqa: F401 - its modules create their loggers on import

    names = [n for n in logging.Logger.manager.loggerDict if n == "kopf" or n.startswith("kopf.")]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietRetries) for f in logger.filters):
            logger.addFilter(QuietRetries())
