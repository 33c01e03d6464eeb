"""Resolved credentials for one HTTP call, and the one place that turns them into an
Authorization header and into the list of values no error text may show.

Two clients send them: a drift query (`drift/prometheus.py`; `k8s/secrets.py` reads a
tenant's Secrets into one) and the MLflow registry (`registry/mlflow_http.py`; it reads
the installation's mounted Secret files into one on every call). Kept apart from all of
them, so the module that talks to the API server and the HTTP clients do not import each
other, and so a bearer token and basic auth are handled, and redacted, the same way.
"""

import base64
from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None

    def authorization(self) -> str | None:
        """The Authorization header: `Bearer <token>`, else `Basic base64(user:password)`
        for a username, else None (no header)."""
        if self.bearer_token:
            return f"Bearer {self.bearer_token}"
        if self.username is not None:
            return f"Basic {self._basic()}"
        return None

    def _basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()

    def secrets(self) -> list[str]:
        """Every value that must never appear in an error text, the longest first (a
        shorter one inside a longer one, e.g. in the base64 value, cannot break the
        longer one's replacement). Not the username: it names an account and is no
        secret, and a short one ("mlflow", "m") would star out the URL and the words of
        every message around it."""
        out = [self.bearer_token, self.password]
        if self.username is not None:
            out.append(self._basic())
        return sorted((s for s in out if s), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by ***; cut it only after this."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:  # never print a value (logs, tracebacks)
        return "Credentials(***)"
