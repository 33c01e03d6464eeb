"""Query Prometheus's HTTP API for a drift value.

A query must return exactly one value: a scalar, or an instant vector with one float
series. Anything else (many series, a matrix, a string, a native-histogram sample) is
an error with a reason; so is an unreachable server, an HTTP error, a redirect or a
Prometheus error response. Credentials come in resolved (bearer token, basic auth,
CA bundle) from Secrets read by `k8s/secrets.py`.

What reaches status is bounded and safe: the client follows no redirect (a 3xx is an
error, so credentials never go to another host), reads at most MAX_BODY bytes, never
copies a response body beyond Prometheus's own `errorType`/`error` fields, and
redacts credentials from the full text before cutting it to MAX_ERROR characters.
`parse_response` is pure and returns a QueryOutcome for any input; it never raises.
"""

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from modelops_operator.credentials import Credentials
from modelops_operator.drift.state import QueryOutcome

MAX_BODY = 1 << 20
MAX_ERROR = 1024
MAX_FIELD = 300

__all__ = ["Credentials", "query_value", "redact"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: the 3xx surfaces as an HTTPError naming its status."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _opener(https: bool, creds: Credentials) -> urllib.request.OpenerDirector:
    handlers: list[Any] = [_NoRedirect()]
    if https:
        context = (
            ssl.create_default_context(cadata=creds.ca_pem)
            if creds.ca_pem
            else ssl.create_default_context()
        )
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def query_url(url: str, query: str) -> str:
    """The instant-query URL under `url`; ValueError for a URL with a query or fragment
    (`#` would make the rest of the path arbitrary) or with user info."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("prometheusUrl must be an http(s) URL")
    if parts.query or parts.fragment or "#" in url or "?" in url or "@" in parts.netloc:
        raise ValueError("prometheusUrl must not contain user info, a query or a fragment")
    path = parts.path.rstrip("/") + "/api/v1/query"
    params = urllib.parse.urlencode({"query": query})
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, params, ""))


def _fetch(full: str, timeout: float, creds: Credentials) -> tuple[int, bytes]:
    """(HTTP status, at most MAX_BODY + 1 bytes of body); network errors raise."""
    req = urllib.request.Request(full, headers={"Accept": "application/json"})
    authorization = creds.authorization()
    if authorization:
        req.add_header("Authorization", authorization)
    opener = _opener(full.startswith("https://"), creds)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(MAX_BODY + 1)
        except Exception:
            body = b""
        finally:
            exc.close()
        return exc.code, body


def redact(text: str, creds: Credentials) -> str:
    """The text with every credential value replaced by ***, then cut to MAX_ERROR
    characters: redaction first, so a cut can never leave a secret's prefix."""
    return creds.redact(text)[:MAX_ERROR]


def query_value(
    url: str,
    query: str,
    now: datetime,
    timeout: float = 10.0,
    creds: Credentials | None = None,
) -> QueryOutcome:
    """Run an instant query; a QueryOutcome with a value, no data, or an error (with any
    credential redacted from it, bounded). Never raises."""
    creds = creds or Credentials()
    try:
        full = query_url(url, query)
    except ValueError as exc:
        return QueryOutcome(now, error=str(exc), error_reason="InvalidURL")
    try:
        status, body = _fetch(full, timeout, creds)
        outcome = parse_response(status, body, now)
    except Exception as exc:  # URLError, OSError, TimeoutError, ssl errors, ...
        reason = getattr(exc, "reason", None) or type(exc).__name__
        outcome = QueryOutcome(
            now,
            error=f"Prometheus unreachable at {url}: {str(reason)[:MAX_FIELD]}",
            error_reason="PrometheusUnreachable",
        )
    if outcome.error is not None:
        return QueryOutcome(
            now, error=redact(outcome.error, creds), error_reason=outcome.error_reason
        )
    return outcome


def _text(value: Any) -> str:
    return (value if isinstance(value, str) else json.dumps(value)[:MAX_FIELD])[:MAX_FIELD]


def _prometheus_error(body: Any) -> str | None:
    """`errorType: error` of a Prometheus error response, or None if the body is not one."""
    if isinstance(body, dict) and body.get("status") == "error":
        kind, error = body.get("errorType"), body.get("error")
        if isinstance(error, str):
            return f"{_text(kind)}: {_text(error)}" if isinstance(kind, str) else _text(error)
    return None


def _failed(now: datetime, message: str, reason: str = "QueryFailed") -> QueryOutcome:
    return QueryOutcome(now, error=message[:MAX_ERROR], error_reason=reason)


def parse_response(status: int, body: bytes, now: datetime) -> QueryOutcome:
    """A QueryOutcome for any HTTP status and body; never raises."""
    try:
        return _parse(status, body, now)
    except Exception as exc:  # a shape nobody foresaw: reported, never raised
        return _failed(now, f"unexpected Prometheus response ({type(exc).__name__})")


def _parse(status: int, body: bytes, now: datetime) -> QueryOutcome:
    if 300 <= status < 400:
        return _failed(
            now, f"Prometheus answered HTTP {status} (a redirect); redirects are refused"
        )
    if len(body) > MAX_BODY:
        return _failed(now, f"Prometheus response larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    error = _prometheus_error(doc)
    if status != 200 or error is not None:
        detail = f": {error}" if error else ""
        return _failed(now, f"Prometheus answered HTTP {status}{detail}")
    if not isinstance(doc, dict) or doc.get("status") != "success":
        return _failed(now, "the response is not a Prometheus query API response")
    data = doc.get("data")
    if not isinstance(data, dict):
        return _failed(now, "the response has no data object")
    return _result(data.get("resultType"), data.get("result"), now)


def _sample_value(pair: Any) -> float | None:
    """The float of a [timestamp, "value"] pair, None if it is not one."""
    if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
        try:
            return float(pair[1])
        except ValueError:
            return None
    return None


def _result(kind: Any, result: Any, now: datetime) -> QueryOutcome:
    if kind == "scalar":
        value = _sample_value(result)
        if value is None:
            return _failed(now, "malformed scalar result")
        return QueryOutcome(now, value=value)
    if kind == "vector":
        if not isinstance(result, list):
            return _failed(now, "malformed vector result")
        if not result:
            return QueryOutcome(now, value=None)
        if len(result) > 1:
            return _failed(
                now,
                f"query returned {len(result)} series; it must return exactly one value "
                "(aggregate it, e.g. max(...))",
                "NotAScalar",
            )
        sample = result[0]
        if isinstance(sample, dict) and "histogram" in sample:
            return _failed(now, "query returned a native-histogram sample", "NotAScalar")
        value = _sample_value(sample.get("value") if isinstance(sample, dict) else None)
        if value is None:
            return _failed(now, "malformed vector sample")
        return QueryOutcome(now, value=value)
    shown = kind if kind in ("matrix", "string") else "non-value"
    return _failed(now, f"query returned a {shown} result; it must return one value", "NotAScalar")
