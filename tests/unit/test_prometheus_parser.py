"""The Prometheus response parser, fuzzed: for any HTTP status and any body (arbitrary
JSON, arbitrary bytes, Prometheus-shaped documents with odd values) it returns a
typed outcome, never raises, bounds every text, and never copies a response body into
the error beyond Prometheus's own `errorType`/`error` fields (issue 11: a cloud
metadata credentials document ended up in status). Credentials are redacted before
any cut, so a cut token leaks no prefix."""

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops_operator.drift import prometheus
from modelops_operator.drift.prometheus import (
    MAX_BODY,
    MAX_ERROR,
    Credentials,
    parse_response,
    query_url,
    query_value,
    redact,
)
from modelops_operator.drift.state import QueryOutcome

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "AKIAsecretKEY0123456789"
TOKEN = "tok-5f2b7c9d1e3a4b6c8d0e"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
sample_values = st.one_of(
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "0x10", "", " 1", "1_0", SECRET]),
    st.floats().map(repr),
    st.text(max_size=20),
    json_values,
)
samples = st.one_of(
    st.fixed_dictionaries({"metric": st.just({}), "value": st.tuples(st.floats(), sample_values)}),
    st.fixed_dictionaries(
        {"metric": st.just({}), "histogram": st.tuples(st.floats(), json_values)}
    ),
    json_values,
)
prometheus_like = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["success", "error", SECRET]) | json_values,
        "data": st.one_of(
            st.fixed_dictionaries(
                {
                    "resultType": st.sampled_from(["vector", "scalar", "matrix", "string", SECRET])
                    | json_values,
                    "result": st.one_of(
                        st.lists(samples, max_size=3),
                        st.tuples(st.floats(), sample_values).map(list),
                        json_values,
                    ),
                }
            ),
            json_values,
        ),
    }
)
credentials_documents = st.fixed_dictionaries(
    {"Code": st.just("Success"), "AccessKeyId": st.just(SECRET), "Token": st.just(SECRET)}
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    prometheus_like.map(lambda v: json.dumps(v).encode()),
    credentials_documents.map(lambda v: json.dumps(v).encode()),
    st.lists(credentials_documents, max_size=2).map(lambda v: json.dumps(v).encode()),
)
statuses = st.one_of(st.sampled_from([200, 301, 302, 307, 308, 400, 422, 500, 503]), st.integers())


def check(outcome: QueryOutcome) -> None:
    assert isinstance(outcome, QueryOutcome)
    assert (outcome.error is None) == (outcome.error_reason is None)
    if outcome.error is not None:
        assert len(outcome.error) <= MAX_ERROR and outcome.value is None
    else:
        assert outcome.value is None or isinstance(outcome.value, float)


