"""Read the Secret keys a drift trigger references. Values stay in memory: never
logged, never written to a status, event or ConfigMap."""

import asyncio
import base64

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelops_api.common import SecretKeyRef
from modelops_api.model_adaptation import DriftTrigger
from modelops_operator.drift.prometheus import Credentials


class SecretNotFound(Exception):
    """A referenced Secret or key does not exist (the message names it, never a value)."""


class SecretReader:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    async def read(self, namespace: str, ref: SecretKeyRef) -> str:
        try:
            secret = await asyncio.to_thread(self.core.read_namespaced_secret, ref.name, namespace)
        except ApiException as exc:
            if exc.status in (403, 404):
                raise SecretNotFound(
                    f"Secret {namespace}/{ref.name} not found or not readable"
                ) from exc
            raise
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
