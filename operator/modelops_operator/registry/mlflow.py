"""An MLflow model registry, through its documented REST API (no mlflow dependency).

CONTRACT SKELETON for issue 15: helper "mlflow" implements it; the operator's applier
(helper "wire") calls it for the RegisterVersion and SetRegistryAliases actions.
Every method is idempotent and blocking (the caller runs it in a thread); every
failure raises RegistryError with a CamelCase reason and a message that carries no
credential.
"""

from dataclasses import dataclass


class RegistryError(Exception):
    """A registry call failed: `reason` (RegistryUnreachable, RegistryRefused, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RegisteredVersion:
    """The registry's entry for a ModelVersion."""

    model_name: str
    version: str


class MlflowRegistry:
    """One MLflow tracking server (`url`, optionally a bearer token)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url, token, timeout

    def register(
        self,
        model_name: str,
        version: str,
        source_uri: str,
        tags: dict[str, str],
        description: str = "",
    ) -> RegisteredVersion:
        """Create the registered model if absent, then the model version for the
        ModelVersion `version` unless one tagged `modelops.version=<version>` exists."""
        raise NotImplementedError

    def set_aliases(self, model_name: str, aliases: dict[str, str | None]) -> None:
        """Point each alias (champion, challenger) at the registry version of the named
        ModelVersion; None deletes the alias (absent is fine)."""
        raise NotImplementedError
