"""Reconcile failures (issue 12): classified, logged once per class per window without
tracebacks for an unavailable API server, backed off per resource, and shown on the
resource as `Ready=False` (ReconcileError) with a Warning Event."""

import json
import logging
from datetime import UTC, datetime

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError

from modelops_api.kinds import KINDS, kind_info
from modelops_operator import failures
from modelops_operator.build.names import label_value
from modelops_operator.reconcile.actions import PatchStatus, RecordEvent

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def api_error(status, message="nope"):
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


CLASSIFY = [
    ("refused", ConnectionRefusedError(111, "refused"), failures.API_UNAVAILABLE),
    (
        "urllib3-retries",
        MaxRetryError(None, "/apis", NewConnectionError(None, "refused")),
        failures.API_UNAVAILABLE,
    ),
    ("503", api_error(503), failures.API_UNAVAILABLE),
    ("429-initializing", api_error(429, "storage is (re)initializing"), failures.API_BUSY),
    ("400-label", api_error(400, "metadata.labels: Invalid value"), failures.API_REJECTED),
    ("403-quota", api_error(403, "exceeded quota"), failures.API_REJECTED),
    ("bug", KeyError("phase"), failures.INTERNAL),
]


@pytest.mark.parametrize(("exc", "cls"), [c[1:] for c in CLASSIFY], ids=[c[0] for c in CLASSIFY])
def test_classify(exc, cls):
    assert failures.classify(exc) == cls


def test_describe_uses_the_api_servers_message():
    text = failures.describe(api_error(400, "metadata.labels: Invalid value: too long"))
    assert text == "API server answered 400 Reason: metadata.labels: Invalid value: too long"


@pytest.mark.parametrize(
    ("n", "seconds"), [(0, 0), (1, 1), (2, 2), (5, 16), (7, 60), (1000, 60)], ids=str
)
def test_backoff_doubles_up_to_a_minute(n, seconds):
    assert failures.backoff_seconds(n) == seconds


def test_one_line_per_class_per_window_no_traceback_for_outages(caplog):
    clock = [0.0]
    flog = failures.FailureLog(logging.getLogger("t"), window_s=30, clock=lambda: clock[0])
    down = ConnectionRefusedError(111, "refused")
    with caplog.at_level(logging.DEBUG, logger="t"):
        written = [flog.report(failures.API_UNAVAILABLE, f"r{i}", down) for i in range(230)]
        flog.report(failures.INTERNAL, "x", KeyError("k"))
        clock[0] = 31.0
        flog.report(failures.API_UNAVAILABLE, "r0", down)
    assert sum(written) == 1
    lines = [r for r in caplog.records if r.name == "t"]
    assert len(lines) == 3
    assert lines[0].exc_info is None and lines[0].levelno == logging.WARNING
    assert lines[1].exc_info is not None and lines[1].levelno == logging.ERROR
    assert "229 more failures" in lines[2].getMessage()


def test_a_busy_api_server_is_retried_quietly(caplog):
    flog = failures.FailureLog(logging.getLogger("t"))
    with caplog.at_level(logging.DEBUG, logger="t"):
        flog.report(failures.API_BUSY, "r", api_error(429, "storage is (re)initializing"))
    assert [r.levelno for r in caplog.records] == [logging.INFO]


@pytest.mark.parametrize("kind", [k.kind for k in KINDS], ids=[k.kind for k in KINDS])
def test_error_plan_writes_a_condition_and_a_warning_once(kind):
    actions = failures.error_plan(kind, {}, failures.API_REJECTED, "400: bad label", NOW, 1)
    kind_info(kind).status.model_validate(actions[0].patch)
    assert [type(a) for a in actions] == [PatchStatus, RecordEvent]
    ready = actions[0].patch["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "ReconcileError")
    assert "bad label" in ready["message"] and actions[1].type == "Warning"
    again = failures.error_plan(
        kind, actions[0].patch, failures.API_REJECTED, "400: bad label", NOW, 1
    )
    assert again == []


def test_error_plan_writes_nothing_while_the_api_server_is_down():
    assert (
        failures.error_plan("PruneRetrain", {}, failures.API_UNAVAILABLE, "refused", NOW, 1) == []
    )


LABELS = [
    ("short", "opt", "opt"),
    ("63", "a" * 63, "a" * 63),
    ("64", "a" * 64, None),
    ("253", "b" * 250 + ".cd", None),
    ("dot-at-cut", "a" * 52 + "." + "c" * 100, None),
]


@pytest.mark.parametrize(("name", "expected"), [c[1:] for c in LABELS], ids=[c[0] for c in LABELS])
def test_label_values_fit_63_characters(name, expected):
    value = label_value(name)
    assert len(value) <= 63
    assert value[0].isalnum() and value[-1].isalnum()
    if expected is not None:
        assert value == expected
    else:
        assert value != label_value(name[:-1] + "z"), "distinct names give distinct values"


def test_kopf_retry_lines_are_downgraded(caplog):
    """Issue 12: `ERROR ... 429 storage is (re)initializing` at every start-up."""
    failures.install_log_filters()
    logger = logging.getLogger("kopf._cogs.clients.watching")
    with caplog.at_level(logging.DEBUG):
        logger.error(
            "Request attempt #1/9 failed; will retry: GET /apis -> "
            "APITooManyRequestsError('storage is (re)initializing', status=429)"
        )
        logger.error("Request attempt #1/9 failed; will retry: GET /apis -> ClientConnectorError")
        logger.error("Request attempt #9/9 failed; escalating: GET /apis -> ClientConnectorError")
    levels = [r.levelno for r in caplog.records if r.name == logger.name]
    assert levels == [logging.INFO, logging.WARNING, logging.ERROR]


def test_urllib3_retry_warnings_are_debug(caplog):
    failures.install_log_filters()
    pool = logging.getLogger("urllib3.connectionpool")
    with caplog.at_level(logging.INFO):
        pool.warning("Retrying (Retry(total=2)) after connection broken by 'refused': /apis")
        pool.warning("Connection pool is full, discarding connection: 127.0.0.1")
    messages = [r.getMessage() for r in caplog.records if r.name == pool.name]
    assert messages == ["Connection pool is full, discarding connection: 127.0.0.1"]


def test_a_downgraded_retry_respects_the_loggers_level(caplog):
    """The demo sets kopf's loggers to ERROR: a 429 retry downgraded to INFO is dropped."""
    failures.install_log_filters()
    logger = logging.getLogger("kopf._cogs.clients.watching")
    logger.setLevel(logging.ERROR)
    try:
        with caplog.at_level(logging.DEBUG):
            logger.error("Request attempt #1/9 failed; will retry: GET -> 429 initializing")
    finally:
        logger.setLevel(logging.NOTSET)
    assert [r for r in caplog.records if r.name == logger.name] == []
