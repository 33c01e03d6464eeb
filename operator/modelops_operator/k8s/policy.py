"""Read the ModelOpsPolicy in force for a namespace (with a short cache).

The same selection as the admission bindings (`modelops_api/admission.py`): a
namespace labelled `modelops.dev/policy=namespace` is governed by the ModelOpsPolicy
objects in it (all must pass; none refuses everything); every other namespace by the
installation default named in the operator's configuration (missing: everything is
refused). Without a configured default (an operator run outside the chart) and without
the label, no policy applies. Objects are cached for `ttl` seconds, so a tightened
policy takes effect within that time.
"""

import asyncio
import time
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelops_api.meta import GROUP, VERSION
from modelops_api.policy import (
    LABEL_POLICY_SCOPE,
    POLICY_KIND,
    POLICY_PLURAL,
    POLICY_SCOPE_NAMESPACE,
    ModelOpsPolicySpec,
    secret_refs,
)
from modelops_operator.k8s.api import ApiSession, group_path
from modelops_operator.k8s.kinds import spec_model
from modelops_operator.k8s.secrets import SecretReader
from modelops_operator.reconcile.policy import Gate, PolicyView


def _parse(objects: list[dict[str, Any]], where: str) -> PolicyView:
    specs = []
    for obj in objects:
        name = f"{POLICY_KIND} {obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
        try:
            specs.append(ModelOpsPolicySpec.model_validate(obj.get("spec") or {}))
        except ValidationError as exc:
            return PolicyView(missing=f"{name} is invalid: {exc.error_count()} errors")
    if not specs:
        return PolicyView(missing=f"no {POLICY_KIND} in {where}: nothing is allowed")
    names = ", ".join(f"{o['metadata'].get('namespace')}/{o['metadata']['name']}" for o in objects)
    return PolicyView(policies=tuple(specs), source=f"{POLICY_KIND} {names}")


class PolicyReader:
    def __init__(
        self,
        api: ApiSession,
        default_name: str | None,
        default_namespace: str | None,
        ttl: float = 2.0,
    ) -> None:
        self.api = api
        self.default_name = default_name
        self.default_namespace = default_namespace or "default"
        self.ttl = ttl
        self._cache: dict[str, tuple[float, PolicyView | None]] = {}
        self._reading: dict[str, asyncio.Task[PolicyView | None]] = {}

    async def view(self, namespace: str) -> PolicyView | None:
        """The policy in force for `namespace`; None when no policy applies. Reconciles
        that miss the cache together share one read (a burst in one namespace made one
        read per reconcile each time the entry expired)."""
        hit = self._cache.get(namespace)
        if hit is not None and time.monotonic() < hit[0]:
            return hit[1]
        task = self._reading.get(namespace)
        if task is None:
            task = self._reading[namespace] = asyncio.ensure_future(self._read(namespace))
            task.add_done_callback(lambda _: self._reading.pop(namespace, None))
        result = await asyncio.shield(task)
        self._cache[namespace] = (time.monotonic() + self.ttl, result)
        return result

    async def _namespace_scoped(self, namespace: str) -> bool:
        try:
            ns = await self.api.get(f"/api/v1/namespaces/{namespace}")
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise
        labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
        return bool(labels.get(LABEL_POLICY_SCOPE) == POLICY_SCOPE_NAMESPACE)

    async def _read(self, namespace: str) -> PolicyView | None:
        api_version = f"{GROUP}/{VERSION}"
        if await self._namespace_scoped(namespace):
            items = await self.api.list(group_path(api_version, namespace, POLICY_PLURAL))
            return _parse(items, f"namespace {namespace}")
        if not self.default_name:
            return None
        where = f"{self.default_namespace}/{self.default_name}"
        try:
            obj = await self.api.get(
                group_path(api_version, self.default_namespace, POLICY_PLURAL, self.default_name)
            )
        except ApiException as exc:
            if exc.status != 403:
                raise
            obj = None
        if obj is None:
            return PolicyView(missing=f"the installation's {POLICY_KIND} {where} is missing")
        return _parse([obj], where)


async def observe_gate(
    policies: PolicyReader, secrets: SecretReader, kind: str, namespace: str, spec: Any
) -> Gate:
    """The policy in force and the opt-in of every Secret the spec references (an
    invalid spec references nothing: plan() reports it as invalid first)."""
    try:
        model = spec_model(kind).model_validate(spec or {})
    except ValidationError:
        return Gate()
    names = {ref.name for _, ref in secret_refs(model)}
    return Gate(await policies.view(namespace), await secrets.states(namespace, names))
