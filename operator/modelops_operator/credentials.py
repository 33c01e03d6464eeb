"""Resolved credentials for one drift query: what `k8s/secrets.py` reads and
`drift/prometheus.py` sends. Kept apart from both, so the module that talks to the API
server and the HTTP client do not import each other."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None

    def __repr__(self) -> str:  # never print a value (logs, tracebacks)
        return "Credentials(***)"
