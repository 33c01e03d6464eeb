"""An MLflow model registry, through its documented REST API (no mlflow dependency).

The operator's applier calls it for the RegisterVersion and SetRegistryAliases actions
(in a thread: every method blocks). Every method is idempotent, so a restarted
operator or a retried action never registers a ModelVersion twice: a registry version
is found by its tag `modelops.version=<ModelVersion name>`, which is sent with the
create call itself (a create whose answer was lost is found on the retry). Aliases:
`champion` follows the serving version, `challenger` the canary candidate.

Every failure raises RegistryError with a CamelCase reason (`mlflow_http.py` lists the
transport's; InvalidModelName, InvalidTag and VersionNotRegistered are decided here)
and a bounded message that carries no credential. Tag values longer than MLflow's
limit are cut to it, never refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelops_operator.registry.mlflow_http import RegistryError, Transport, base_url

if TYPE_CHECKING:
    from modelops_operator.config import OperatorConfig

__all__ = ["MlflowRegistry", "RegisteredVersion", "RegistryError"]

VERSION_TAG = "modelops.version"
"""The tag that names the ModelVersion a registry version records."""
URI_TAG = "modelops.uri"
"""The tag that holds the model's exact URI (see `registry_source`)."""
MAX_NAME = 256
"""Registered-model name length (the column of MLflow's SQL stores)."""
MAX_TAG_KEY = 250
MAX_TAG_VALUE = 100_000
"""MLflow 3.x's limit on a model-registry tag value (characters)."""
CUT_MARK = "...[cut]"


@dataclass(frozen=True)
class RegisteredVersion:
    """The registry's entry for a ModelVersion."""

    model_name: str
    version: str
    modelops_version: str | None = field(default=None, compare=False)
    """The ModelVersion it records (its modelops.version tag), when read back."""


def check_model_name(name: str) -> None:
    """RegistryError(InvalidModelName) for a name this client cannot use safely; MLflow
    itself refuses '/' and ':' (RegistryRefused, with its message)."""
    problem = None
    if not name or not name.strip():
        problem = "is empty"
    elif len(name) > MAX_NAME:
        problem = f"is {len(name)} characters long (at most {MAX_NAME})"
    elif any(c.isspace() for c in name):
        problem = "contains whitespace"
    elif "'" in name and '"' in name:
        problem = "contains both ' and \" (it cannot be quoted in a search filter)"
    if problem:
        raise RegistryError("InvalidModelName", f"registered model name {name[:80]!r} {problem}")


def cut_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    """MLflow's tag list: values cut to MAX_TAG_VALUE (marked), keys checked."""
    out = []
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_KEY:
            raise RegistryError(
                "InvalidTag", f"tag key {key[:60]!r} must be 1 to {MAX_TAG_KEY} characters"
            )
        text = str(value)
        if len(text) > MAX_TAG_VALUE:
            text = text[: MAX_TAG_VALUE - len(CUT_MARK)] + CUT_MARK
        out.append({"key": key, "value": text})
    return out


def registry_source(uri: str) -> str:
    """The `source` MLflow is given for a model at `uri`: the URI itself, except a path
    local to the Job's pod (file:// or bare), which MLflow refuses without a run of its
    own and could not read anyway: it goes as `modelops-file://...` (not `+`: MLflow unquotes it to a space). The exact URI is
    always in the version's tag modelops.uri."""
    if uri.startswith("file://"):
        return "modelops-" + uri
    if uri.startswith("/"):
        return "modelops-file://" + uri
    return uri


def _quote(value: str) -> str:
    """A string literal of MLflow's search filter (no escapes exist: pick the quote)."""
    return f"'{value}'" if "'" not in value else f'"{value}"'


