"""The Secrets a resource references: whether they opted in, and (for a drift trigger or a canary analysis)
their values. Values stay in memory: never logged, never written to a status, event or
ConfigMap.

A Secret may be referenced only if it carries the label `modelops.dev/usable: "true"`
(LABEL_SECRET_USABLE): without it, a user who may create a modelops resource but not
read Secrets could make the operator send a Secret's value to a server of their choice,
or put it in a Job's environment. The opt-in is checked from the Secret's metadata
alone (a PartialObjectMetadata read: the data never leaves the API server) before a
reference is used anywhere (`states`, used by plan()), and again before a value is
read (`read`). `require_usable(namespace, ref)` is the one check for any new reference.
"""

import base64
from typing import Any

from kubernetes.client.exceptions import ApiException

from modelops_api.common import SecretKeyRef
from modelops_api.policy import LABEL_SECRET_USABLE
from modelops_api.prometheus_source import PrometheusSource
from modelops_operator.credentials import Credentials
from modelops_operator.k8s.api import JSON, ApiSession, core_path
from modelops_operator.reconcile.policy import SecretState

_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class SecretNotFound(Exception):
    """A referenced Secret or key does not exist (the message names it, never a value)."""


class SecretNotUsable(SecretNotFound):
    """A referenced Secret exists but has not opted in with modelops.dev/usable=true."""


class SecretReader:
    def __init__(self, api: ApiSession) -> None:
        self.api = api

    async def _get(self, namespace: str, name: str, accept: str = JSON) -> dict[str, Any] | None:
        """The Secret (or its metadata), or None when it does not exist or is not ours
        to read (403)."""
        try:
            return await self.api.get(core_path(namespace, "secrets", name), accept)
        except ApiException as exc:
            if exc.status == 403:
                return None
            raise

    async def _labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's labels (metadata only), or None when it does not exist."""
        meta = await self._get(namespace, name, _METADATA_ONLY)
        if meta is None:
            return None
        labels: dict[str, str] = (meta.get("metadata") or {}).get("labels") or {}
        return labels

    async def state(self, namespace: str, name: str) -> SecretState:
        labels = await self._labels(namespace, name)
        if labels is None:
            return SecretState.MISSING
        if labels.get(LABEL_SECRET_USABLE) != "true":
            return SecretState.NOT_LABELLED
        return SecretState.USABLE

    async def states(self, namespace: str, names: set[str]) -> dict[str, SecretState]:
        """What plan() needs to know of every Secret a spec references."""
        return {name: await self.state(namespace, name) for name in sorted(names)}

    async def require_usable(self, namespace: str, ref: SecretKeyRef) -> None:
        """Raise (naming the Secret) unless it exists and opted in."""
        state = await self.state(namespace, ref.name)
        if state == SecretState.MISSING:
            raise SecretNotFound(f"Secret {namespace}/{ref.name} not found or not readable")
        if state == SecretState.NOT_LABELLED:
            raise SecretNotUsable(
                f'Secret {namespace}/{ref.name} is not labelled {LABEL_SECRET_USABLE}: "true"'
            )

    async def read(self, namespace: str, ref: SecretKeyRef) -> str:
        await self.require_usable(namespace, ref)
        secret = await self._get(namespace, ref.name)
        if secret is None:
            raise SecretNotFound(f"Secret {namespace}/{ref.name} not found or not readable")
        labels = (secret.get("metadata") or {}).get("labels") or {}
        if labels.get(LABEL_SECRET_USABLE) != "true":
            raise SecretNotUsable(f"Secret {namespace}/{ref.name} is no longer labelled usable")
        data = secret.get("data") or {}
        if ref.key not in data:
            raise SecretNotFound(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        return base64.b64decode(data[ref.key]).decode()

    async def credentials(self, namespace: str, trigger: PrometheusSource) -> Credentials:
        """A drift trigger's or a canary analysis's Prometheus credentials."""
        token = (
            await self.read(namespace, trigger.bearer_token_secret_ref)
            if trigger.bearer_token_secret_ref
            else None
        )
        user = password = None
        if trigger.basic_auth is not None:
            user = await self.read(namespace, trigger.basic_auth.username)
            password = await self.read(namespace, trigger.basic_auth.password)
        ca = await self.read(namespace, trigger.ca_secret_ref) if trigger.ca_secret_ref else None
        return Credentials(bearer_token=token, username=user, password=password, ca_pem=ca)
