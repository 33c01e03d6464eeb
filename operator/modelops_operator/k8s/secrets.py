"""The Secrets a resource references: whether they opted in, and (for a drift trigger)
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

import asyncio
import base64
import json
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops_api.common import SecretKeyRef
from modelops_api.model_adaptation import DriftTrigger
from modelops_api.policy import LABEL_SECRET_USABLE
from modelops_operator.credentials import Credentials
from modelops_operator.reconcile.policy import SecretState

_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class SecretNotFound(Exception):
    """A referenced Secret or key does not exist (the message names it, never a value)."""


class SecretNotUsable(SecretNotFound):
    """A referenced Secret exists but has not opted in with modelops.dev/usable=true."""


class SecretReader:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)

    async def _labels(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's labels (metadata only), or None when it does not exist."""

        def call() -> Any:
            api = cast(Any, self.api)
            request = api.param_serialize(
                "GET",
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                path_params={"namespace": namespace, "name": name},
                header_params={"Accept": _METADATA_ONLY},
                auth_settings=["BearerToken"],
            )
            response = api.call_api(*request)
            response.read()
            return response

        response = await asyncio.to_thread(call)
        if response.status in (403, 404):
            return None
        if response.status >= 400:
            raise ApiException(status=response.status, reason=response.reason)
        labels: dict[str, str] = json.loads(response.data)["metadata"].get("labels") or {}
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
        try:
            secret = await asyncio.to_thread(self.core.read_namespaced_secret, ref.name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                raise SecretNotFound(
                    f"Secret {namespace}/{ref.name} not found or not readable"
                ) from exc
            raise
        labels = (secret.metadata.labels if secret.metadata else None) or {}
        if labels.get(LABEL_SECRET_USABLE) != "true":
            raise SecretNotUsable(f"Secret {namespace}/{ref.name} is no longer labelled usable")
        data = secret.data or {}
        if ref.key not in data:
            raise SecretNotFound(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        return base64.b64decode(data[ref.key]).decode()

    async def credentials(self, namespace: str, trigger: DriftTrigger) -> Credentials:
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
