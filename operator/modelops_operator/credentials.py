"""Resolved credentials for one drift query: what `k8s/secrets.py` reads and
`drift/prometheus.py` sends. Kept apart from both, so the module that talks to the API
server and the HTTP client do not import each other."""

import base64
from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None

    def secrets(self) -> list[str]:
        """Every value that must never appear in an error text."""
        out = [self.bearer_token, self.password, self.username]
        if self.username is not None:
            out.append(base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode())
        return [s for s in out if s]

    def __repr__(self) -> str:  # never print a value (logs, tracebacks)
        return "Credentials(***)"