class MlflowRegistry:
    """One MLflow tracking server (`url`; optionally a bearer token or a token file, or
    basic auth's username and password files, and a CA bundle for https)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        token_file: str | None = None,
        ca_file: str | None = None,
        username_file: str | None = None,
        password_file: str | None = None,
    ) -> None:
        self.url, self.token, self.timeout = base_url(url), token, timeout
        self._http = Transport(
            self.url,
            token=token,
            token_file=token_file,
            timeout=timeout,
            ca_file=ca_file,
            username_file=username_file,
            password_file=password_file,
        )

    @classmethod
    def from_config(cls, config: OperatorConfig) -> MlflowRegistry | None:
        """The installation's registry (MODELOPS_MLFLOW_URL), None when unconfigured;
        ValueError for credentials that cannot go together (a token and basic auth)."""
        if not config.mlflow_url:
            return None
        return cls(
            config.mlflow_url,
            token_file=config.mlflow_token_file,
            ca_file=config.mlflow_ca_file,
            username_file=config.mlflow_username_file,
            password_file=config.mlflow_password_file,
        )

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
        check_model_name(model_name)
        found = self.find_version(model_name, version)
        if found is not None:
            return found
        self._ensure_model(model_name)
        payload: dict[str, Any] = {
            "name": model_name,
            "source": registry_source(source_uri),
            "tags": cut_tags({**tags, URI_TAG: source_uri, VERSION_TAG: version}),
        }
        if description:
            payload["description"] = description
        doc = self._http.call("POST", "model-versions/create", payload)
        created = _registered(doc.get("model_version"), model_name, "model-versions/create")
        return self._settle(created, version)

    def _settle(self, created: RegisteredVersion, version: str) -> RegisteredVersion:
        """After a create: if a racing writer created the same ModelVersion first (a
        lower number: numbers follow creation), that one is the entry, and ours is
        deleted. Every writer then agrees on the first one; no writer ever returned ours,
        since the first one was visible to each writer's own search after its create."""
        first = self.find_version(created.model_name, version)
        if first is None or first.version == created.version:
            return created
        try:
            self._http.call(
                "DELETE",
                "model-versions/delete",
                {"name": created.model_name, "version": created.version},
            )
        except RegistryError:
            pass  # a stray duplicate is harmless: every lookup takes the lowest number
        return first

    def set_aliases(self, model_name: str, aliases: dict[str, str | None]) -> None:
        """Point each alias (champion, challenger) at the registry version of the named
        ModelVersion; None deletes the alias (absent is fine). Every named version is
        looked up before any alias changes: one never registered changes nothing."""
        check_model_name(model_name)
        targets: dict[str, str] = {}
        for alias, version in aliases.items():
            if version is None:
                continue
            found = self.find_version(model_name, version)
            if found is None:
                raise RegistryError(
                    "VersionNotRegistered",
                    f"ModelVersion {version} is not registered under {model_name!r}:"
                    f" alias {alias} not set",
                )
            targets[alias] = found.version
        for alias, version in aliases.items():
            if version is None:
                self._delete_alias(model_name, alias)
            else:
                payload = {"name": model_name, "alias": alias, "version": targets[alias]}
                self._http.call("POST", "registered-models/alias", payload)

    def set_tags(self, model_name: str, version: str, tags: dict[str, str]) -> RegisteredVersion:
        """Add or overwrite tags of the registry version of the ModelVersion `version`
        (e.g. the gate's verdict, once known); values cut like register's. The tags
        modelops.version and modelops.uri are the record's identity: never changed."""
        check_model_name(model_name)
        found = self.find_version(model_name, version)
        if found is None:
            raise RegistryError(
                "VersionNotRegistered",
                f"ModelVersion {version} is not registered under {model_name!r}: no tags set",
            )
        for tag in cut_tags({k: v for k, v in tags.items() if k not in (VERSION_TAG, URI_TAG)}):
            payload = {"name": model_name, "version": found.version, **tag}
            self._http.call("POST", "model-versions/set-tag", payload)
        return found

    def find_version(self, model_name: str, version: str) -> RegisteredVersion | None:
        """The registry version tagged `modelops.version=<version>` (the lowest number if
        a race ever made two), None if there is none or no such registered model."""
        check_model_name(model_name)
        query = f"name={_quote(model_name)} and tags.`{VERSION_TAG}`={_quote(version)}"
        params = {"filter": query, "order_by": "version_number ASC", "max_results": 10}
        doc = self._http.call("GET", "model-versions/search", params)
        found = doc.get("model_versions") or []
        if not isinstance(found, list):
            raise RegistryError("RegistryBadResponse", "model-versions/search: not a list")
        entries = [_registered(mv, model_name, "model-versions/search") for mv in found]
        entries = [e for e in entries if e.model_name == model_name]
        return min(entries, key=lambda e: int(e.version)) if entries else None

    def get_alias(self, model_name: str, alias: str) -> RegisteredVersion | None:
        """The version an alias points at (with the ModelVersion it records), None if
        the alias or the registered model does not exist."""
        number = self.aliases(model_name).get(alias)
        if number is None:
            return None
        doc = self._http.call("GET", "model-versions/get", {"name": model_name, "version": number})
        return _registered(doc.get("model_version"), model_name, "model-versions/get")

    def aliases(self, model_name: str) -> dict[str, str]:
        """Every alias of the registered model and its version number ({} if the model
        does not exist). MLflow answers a lookup of an absent alias with a generic
        INVALID_PARAMETER_VALUE, so aliases are read from the registered model."""
        check_model_name(model_name)
        try:
            doc = self._http.call("GET", "registered-models/get", {"name": model_name})
        except RegistryError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        model = doc.get("registered_model")
        listed = model.get("aliases") if isinstance(model, dict) else None
        return {
            str(a["alias"]): str(a["version"])
            for a in (listed if isinstance(listed, list) else [])
            if isinstance(a, dict) and "alias" in a and "version" in a
        }

    def _ensure_model(self, model_name: str) -> None:
        payload = {
            "name": model_name,
            "tags": [{"key": "app.kubernetes.io/managed-by", "value": "modelops"}],
        }
        try:
            self._http.call("POST", "registered-models/create", payload)
        except RegistryError as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _delete_alias(self, model_name: str, alias: str) -> None:
        try:
            self._http.call(
                "DELETE", "registered-models/alias", {"name": model_name, "alias": alias}
            )
        except RegistryError as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise


def _registered(doc: Any, model_name: str, endpoint: str) -> RegisteredVersion:
    """A RegisteredVersion from an MLflow ModelVersion object; RegistryBadResponse if
    it is not one."""
    if not isinstance(doc, dict) or not str(doc.get("version", "")).isdigit():
        raise RegistryError("RegistryBadResponse", f"MLflow {endpoint}: no model version")
    listed = doc.get("tags")
    tags: list[Any] = listed if isinstance(listed, list) else []
    recorded = next(
        (
            str(t["value"])
            for t in tags
            if isinstance(t, dict) and t.get("key") == VERSION_TAG and "value" in t
        ),
        None,
    )
    given = doc.get("name")
    name: str = given if isinstance(given, str) else model_name
    return RegisteredVersion(name, str(doc["version"]), recorded)
