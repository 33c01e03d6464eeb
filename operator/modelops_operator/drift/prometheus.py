"""Query Prometheus's HTTP API for a drift value.

A query must return exactly one value: a scalar, or an instant vector with one series.
Anything else (many series, a matrix, a string) is an error with a reason; so is an
unreachable server, an HTTP error or a Prometheus error response. Credentials come in
resolved (bearer token, basic auth, CA bundle) from Secrets read by `k8s/secrets.py`.
"""

import base64
import json
import math
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

from modelops_operator.credentials import Credentials
from modelops_operator.drift.state import QueryOutcome

__all__ = ["Credentials", "query_value", "redact"]


def _request(url: str, query: str, timeout: float, creds: Credentials) -> dict:
    full = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    req = urllib.request.Request(full, headers={"Accept": "application/json"})
    if creds.bearer_token:
        req.add_header("Authorization", f"Bearer {creds.bearer_token}")
    elif creds.username is not None:
        token = base64.b64encode(f"{creds.username}:{creds.password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    context = None
    if full.startswith("https://"):
        context = (
            ssl.create_default_context(cadata=creds.ca_pem)
            if creds.ca_pem
            else ssl.create_default_context()
        )
    with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
        return json.loads(resp.read().decode())


def redact(text: str, creds: Credentials) -> str:
    """An error text with every credential value replaced by ***: servers and proxies
    sometimes echo the request headers, and errors end up in status."""
    secrets = [creds.bearer_token, creds.password, creds.username]
    if creds.username is not None:
        secrets.append(
            base64.b64encode(f"{creds.username}:{creds.password or ''}".encode()).decode()
        )
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def query_value(
    url: str, query: str, now: datetime, timeout: float = 10.0, creds: Credentials | None = None
) -> QueryOutcome:
    """Run an instant query; a QueryOutcome with a value, no data, or an error (with any
    credential redacted from it)."""
    creds = creds or Credentials()
    outcome = _query_value(url, query, now, timeout, creds)
    if outcome.error is not None:
        return QueryOutcome(
            outcome.time, error=redact(outcome.error, creds), error_reason=outcome.error_reason
        )
    return outcome


def _query_value(
    url: str, query: str, now: datetime, timeout: float = 10.0, creds: Credentials | None = None
) -> QueryOutcome:
    """Run an instant query; a QueryOutcome with a value, no data, or an error."""
    creds = creds or Credentials()
    try:
        body = _request(url, query, timeout, creds)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        return QueryOutcome(
            now, error=f"Prometheus answered HTTP {exc.code}: {detail}", error_reason="QueryFailed"
        )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return QueryOutcome(
            now,
            error=f"Prometheus unreachable at {url}: {reason}",
            error_reason="PrometheusUnreachable",
        )
    except ValueError as exc:
        return QueryOutcome(
            now, error=f"Prometheus returned invalid JSON: {exc}", error_reason="QueryFailed"
        )
    if body.get("status") != "success":
        return QueryOutcome(
            now, error=f"query failed: {body.get('error', body)}", error_reason="QueryFailed"
        )
    data = body.get("data", {})
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return QueryOutcome(now, value=float(result[1]))
    if kind == "vector":
        if not result:
            return QueryOutcome(now, value=None)
        if len(result) > 1:
            return QueryOutcome(
                now,
                error=f"query returned {len(result)} series; it must return exactly one value (aggregate it, e.g. max(...))",
                error_reason="NotAScalar",
            )
        value = float(result[0]["value"][1])
        return QueryOutcome(now, value=None if math.isnan(value) else value)
    return QueryOutcome(
        now, error=f"query returned a {kind}; it must return one value", error_reason="NotAScalar"
    )
