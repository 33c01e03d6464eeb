"""One Prometheus query for a resource, with its Secrets read first.

The drift trigger and the canary analysis of a rollout query Prometheus the same way:
the same client (`prometheus.py`: no redirects, bounded bodies, redacted errors), the
same credentials (bearer token, basic auth or CA bundle, from Secrets the resource
references), and the same outcome for every failure: a QueryOutcome with a reason,
never an exception. The policy check comes before this (the caller's), so a URL the
ModelOpsPolicy refuses never gets here and no credential is read for it.
"""

import asyncio
import logging
from datetime import datetime

from modelops_api.durations import parse_duration
from modelops_api.prometheus_source import PrometheusSource
from modelops_operator.drift import prometheus
from modelops_operator.drift.state import QueryOutcome
from modelops_operator.k8s.secrets import SecretNotFound, SecretReader

log = logging.getLogger("modelops.prometheus")


async def query_for(
    secrets: SecretReader,
    namespace: str,
    name: str,
    target: PrometheusSource,
    now: datetime,
    what: str,
) -> QueryOutcome:
    """Run `target`'s query (a DriftTrigger or a canary Analysis) for resource
    `namespace/name`; `what` names the query in logs and errors ("drift", "analysis")."""
    try:
        creds = await secrets.credentials(namespace, target)
        return await asyncio.to_thread(
            prometheus.query_value,
            target.prometheus_url,
            target.query,
            now,
            parse_duration(target.timeout),
            creds,
        )
    except SecretNotFound as exc:
        return QueryOutcome(now, error=str(exc)[:1024], error_reason="SecretNotFound")
    except Exception as exc:  # a bug or an API error: reported on the resource
        log.warning("%s query of %s/%s failed: %s", what, namespace, name, exc)
        return QueryOutcome(
            now, error=f"{what} query failed: {type(exc).__name__}", error_reason="QueryFailed"
        )
