"""Where and how the operator queries Prometheus, defined once.

A ModelAdaptation's drift trigger and a ModelRollout's canary analysis both name a
Prometheus, a PromQL query that returns one value, a query timeout and the Secrets of
the credentials to send. `PrometheusSource` is that shared part: each of them extends
it with what it does with the value (thresholds and a `for` window; bounds while a
canary step holds), and the operator queries both through one function
(`modelops_operator.drift.query.query_for`). A subclass that sets its own CEL rules
adds `PROMETHEUS_SOURCE_RULES` to them (a model's CEL rules are one config entry).
"""

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from modelops_api.base import ApiModel, cel, with_cel
from modelops_api.common import SecretKeyRef
from modelops_api.durations import Duration, cel_bounds, within

TimeoutDuration = Annotated[Duration, AfterValidator(within("timeout", "100ms", "5m"))]

PROMETHEUS_SOURCE_RULES = (
    cel(
        "[has(self.bearerTokenSecretRef), has(self.basicAuth)].filter(x, x).size() <= 1",
        "set at most one of bearerTokenSecretRef and basicAuth",
        ".basicAuth",
    ),
    cel_bounds("timeout", "100ms", "5m"),
)
"""The API server's checks of the shared fields (the same as the validator below)."""


class BasicAuth(ApiModel):
    """Basic authentication from Secrets."""

    username: SecretKeyRef = Field(description="Username Secret key.")
    password: SecretKeyRef = Field(description="Password Secret key.")


class PrometheusSource(ApiModel):
    """A Prometheus HTTP API, one query that returns one value, and its credentials.

    The URL must be allowed by the ModelOpsPolicy (allowedPrometheusEndpoints)."""

    model_config = with_cel(*PROMETHEUS_SOURCE_RULES)

    prometheus_url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=512)] = Field(
        description="Base URL of the Prometheus HTTP API."
    )
    query: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="PromQL that returns exactly one value (a scalar or one series)."
    )
    timeout: TimeoutDuration = Field("10s", description="Query timeout (100ms to 5m).")
    bearer_token_secret_ref: SecretKeyRef | None = Field(None, description="Bearer token Secret.")
    basic_auth: BasicAuth | None = Field(None, description="Basic-auth Secrets.")
    ca_secret_ref: SecretKeyRef | None = Field(None, description="CA bundle (PEM) Secret.")

    @model_validator(mode="after")
    def _one_authentication(self) -> "PrometheusSource":
        if self.bearer_token_secret_ref is not None and self.basic_auth is not None:
            raise ValueError("set at most one of bearerTokenSecretRef and basicAuth")
        return self