def allowed_to_echo(body: bytes) -> bool:
    """Whether SECRET sits in Prometheus's own errorType/error fields of the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(doc, dict)
        and doc.get("status") == "error"
        and (SECRET in str(doc.get("error")) or SECRET in str(doc.get("errorType")))
    )


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=statuses, body=bodies)
def test_any_response_gives_a_typed_bounded_outcome_without_the_body(status, body):
    outcome = parse_response(status, body, NOW)
    check(outcome)
    if outcome.error is not None and not allowed_to_echo(body):
        assert SECRET not in outcome.error


@settings(max_examples=150, deadline=None)
@given(
    status=statuses,
    prefix=st.text(max_size=2000),
    where=st.sampled_from(["error", "errorType"]),
)
def test_credentials_echoed_by_a_server_are_redacted_wherever_they_fall(
    monkeypatch_session, status, prefix, where
):
    """A token placed anywhere in an echoed error, including across the cut."""
    body = {"status": "error", "errorType": "bad_data", "error": "x"}
    body[where] = prefix + f"Authorization: Bearer {TOKEN}" + prefix
    monkeypatch_session.setattr(
        prometheus, "_fetch", lambda *a: (status, json.dumps(body).encode())
    )
    outcome = query_value("http://p:9090", "q", NOW, 1.0, Credentials(bearer_token=TOKEN))
    check(outcome)
    assert outcome.error is not None
    for cut in range(4, len(TOKEN) + 1):
        assert TOKEN[:cut] not in outcome.error


@pytest.fixture(scope="module")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_redaction_happens_before_truncation():
    """issue 11: the text was cut to 300 characters before redacting, leaking a prefix."""
    for offset in range(MAX_ERROR - len(TOKEN), MAX_ERROR + 1):
        text = "a" * offset + TOKEN + " tail"
        out = redact(text, Credentials(bearer_token=TOKEN))
        assert len(out) <= MAX_ERROR and TOKEN[:4] not in out


@pytest.mark.parametrize(
    ("creds", "header"),
    [
        (Credentials(), None),
        (Credentials(bearer_token=TOKEN), f"Bearer {TOKEN}"),
        (Credentials(username="u", password="p"), "Basic dTpw"),
        (Credentials(username="u"), "Basic dTo="),
        (Credentials(bearer_token=TOKEN, username="u", password="p"), f"Bearer {TOKEN}"),
    ],
    ids=["none", "bearer", "basic", "basic-no-password", "bearer-first"],
)
def test_credentials_make_the_one_authorization_header(creds, header):
    """The header a drift query (and the MLflow registry) sends: one place builds it."""
    assert creds.authorization() == header


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def vector(*values, extra=None):
    result = [{"metric": {}, "value": [1.0, v], **(extra or {})} for v in values]
    return body({"status": "success", "data": {"resultType": "vector", "result": result}})


CASES = [
    ("one-value", 200, vector("0.7"), 0.7, None),
    ("empty-vector", 200, vector(), None, None),
    ("nan", 200, vector("NaN"), math.nan, None),
    ("plus-inf", 200, vector("+Inf"), math.inf, None),
    (
        "scalar",
        200,
        body({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}),
        2.0,
        None,
    ),
    ("two-series", 200, vector("1", "2"), None, "NotAScalar"),
    (
        "matrix",
        200,
        body({"status": "success", "data": {"resultType": "matrix", "result": []}}),
        None,
        "NotAScalar",
    ),
    (
        "native-histogram",
        200,
        body(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {}, "histogram": [1, {"count": "3"}]}],
                },
            }
        ),
        None,
        "NotAScalar",
    ),
    ("json-list", 200, body([1, 2]), None, "QueryFailed"),
    ("json-string", 200, body("hello"), None, "QueryFailed"),
    ("not-json", 200, b"<html>", None, "QueryFailed"),
    (
        "credentials-doc",
        200,
        body({"Code": "Success", "SecretAccessKey": SECRET}),
        None,
        "QueryFailed",
    ),
    ("credentials-doc-500", 500, body({"SecretAccessKey": SECRET}), None, "QueryFailed"),
    ("redirect", 302, b"", None, "QueryFailed"),
    (
        "prometheus-error",
        400,
        body({"status": "error", "errorType": "bad_data", "error": "parse error"}),
        None,
        "QueryFailed",
    ),
    ("oversize", 200, b" " * (MAX_BODY + 1), None, "QueryFailed"),
    ("malformed-value", 200, vector("abc"), None, "QueryFailed"),
]


@pytest.mark.parametrize(
    ("status", "raw", "value", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_known_responses(status, raw, value, reason):
    outcome = parse_response(status, raw, NOW)
    check(outcome)
    assert outcome.error_reason == reason
    if reason is None:
        assert (
            outcome.value == value
            or (value is None and outcome.value is None)
            or (math.isnan(value) and math.isnan(outcome.value))
        )
    else:
        assert SECRET not in outcome.error
    if status == 302:
        assert "302" in outcome.error and "redirect" in outcome.error
    if status == 400:
        assert "bad_data: parse error" in outcome.error


@pytest.mark.parametrize(
    "url",
    [
        "http://p:9090/#/../../latest/meta-data",
        "http://p:9090/?x=1",
        "http://u:pw@p:9090",
        "ftp://p",
    ],
    ids=["fragment", "query", "userinfo", "scheme"],
)
def test_urls_that_would_make_the_path_arbitrary_are_refused(url):
    with pytest.raises(ValueError):
        query_url(url, "q")
    outcome = query_value(url, "q", NOW, 1.0)
    assert outcome.error_reason == "InvalidURL"


def test_query_url_keeps_a_path_prefix():
    assert query_url("https://h/prom/", "up") == "https://h/prom/api/v1/query?query=up"
